"""The offline assistant: cited notes, BM25 retrieval, red flags, staying on topic."""
from __future__ import annotations

import re

import pytest

from acne.chat import Profile, load_assistant
from acne.chat.offline import (BM25, HEADER, KNOWLEDGE_DIR, KnowledgeBase, OfflineAssistant, parse_note,
                               red_flags, tokenize)
from acne.config import Settings
from acne.report import GraderResult, Report

DECLINED = "I can only help with acne and skin care"
REPUTABLE = ("nhs.uk", "nice.org.uk", "aad.org", "doi.org", "MHRA", "Food and Drug Administration", "Hayashi")


def make_report(severity: str = "Mild", lesions: int = 12, count_grade: str = "Mild") -> Report:
    from acne.report import Lesion

    return Report(image_size=(640, 480), severity=severity, severity_scores={severity: 0.8},
                  grader=GraderResult(model="tiny", level=1, level_scores={"level 1": 0.8}), segmenter="tiny",
                  lesions=[Lesion((0, 0, 4, 4), (2.0, 2.0), 16, 0.9)] * lesions, count_grade=count_grade)


@pytest.fixture(scope="module")
def offline() -> OfflineAssistant:
    return OfflineAssistant()


def body_of(answer: str) -> str:
    """The answer without its header and footer lines."""
    return answer.replace(HEADER, "")


# -- the knowledge base ---------------------------------------------------------------------------
REQUIRED_TOPICS = ("cleansing", "benzoyl_peroxide", "salicylic_acid", "retinoids", "moisturiser", "sunscreen",
                   "diet_myths", "picking_scarring", "when_to_see_doctor", "routines", "pregnancy", "isotretinoin")


def test_every_required_topic_has_a_cited_note():
    notes = {p.stem: p for p in KNOWLEDGE_DIR.glob("*.md")}
    assert set(REQUIRED_TOPICS) <= set(notes)
    for stem, path in notes.items():
        passages = parse_note(path)
        assert len(passages) >= 1, stem
        for p in passages:
            assert len(p.text) > 100, (stem, p.heading)
            assert p.sources, f"{stem}: '{p.heading}' cites nothing"
            assert any(mark in s for s in p.sources for mark in REPUTABLE), (stem, p.sources)


def test_routines_cover_every_severity_class():
    headings = [p.heading for p in parse_note(KNOWLEDGE_DIR / "routines.md")]
    for grade in ("clear", "mild", "moderate", "severe"):
        assert any(grade in h.lower() for h in headings), grade


def test_bm25_ranks_the_matching_document_first():
    docs = [tokenize(t) for t in ("sunscreen every morning", "benzoyl peroxide gel kills bacteria",
                                  "gentle cleanser twice a day", "benzoyl benzoyl peroxide wash")]
    index = BM25(docs)
    scores = index.scores({t: 1.0 for t in tokenize("peroxide wash")})
    assert max(range(4), key=scores.__getitem__) == 3
    assert scores[0] == 0 and scores[2] == 0
    assert index.idf[tokenize("sunscreen")[0]] > index.idf[tokenize("benzoyl")[0]]  # rarer term weighs more


def test_tokenizer_matches_variants_and_brands():
    assert tokenize("BPO") == tokenize("benzoyl peroxide")
    assert tokenize("Accutane") == tokenize("isotretinoin")
    assert tokenize("moisturizer") == tokenize("moisturiser")
    assert tokenize("cysts scarring") == tokenize("cyst scar")


def test_search_finds_the_right_note():
    kb = KnowledgeBase.load()
    for question, topic in [("how do I use benzoyl peroxide", "benzoyl_peroxide"),
                            ("is salicylic acid good for blackheads", "salicylic_acid"),
                            ("does chocolate cause acne", "diet_myths"),
                            ("which spf should I wear", "sunscreen"),
                            ("should I pop my pimples", "picking_scarring"),
                            ("adapalene irritation at night", "retinoids"),
                            ("do I need a moisturizer for oily skin", "moisturiser"),
                            ("how often should I wash my face", "cleansing")]:
        best = kb.search({t: 1.0 for t in tokenize(question)}, k=1)
        assert best and best[0][0].topic == topic, (question, best)


# -- answers --------------------------------------------------------------------------------------
def test_benzoyl_peroxide_question_returns_a_benzoyl_peroxide_passage(offline):
    answer = offline.answer("How should I use benzoyl peroxide?", [], None, None)
    assert answer.startswith(HEADER)
    assert "**Benzoyl peroxide: How to use benzoyl peroxide**" in answer
    assert "2.5%" in answer and "thin layer" in answer
    assert "Sources: " in answer and "https://www.nhs.uk/medicines/benzoyl-peroxide/" in answer


def test_severe_painful_cysts_are_sent_to_a_dermatologist(offline):
    answer = offline.answer("I have severe painful cysts on my chin and jaw. What cream should I buy?", [], None, None)
    first_lines = answer.split("\n\n")[1]
    assert first_lines.startswith("⚠️") and "dermatologist" in first_lines
    assert "nodules or cysts" in first_lines


@pytest.mark.parametrize("request_text", [
    "Write a python script that sorts a list of numbers",
    "What is the capital of France?",
    "Tell me a joke about cats",
    "Can you help me with my maths homework?",
    "What's the weather tomorrow in London?",
])
def test_unrelated_requests_are_declined(offline, request_text):
    answer = offline.answer(request_text, [], make_report(), None)
    assert DECLINED in answer
    assert "Sources:" not in answer and "Paris" not in answer and "def " not in answer


def test_greeting_gets_a_short_introduction(offline):
    answer = offline.answer("hello!", [], None, None)
    assert "I answer questions about acne and skin care" in answer


def test_answer_uses_the_current_severity(offline):
    answer = offline.answer("What routine should I follow?", [], make_report("Mild", 12, "Mild"), None)
    assert "**Routines by severity: Routine for mild acne**" in answer
    assert "Routine for severe acne" not in answer
    assert "**Your photo analysis:** Mild (80% confidence; 12 lesions found" in answer
    severe = offline.answer("What routine should I follow?", [], make_report("Severe", 70, "Severe"), None)
    assert "Routine for severe acne" in severe and "dermatologist" in severe
    disagree = offline.answer("what does my result mean?", [], make_report("Mild", 70, "Severe"), None)
    assert "The two grades disagree" in disagree


def test_without_a_report_it_suggests_analysing_a_photo(offline):
    assert "analyse a photo in the Analyze tab" in offline.answer("Which sunscreen?", [], None, None)


@pytest.mark.parametrize("question, flag", [
    ("I have a fever and my acne suddenly got much worse", "fever"),
    ("There are spots on my eyelid and it is swollen", "eye area"),
    ("I'm pregnant, can I keep using my acne cream?", "pregnancy"),
    ("What does Accutane do to your mood?", "isotretinoin"),
    ("What dose of doxycycline should I take for acne?", "medication doses"),
    ("My acne is leaving pitted scars", "scarring"),
    ("My acne appeared suddenly last month at 35", "sudden onset"),
])
def test_red_flags_recommend_a_doctor(offline, question, flag):
    assert flag in [name for name, _ in red_flags(question)]
    answer = offline.answer(question, [], None, None)
    warnings = [line for line in answer.splitlines() if line.startswith("⚠️")]
    assert warnings and any(re.search(r"doctor|dermatologist|pharmacist", w) for w in warnings)


def test_no_prescription_doses_are_given(offline):
    answer = offline.answer("How many mg of isotretinoin should I take per day?", [], None, None)
    assert "I can't advise on doses" in answer
    assert not re.search(r"\b\d+(?:\.\d+)?\s?mg\b", answer)


def test_pregnancy_in_the_profile_is_taken_into_account(offline):
    answer = offline.answer("Is adapalene good for blackheads?", [], None, Profile(treatments="I'm pregnant"))
    assert "⚠️ Pregnancy or breastfeeding" in answer


def test_short_follow_up_uses_the_previous_question(offline):
    history = [{"role": "user", "content": [{"type": "text", "text": "Tell me about salicylic acid"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "It is a BHA..."}]}]
    answer = offline.answer("how often?", history, None, None)
    assert DECLINED not in answer and "Salicylic acid" in answer


def test_stream_yields_cumulative_text_ending_in_the_full_answer(offline):
    outputs = list(offline.stream("How do I use benzoyl peroxide?", [], make_report(), None))
    assert len(outputs) > 1
    assert all(b.startswith(a) for a, b in zip(outputs, outputs[1:]))
    assert outputs[-1] == offline.answer("How do I use benzoyl peroxide?", [], make_report(), None)


def test_multimodal_message_and_empty_message(offline):
    answer = offline.answer({"text": "does chocolate cause acne?", "files": []}, [], None, None)
    assert "Diet and acne myths" in answer
    assert "Please type a question" in offline.answer("   ", [], None, None)


def test_offline_assistant_says_what_it_is():
    a = load_assistant(Settings(openai_api_key=None, openai_base_url=None))
    assert a.name.startswith("Offline assistant")
    assert list(a.stream("hi", [], None, None))[-1].startswith("**Offline assistant**")
