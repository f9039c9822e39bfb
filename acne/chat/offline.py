"""The offline assistant: answers from the curated, cited notes in knowledge/*.md, with red-flag advice.

Retrieval (acne/chat/retrieval.py) is hybrid: BM25 over the notes' words and the cosine similarity of
sentence embeddings, fused by a weighted sum; the red flags and off-topic checks are in
acne/chat/safety.py. The answer comes first; the latest
analysis is brought in only when the question is about it (or the note depends on the grade), and then
with its numbers. Used when no chat model is configured, and as the fallback when the model cannot be
reached. The question set in tests/chat_questions.py measures it (scripts/eval_chat.py)."""
from __future__ import annotations

import logging
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

from acne.chat.prompt import count_band, content_text, flatten_history, runner_up
from acne.chat.retrieval import KnowledgeBase, Passage, default_knowledge, stem, tokenize
from acne.chat.safety import (GENERIC_TERMS, GREETING, OFF_TOPIC_TASK, OVERRIDE_ATTEMPT, PROFILE_RED_FLAGS,
                              SECRET_REQUEST, is_on_topic, red_flags)
from acne.severity import CLASSES

if TYPE_CHECKING:
    from acne.chat import Profile
    from acne.report import Report

log = logging.getLogger(__name__)

OFFLINE_NAME = "Offline assistant"
FOOTER = "_Not a diagnosis. See a dermatologist for painful, severe or worsening acne._"

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
    """Answers from the knowledge notes without any model or network (the Assistant protocol)."""
    def __init__(self, knowledge: KnowledgeBase | None = None, *, reason: str | None = None,
                 embeddings: str | None = None) -> None:
        self.knowledge = knowledge or default_knowledge(embeddings)
        self.name = f"{OFFLINE_NAME} ({reason})" if reason else OFFLINE_NAME

    def __repr__(self) -> str:
        return (f"OfflineAssistant({len(self.knowledge.passages)} passages, "
                f"{'BM25 + embeddings' if self.knowledge.hybrid else 'BM25'})")

    def stream(self, message: Any, history: list[dict] | None, report: "Report | None" = None,
               profile: "Profile | None" = None) -> Iterator[str]:
        """answer(), streamed in growing word groups as a chat model would stream it."""
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
        """The answer to `message` (text or a Gradio message), given the chat `history`, the latest
        analysis `report` and the visitor's `profile` (both optional): cited passages, red-flag advice
        first, and the result's numbers when the question is about it."""
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
