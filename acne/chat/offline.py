"""The offline assistant: answers from the curated, cited notes in knowledge/*.md, retrieved with
BM25 (written here: no extra dependency), tailored to the latest analysis, with red-flag advice.
Used when no chat model is configured, and as the fallback when the model cannot be reached."""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from acne.chat.prompt import content_text, flatten_history
from acne.severity import CLASSES

if TYPE_CHECKING:
    from acne.chat import Profile
    from acne.report import Report

KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
OFFLINE_NAME = "Offline assistant"
HEADER = "**Offline assistant** (built-in skincare notes; no AI model is connected)"
FOOTER = "_Not a diagnosis. See a dermatologist for painful, severe or worsening acne._"

# ---------------------------------------------------------------------------------------------
# Text -> terms
# ---------------------------------------------------------------------------------------------
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours yourself yourselves
im ive id dont doesnt didnt cant wont isnt arent get got gets really please tell thing things know want
need like much many lot lots bit kind sort ok okay hi hello hey thanks thank
""".split())

# Spelling variants and brand names -> one term (several terms for abbreviations).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "bpo": ("benzoyl", "peroxide"), "bp": ("benzoyl", "peroxide"),
    "pimple": ("spot",), "pimples": ("spot",), "zit": ("spot",), "zits": ("spot",),
    "breakout": ("spot",), "breakouts": ("spot",), "blemish": ("spot",), "blemishes": ("spot",),
    "accutane": ("isotretinoin",), "roaccutane": ("isotretinoin",), "absorica": ("isotretinoin",),
    "claravis": ("isotretinoin",), "differin": ("adapalene",), "retin": ("tretinoin",),
    "spf": ("sunscreen",), "sunblock": ("sunscreen",), "suncream": ("sunscreen",), "sunscreens": ("sunscreen",),
    "bha": ("salicylic",), "moisturizer": ("moisturiser",), "moisturizers": ("moisturiser",),
    "moisturize": ("moisturise",), "moisturizing": ("moisturising",), "glycemic": ("glycaemic",),
    "pregnant": ("pregnancy",), "cystic": ("cyst",), "nodular": ("nodule",), "gp": ("doctor",),
    "derm": ("dermatologist",), "derms": ("dermatologist",), "dermatologists": ("dermatologist",),
    "hormonal": ("hormone",), "whitehead": ("whiteheads",), "blackhead": ("blackheads",),
}

_TOKEN = re.compile(r"[a-z0-9]+")


def stem(word: str) -> str:
    """A deliberately small suffix stripper: enough to match cysts/cyst, scarring/scar, picking/pick."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix, min_len in (("ing", 6), ("ed", 5), ("er", 6)):
        if word.endswith(suffix) and len(word) >= min_len:
            word = word[: -len(suffix)]
            if len(word) > 2 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # scarr -> scar, popp -> pop
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    terms: list[str] = []
    for word in _TOKEN.findall(text.lower()):
        for w in SYNONYMS.get(word, (word,)):
            if w not in STOPWORDS and len(w) > 1:
                terms.append(stem(w))
    return terms


# ---------------------------------------------------------------------------------------------
# Knowledge base
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Passage:
    topic: str            # file stem, e.g. "benzoyl_peroxide"
    title: str            # the note's H1
    heading: str          # the section's H2
    text: str
    sources: tuple[str, ...]
    keywords: str = ""


def parse_note(path: Path) -> list[Passage]:
    """One markdown note -> its passages. Layout: '# Title', optional 'Keywords: ...' line,
    '## Section' blocks, and a '## Sources' list that every passage of the note cites."""
    title, keywords = path.stem.replace("_", " ").capitalize(), ""
    sections: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            title = line[2:].strip()
        elif line.lower().startswith("keywords:") and not sections:
            keywords = line.split(":", 1)[1].strip()
        elif line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
    sources: tuple[str, ...] = ()
    for heading, lines in sections:
        if heading.lower() == "sources":
            sources = tuple(l.lstrip("-* ").strip() for l in lines if l.strip().startswith(("-", "*")))
    return [Passage(path.stem, title, heading, " ".join(" ".join(lines).split()), sources, keywords)
            for heading, lines in sections if heading.lower() != "sources" and " ".join(lines).strip()]


class BM25:
    """Okapi BM25 over pre-tokenised documents; query terms may carry weights."""

    def __init__(self, docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tf = [Counter(d) for d in docs]
        self.len = [len(d) for d in docs]
        self.avg_len = sum(self.len) / max(len(docs), 1)
        df = Counter(term for d in docs for term in set(d))
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: dict[str, float]) -> list[float]:
        out = []
        for tf, length in zip(self.tf, self.len):
            s = 0.0
            for term, weight in query.items():
                f = tf.get(term)
                if f:
                    norm = f + self.k1 * (1 - self.b + self.b * length / self.avg_len)
                    s += weight * self.idf[term] * f * (self.k1 + 1) / norm
            out.append(s)
        return out


@dataclass
class KnowledgeBase:
    passages: list[Passage]
    index: BM25 = field(init=False)

    def __post_init__(self) -> None:
        # Headings count three times, the note's title and keywords once: they say what a passage is about.
        self.index = BM25([tokenize(f"{p.title} {p.heading} {p.heading} {p.heading} {p.keywords} {p.text}")
                           for p in self.passages])
        self.vocabulary = frozenset(t for tf in self.index.tf for t in tf)

    @classmethod
    def load(cls, folder: Path = KNOWLEDGE_DIR) -> "KnowledgeBase":
        passages = [p for path in sorted(folder.glob("*.md")) for p in parse_note(path)]
        if not passages:
            raise FileNotFoundError(f"no knowledge notes (*.md) found in {folder}")
        return cls(passages)

    def search(self, query: dict[str, float], k: int = 3) -> list[tuple[Passage, float]]:
        scores = self.index.scores(query)
        ranked = sorted(zip(self.passages, scores), key=lambda ps: ps[1], reverse=True)
        return [(p, s) for p, s in ranked[:k] if s > 0]


@lru_cache(maxsize=1)
def default_knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


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
""".split())


# Too general to make an override attempt ("repeat your skincare instructions") a real question.
GENERIC_TERMS = frozenset(stem(w) for w in "acne skin skincare face facial".split())


def red_flags(text: str) -> list[tuple[str, str]]:
    return [(name, advice) for name, pattern, advice in RED_FLAGS if pattern.search(text)]


def is_on_topic(terms: Iterable[str]) -> bool:
    return any(t in DOMAIN_TERMS for t in terms)


# ---------------------------------------------------------------------------------------------
# The assistant
# ---------------------------------------------------------------------------------------------
def _severity_line(report: "Report | None") -> str:
    if report is None:
        return "_Tip: analyse a photo in the Analyze tab and I will tailor this advice to your result._"
    from acne.severity import recommendations

    advice = (report.recommendations or recommendations(report.severity))[:1]
    line = (f"**Your photo analysis:** {report.severity} ({report.confidence:.0%} confidence; "
            f"{report.lesion_count} lesion{'s' if report.lesion_count != 1 else ''} found, "
            f"count-based grade {report.count_grade}).")
    if not report.grades_agree:
        line += " The two grades disagree, so treat the result as uncertain."
    if advice:
        line += f" Advice for the {report.severity} grade: {advice[0]}"
    return line


def _progress_line(profile: "Profile | None") -> str | None:
    """The trend of the user's saved history (acne.history builds it from checked numbers only)."""
    progress = " ".join(str(getattr(profile, "progress", None) or "").split())
    if not progress:
        return None
    return (f"**Your saved progress:** {progress}. Treatments take 8–12 weeks to show; photos taken in the "
            "same light, distance and angle compare best.")


def _profile_text(profile: "Profile | None") -> str:
    if profile is None:
        return ""
    return " ".join(str(v) for v in (profile.age_range, profile.skin_type, profile.treatments,
                                       profile.sensitivities) if v)


def _other_grade(passage: Passage, report: "Report | None") -> bool:
    """A per-severity passage (e.g. 'Routine for mild acne') for a grade other than the user's."""
    if report is None:
        return False
    heading = passage.heading.lower()
    return any(g.lower() in heading for g in CLASSES if g != report.severity) and report.severity.lower() not in heading


class OfflineAssistant:
    def __init__(self, knowledge: KnowledgeBase | None = None, *, reason: str | None = None) -> None:
        self.knowledge = knowledge or default_knowledge()
        self.name = f"{OFFLINE_NAME} ({reason})" if reason else OFFLINE_NAME

    def __repr__(self) -> str:
        return f"OfflineAssistant({len(self.knowledge.passages)} passages)"

    def stream(self, message: Any, history: list[dict] | None, report: "Report | None" = None,
               profile: "Profile | None" = None) -> Iterator[str]:
        answer = self.answer(message, history, report, profile)
        # Word groups, cumulative: streams in the UI like a model would.
        words = re.findall(r"\S+\s*", answer)
        for end in range(8, len(words), 8):
            yield "".join(words[:end])
        yield answer

    def answer(self, message: Any, history: list[dict] | None = None, report: "Report | None" = None,
               profile: "Profile | None" = None) -> str:
        if report is not None and report.severity is None:
            report = None   # a photo that could not be assessed says nothing about the skin
        text = content_text(message).strip()
        if not text:
            return f"{HEADER}\n\nPlease type a question about your skin."
        terms = tokenize(text)
        override = bool(OVERRIDE_ATTEMPT.search(text))
        on_topic = is_on_topic(t for t in terms if not (override and t in GENERIC_TERMS))

        # Short follow-ups ("how often?") borrow the terms of the previous question.
        query = Counter({t: 1.0 for t in terms})
        if len(set(terms)) < 4:
            previous = [m["content"] for m in flatten_history(history) if m["role"] == "user"]
            if previous:
                prev_terms = tokenize(previous[-1])
                if not on_topic and not override and is_on_topic(prev_terms) and not OFF_TOPIC_TASK.search(text):
                    on_topic = bool(terms)  # a follow-up about the same skin topic
                for t in prev_terms:
                    query[t] = max(query[t], 0.5)

        parts = [HEADER]
        if override:
            parts.append("I can't change how I work, take on another role, or share internal instructions"
                         + (", and I have no API keys, passwords or other secrets to share" if SECRET_REQUEST.search(text)
                            else "") + ".")
        if OFF_TOPIC_TASK.search(text) or not on_topic:
            if GREETING.match(text):
                return (f"{HEADER}\n\nHello! I answer questions about acne and skin care, for example how to "
                        "use benzoyl peroxide, which routine suits your result, or when to see a dermatologist.")
            parts.append(self._decline())
            return "\n\n".join(parts)

        flags = red_flags(text)
        profile_flags = [f for f in red_flags(_profile_text(profile)) if f[0] in PROFILE_RED_FLAGS]
        flags += [f for f in profile_flags if f not in flags]
        if flags:
            parts.append("\n".join(f"⚠️ {advice}" for _, advice in flags))

        if report is not None:
            query[stem(report.severity.lower())] += 0.3  # nudges routine questions to the user's grade
        hits = self.knowledge.search(dict(query), k=5)
        used: list[Passage] = []
        if hits:
            top_score = hits[0][1]
            used = [p for p, s in hits if s >= 0.8 * top_score and not _other_grade(p, report)][:2] or [hits[0][0]]
            for p in used:
                parts.append(f"**{p.title}: {p.heading}**\n{p.text}")
        else:
            parts.append("I don't have a note on that. I can help with cleansing, benzoyl peroxide, salicylic "
                         "acid, adapalene and other retinoids, moisturiser, sunscreen, diet, picking and scars, "
                         "pregnancy, isotretinoin, and when to see a doctor.")
        parts.append(_severity_line(report))
        progress_line = _progress_line(profile)
        if progress_line:
            parts.append(progress_line)
        sources = list(dict.fromkeys(s for p in used for s in p.sources))
        if sources:
            parts.append("Sources: " + "; ".join(sources[:3]))
        parts.append(FOOTER)
        return "\n\n".join(parts)

    @staticmethod
    def _decline() -> str:
        return ("I'm the offline skincare assistant, so I can only help with acne and skin care, not with that "
                "request. You could ask me, for example, how to use benzoyl peroxide, which routine suits your "
                "result, or when to see a dermatologist.")
