"""The offline assistant's safety checks: red flags (advice to see a doctor), off-topic requests, attempts
to override its instructions."""
from __future__ import annotations

import re
from typing import Iterable

from acne.chat.retrieval import stem

# ---------------------------------------------------------------------------------------------
# Safety: red flags, off-topic requests, override attempts
# ---------------------------------------------------------------------------------------------
RED_FLAGS: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE), advice) for name, pattern, advice in (
        ("nodules or cysts", r"\bcyst|\bnodul|\bpainful|\bhurts?\b|deep (?:lumps?|bumps?|spots?)|\bboils?\b",
         "Painful, deep lumps (nodules or cysts) can scar and usually need prescription treatment: "
         "please see a dermatologist or doctor soon."),
        ("scarring", r"\bscar",
         "If acne is leaving scars, see a doctor or dermatologist: treating it early prevents more scarring, "
         "and scars themselves can be treated."),
        ("sudden onset", r"\bsudden|overnight|out of nowhere|rapidly|spreading (?:fast|quickly)|(?:much|getting) worse",
         "Acne that appears suddenly or gets worse quickly should be checked by a doctor."),
        ("fever", r"\bfever|high temperature|\bchills\b|feel(?:ing)? (?:unwell|ill|sick)|joint pain",
         "Acne with fever, joint pain or feeling unwell needs a doctor the same day."),
        ("eye area", r"\beyes?\b|\beyelids?\b|\bvision\b",
         "Spots or swelling around the eyes should be checked by a doctor, urgently if the eye hurts "
         "or your vision changes."),
        ("pregnancy", r"pregnan|breast-?feed|\bnursing\b|trying (?:to|for a) (?:conceive|baby)|\bconceiv",
         "Pregnancy or breastfeeding: check every acne treatment with your doctor, midwife or pharmacist first. "
         "Isotretinoin and topical retinoids must not be used in pregnancy."),
        ("isotretinoin", r"isotretinoin|accutane|roaccutane|absorica|claravis|amnesteem|zenatane",
         "Isotretinoin is prescribed and monitored by a dermatologist: please ask them about doses, "
         "side effects and safety."),
        ("medication doses", r"\bdos(?:e|es|age|ing)\b|\b\d+(?:\.\d+)?\s?mg\b|how (?:much|many) (?:mg|pills?|tablets?|capsules?)|"
                             r"antibiotic|doxycycline|minocycline|lymecycline|tetracycline|clindamycin|erythromycin|"
                             r"spironolactone|\bprescri",
         "I can't advise on doses or prescription medicines: your doctor, dermatologist or pharmacist "
         "decides those with you."),
    ))
PROFILE_RED_FLAGS = ("pregnancy", "isotretinoin")  # the profile can carry these too

OVERRIDE_ATTEMPT = re.compile(
    r"ignore (?:all |any |the |your |my )?(?:previous|prior|above|earlier|preceding|former|instructions|rules)"
    r"|disregard|forget (?:all|your|everything|the|previous)|system prompt|system message|your (?:instructions|rules|prompt)"
    r"|developer mode|\bdan\b|jailbreak|you are now|from now on|pretend|\bact as\b|role-?play|\bsudo\b"
    r"|<\s*/?\s*(?:system|sys|instructions?)\b|\[/?(?:system|inst)\]|[\"']role[\"']\s*:\s*[\"']system"
    r"|override|new instructions|reveal|repeat (?:the|your) (?:text|words|prompt)"
    r"|api[ _-]?key|secret|password|credential|access token|\bsk-[a-z0-9]",
    re.IGNORECASE)
SECRET_REQUEST = re.compile(r"api[ _-]?key|secret|password|credential|token|\bsk-[a-z0-9]", re.IGNORECASE)
OFF_TOPIC_TASK = re.compile(
    r"\b(?:python|javascript|typescript|java|c\+\+|rust|sql|html|code|coding|script|scripts|regex|essay|poem|"
    r"song|lyrics|joke|translate|homework|capital of|recipe|weather|stock market|bitcoin|crypto|football|"
    r"election|president|movie|novel)\b",
    re.IGNORECASE)
GREETING = re.compile(r"^\s*(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening)|thanks|thank you|thx|cheers)"
                      r"(?: there| so much| a lot)?\s*[!.?]*\s*$", re.IGNORECASE)

# Words that make a message a skin-care question. The notes' vocabulary alone is too broad
# ("water", "model", "food" also appear in them).
DOMAIN_TERMS = frozenset(stem(w) for w in """
acne skin skincare face facial spot spots pimple zit breakout blemish pore pores blackhead blackheads whitehead
whiteheads comedone comedones papule pustule nodule nodules cyst cysts lesion lesions oily dry sensitive
combination redness red rash irritation irritated peeling flaky itchy dark marks mark scar scars scarring
hyperpigmentation pigmentation cleanser cleanse cleansing wash washing soap scrub exfoliate exfoliant exfoliation
toner serum moisturiser moisturizer moisturise lotion cream gel ointment sunscreen spf sunblock sun sunburn tan
makeup cosmetics noncomedogenic comedogenic benzoyl peroxide bpo salicylic bha aha glycolic azelaic niacinamide
adapalene differin retinoid retinoids retinol tretinoin tazarotene isotretinoin accutane roaccutane antibiotic
antibiotics dermatologist dermatology derm doctor gp pharmacist routine regimen diet dairy milk chocolate sugar
glycaemic glycemic whey hormone hormones hormonal period periods pregnancy pregnant breastfeeding pick picking
squeeze squeezing pop popping forehead chin cheeks cheek jaw jawline nose back chest shoulders severity severe
moderate mild clear grade grading result results analysis photo lesion count hayashi treatment treatments
products product rosacea eczema oil sebum sweat sweating shaving razor pillowcase mask
niacinamide azelaic glycolic lactic tea tree toothpaste purging purge maskne confidence percentage score
scores runner overlay segmenter grader ingredient ingredients active actives peeling flaking dryness
""".split())


# Too general to make an override attempt ("repeat your skincare instructions") a real question.
GENERIC_TERMS = frozenset(stem(w) for w in "acne skin skincare face facial".split())


def red_flags(text: str) -> list[tuple[str, str]]:
    """The red flags `text` raises: (name, advice to see a doctor) pairs, in RED_FLAGS order."""
    return [(name, advice) for name, pattern, advice in RED_FLAGS if pattern.search(text)]


def is_on_topic(terms: Iterable[str]) -> bool:
    """Is any of the (stemmed) `terms` about acne or skin care?"""
    return any(t in DOMAIN_TERMS for t in terms)
