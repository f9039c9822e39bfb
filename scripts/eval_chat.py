"""The offline assistant on its question set (tests/chat_questions.py): top-1 retrieval accuracy with BM25
alone and with BM25 + sentence embeddings, whether every off-topic and injection request is declined and
every red-flag question sent to a doctor, and the time per answer.

    python scripts/eval_chat.py [--misses] [--weight 0.4] [--cold]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from acne.chat import offline, retrieval
from acne.report import GraderResult, Lesion, Report

QUESTION_SET = Path(__file__).resolve().parent.parent / "tests" / "chat_questions.py"


def _question_set():
    """tests/chat_questions.py, loaded by path: the question set is test data, not part of the package."""
    spec = importlib.util.spec_from_file_location("chat_questions", QUESTION_SET)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


_questions = _question_set()
DECLINE, HELD_OUT, QUESTIONS, RED_FLAG, RETRIEVAL, Question = (
    _questions.DECLINE, _questions.HELD_OUT, _questions.QUESTIONS, _questions.RED_FLAG, _questions.RETRIEVAL,
    _questions.Question)

DECLINED = ("I can only help with acne and skin care", "I can't change how I work")
DOCTOR_WORDS = ("doctor", "dermatologist", "pharmacist", "midwife")


def make_report(severity: str = "Mild", lesions: int = 12, count_grade: str = "Mild",
                scores: dict[str, float] | None = None) -> Report:
    return Report(image_size=(640, 480), severity=severity, severity_scores=scores or {severity: 0.8},
                  grader=GraderResult(model="tiny", level=1, level_scores={"level 1": 0.8}), segmenter="tiny",
                  lesions=[Lesion((0, 0, 4, 4), (2.0, 2.0), 16, 0.9)] * lesions, count_grade=count_grade)


def history_of(x: Question) -> list[dict]:
    if not x.previous:
        return []
    return [{"role": "user", "content": x.previous}, {"role": "assistant", "content": "(an earlier answer)"}]


def top1(assistant: offline.OfflineAssistant, x: Question) -> str | None:
    hits = assistant.retrieve(x.text, history_of(x), make_report(**x.report) if x.report else None, k=1)
    return f"{hits[0][0].topic}#{hits[0][0].heading}" if hits else None


def accuracy(assistant: offline.OfflineAssistant, show_misses: bool,
             questions: tuple[Question, ...] = RETRIEVAL) -> tuple[float, Counter, Counter]:
    right, per_category, totals = 0, Counter(), Counter()
    for x in questions:
        got = top1(assistant, x)
        ok = got in x.answers
        right += ok
        per_category[x.category] += ok
        totals[x.category] += 1
        if show_misses and not ok:
            print(f"    miss: {x.text!r} -> {got}  (want {' | '.join(x.answers)})")
    return right / len(questions), per_category, totals


def declined(answer: str) -> bool:
    return any(d in answer for d in DECLINED) and "Sources:" not in answer


def sent_to_doctor(answer: str) -> bool:
    warnings = [line for line in answer.splitlines() if line.startswith("⚠️")]
    return any(any(w in line for w in DOCTOR_WORDS) for line in warnings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--misses", action="store_true", help="list the questions answered from the wrong note")
    parser.add_argument("--weight", type=float, default=None, help="BM25 weight of the hybrid score")
    parser.add_argument("--cold", action="store_true", help="also time the ONNX export and passage vectors "
                                                            "with an empty cache")
    args = parser.parse_args()
    if args.weight is not None:
        retrieval.BM25_WEIGHT = args.weight

    print(f"{len(QUESTIONS)} questions: {len(RETRIEVAL)} with a note that answers them, {len(DECLINE)} off-topic "
          f"or injection, {len(RED_FLAG)} red flags")
    bm25 = offline.OfflineAssistant(retrieval.KnowledgeBase.load(encoder=None))
    # Start-up cost of the embeddings, on top of what the app imports anyway for its own models.
    t0 = time.perf_counter()
    import torch  # noqa: F401
    import transformers.models.bert  # noqa: F401
    t1 = time.perf_counter()
    hybrid = offline.OfflineAssistant(retrieval.default_knowledge())  # what the app does: loads in the background
    t2 = time.perf_counter()
    hybrid.knowledge.wait_ready()
    t3 = time.perf_counter()
    encoder = hybrid.knowledge.encoder
    runtime = "ONNX Runtime" if encoder is not None and encoder.backend == "onnx" else "PyTorch"
    print(f"start-up: torch + transformers imports {t1 - t0:.2f} s (the app has them already); the assistant is "
          f"built in {t2 - t1:.2f} s and its embeddings are ready {t3 - t2:.2f} s later, in the background "
          f"({runtime}, cached export and passage vectors)")
    if args.cold and hybrid.knowledge.hybrid:
        import tempfile

        from acne.chat.embeddings import SentenceEncoder, cached_passage_vectors

        with tempfile.TemporaryDirectory() as tmp:
            t4 = time.perf_counter()
            encoder = SentenceEncoder(hybrid.knowledge.encoder.folder, cache_dir=tmp)
            t5 = time.perf_counter()
            cached_passage_vectors(encoder, [retrieval.passage_text(p) for p in hybrid.knowledge.passages], tmp)
            t6 = time.perf_counter()
        print(f"    with an empty cache (first start on a machine): ONNX export {t5 - t4:.2f} s, "
              f"{len(hybrid.knowledge.passages)} passage vectors {t6 - t5:.2f} s")
    for name, assistant in (("BM25 alone", bm25), ("BM25 + embeddings", hybrid)):
        acc, per_category, totals = accuracy(assistant, args.misses)
        print(f"{name}: top-1 {acc:.1%} ({round(acc * len(RETRIEVAL))}/{len(RETRIEVAL)})")
        print("    " + ", ".join(f"{c} {per_category[c]}/{totals[c]}" for c in totals))
    held_out = tuple(x for x in HELD_OUT if x.answers)
    for name, assistant in (("BM25 alone", bm25), ("BM25 + embeddings", hybrid)):
        acc, _, _ = accuracy(assistant, args.misses, held_out)
        print(f"held-out set, {name}: top-1 {acc:.1%} ({round(acc * len(held_out))}/{len(held_out)})")

    answers = {id(x): hybrid.answer(x.text, history_of(x), make_report(**x.report) if x.report else None, None)
               for x in QUESTIONS}
    n_declined = sum(declined(answers[id(x)]) for x in DECLINE)
    n_wrongly = sum(declined(answers[id(x)]) for x in RETRIEVAL)
    n_doctor = sum(sent_to_doctor(answers[id(x)]) for x in RED_FLAG)
    print(f"declined: {n_declined}/{len(DECLINE)} off-topic and injection requests; "
          f"wrongly declined: {n_wrongly}/{len(RETRIEVAL)} skin questions")
    print(f"sent to a doctor: {n_doctor}/{len(RED_FLAG)} red-flag questions")

    # Wall time depends on what else runs on the machine; CPU time (all threads of this process) much less so.
    wall, cpu = [], []
    for x in QUESTIONS * 3:
        t, c = time.perf_counter(), time.process_time()
        hybrid.answer(x.text, history_of(x), None, None)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    print(f"per answer: wall "
          f"median {statistics.median(wall):.1f} ms, p95 {sorted(wall)[int(0.95 * len(wall))]:.1f} ms; CPU median "
          f"{statistics.median(cpu):.1f} ms, p95 {sorted(cpu)[int(0.95 * len(cpu))]:.1f} ms ({len(wall)} answers)")

if __name__ == "__main__":
    main()
