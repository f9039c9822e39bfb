"""The OpenAI-backed chat against a real HTTP server on 127.0.0.1 (tests/fake_openai_server.py):
what is sent, streaming, every failure mode, and that the key never leaks."""
from __future__ import annotations

import logging
import time
import uuid

import pytest

from acne.chat import Assistant, Profile, load_assistant
from acne.chat.offline import OfflineAssistant
from acne.chat.openai_backend import PLACEHOLDER_KEY, OpenAIAssistant, describe_error, host_of
from acne.chat.prompt import build_system_prompt, flatten_history
from acne.config import Settings
from acne.report import GraderResult, Lesion, Report
from app_process import HeldPort
from fake_openai_server import FakeOpenAIServer, reply_from_system_prompt
from input_corpus import message_leaks

API_KEY = f"sk-test-{uuid.uuid4().hex}"  # unique, so a leak anywhere is unmistakable
REPLY = "Use a gentle cleanser twice a day and give benzoyl peroxide eight weeks to work."


def make_report(severity: str = "Moderate", lesions: int = 23, count_grade: str = "Moderate") -> Report:
    return Report(
        image_size=(640, 480), severity=severity,
        severity_scores={"Clear": 0.04, "Mild": 0.14, "Moderate": 0.72, "Severe": 0.10},
        grader=GraderResult(model="tiny-grader", level=2,
                            level_scores={"level -1": 0.02, "level 0": 0.02, "level 1": 0.14,
                                          "level 2": 0.72, "level 3": 0.10}),
        segmenter="tiny-segmenter",
        lesions=[Lesion(box=(i, i, i + 5, i + 5), center=(i + 2.5, i + 2.5), area_px=25, score=0.9)
                 for i in range(lesions)],
        count_grade=count_grade, recommendations=["See a doctor or dermatologist."])


def gradio_history(*turns: str) -> list[dict]:
    """Alternating user/assistant turns in the shape Gradio 6 hands to a chat function."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": [{"type": "text", "text": t}],
             "metadata": None, "options": None} for i, t in enumerate(turns)]


def settings_for(server: FakeOpenAIServer | None, **overrides) -> Settings:
    values = dict(openai_api_key=API_KEY, openai_base_url=server.base_url if server else None,
                  chat_model="fake-model", chat_timeout=1.0, chat_max_retries=0, chat_history_chars=12000)
    values.update(overrides)
    return Settings(**values)


def run(assistant: Assistant, message: str = "How do I use benzoyl peroxide?", history=None,
        report: Report | None = None, profile: Profile | None = None) -> list[str]:
    return list(assistant.stream(message, history or [], report, profile))


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    # A proxy from the environment (CI machines) must not swallow requests to 127.0.0.1.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


HANG_SECONDS = 30.0   # how long the server stays silent in "hang" and "stall" modes; the client waits 1 s


@pytest.fixture
def server():
    with FakeOpenAIServer(reply=REPLY, api_key=API_KEY, hang_seconds=HANG_SECONDS) as s:
        yield s


@pytest.fixture
def assistant(server) -> OpenAIAssistant:
    a = load_assistant(settings_for(server))
    assert isinstance(a, OpenAIAssistant)
    return a


@pytest.fixture
def refused_url():
    """The URL of a port where nothing listens, held so that nothing starts listening there meanwhile."""
    with HeldPort() as port:
        yield f"http://127.0.0.1:{port.port}/v1"


# -- choosing the backend -------------------------------------------------------------------------
def test_no_key_and_no_base_url_gives_the_offline_assistant():
    a = load_assistant(Settings(openai_api_key=None, openai_base_url=None))
    assert isinstance(a, OfflineAssistant) and isinstance(a, Assistant)
    assert a.name == "Offline assistant (no API key set)"


def test_load_assistant_reads_the_environment(monkeypatch, server, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env from the working directory
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("ACNE_CHAT_MODEL", "env-model")
    monkeypatch.setenv("ACNE_CHAT_TIMEOUT", "1.5")
    a = load_assistant()
    assert isinstance(a, OpenAIAssistant)
    assert a.name == f"env-model at 127.0.0.1:{server.port}"
    assert a.timeout == 1.5
    assert run(a)[-1] == REPLY
    assert server.chat_requests[-1].body["model"] == "env-model"


def test_name_shows_model_and_host_never_the_key(server):
    a = load_assistant(settings_for(server))
    assert a.name == f"fake-model at 127.0.0.1:{server.port}"
    default = load_assistant(Settings(openai_api_key=API_KEY))
    assert default.name == "gpt-4o-mini at api.openai.com"
    for text in (a.name, repr(a), default.name, repr(default)):
        assert API_KEY not in text
    assert host_of("https://user:pass@llm.example.org:8443/v1") == "llm.example.org:8443"


def test_loading_sends_nothing_until_the_first_message(server):
    load_assistant(settings_for(server))
    assert server.requests == []


def test_base_url_without_key_uses_a_placeholder_key():
    with FakeOpenAIServer(reply=REPLY) as local:  # like Ollama: any key accepted
        a = load_assistant(settings_for(local, openai_api_key=None))
        assert isinstance(a, OpenAIAssistant)
        assert run(a)[-1] == REPLY
        assert local.chat_requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


# -- what is sent ---------------------------------------------------------------------------------
def test_system_prompt_carries_severity_and_lesion_count(assistant, server):
    report = make_report()
    profile = Profile(age_range="18-24", skin_type="oily")
    run(assistant, report=report, profile=profile)
    request = server.chat_requests[-1]
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["stream"] is True and request.body["model"] == "fake-model"
    system = request.messages[0]
    assert system["role"] == "system"
    assert system["content"] == build_system_prompt(report, profile)
    assert "Severity: Moderate (confidence 72%" in system["content"]
    assert "Lesions found by the segmenter: 23" in system["content"]
    assert '"oily"' in system["content"] and '"18-24"' in system["content"]


def test_system_prompt_follows_a_new_analysis(assistant, server):
    run(assistant, report=make_report("Mild", 9, "Mild"))
    run(assistant, report=make_report("Severe", 64, "Severe"))
    first, second = (r.messages[0]["content"] for r in server.chat_requests)
    assert "Severity: Mild" in first and "Lesions found by the segmenter: 9 " in first
    assert "Severity: Severe" in second and "Lesions found by the segmenter: 64 " in second


def test_three_turn_conversation_is_sent_whole_and_in_order(assistant, server):
    history = gradio_history("Is my acne bad?", "It was graded Moderate.",
                             "What should I use?", "Benzoyl peroxide is a good start.")
    history[1]["metadata"] = {}  # gradio sends empty metadata and options on normal messages
    history[1]["options"] = []
    run(assistant, "How long until it works?", history, make_report())
    sent = server.chat_requests[-1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in sent[1:]] == [
        "Is my acne bad?", "It was graded Moderate.", "What should I use?",
        "Benzoyl peroxide is a good start.", "How long until it works?"]
    assert all(isinstance(m["content"], str) for m in sent)


def test_history_is_flattened_from_every_gradio_shape():
    history = [
        {"role": "user", "content": "plain string"},
        {"role": "assistant", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "thinking..."}], "metadata": {"title": "Thought"}},
        {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/x.png"}, "alt_text": None},
                                     {"type": "text", "text": "what about this photo?"}]},
        {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/y.png"}}]},  # no text: dropped
        {"role": "assistant", "content": "answer"},
        {"role": "assistant", "content": "more answer"},  # same role again: merged
        {"role": "tool", "content": "ignored"},
    ]
    assert flatten_history(history) == [
        {"role": "user", "content": "plain string"},
        {"role": "assistant", "content": "part one\npart two"},
        {"role": "user", "content": "what about this photo?"},
        {"role": "assistant", "content": "answer\n\nmore answer"},
    ]


def test_long_history_is_trimmed_from_the_oldest_turns(server):
    a = load_assistant(settings_for(server, chat_history_chars=300))
    turns = [f"turn {i} " + "x" * 80 for i in range(10)]
    report = make_report()
    run(a, "the newest question", gradio_history(*turns), report)
    sent = server.chat_requests[-1].messages
    assert sent[0] == {"role": "system", "content": build_system_prompt(report, None)}
    assert sent[1]["role"] == "user" and sent[-1] == {"role": "user", "content": "the newest question"}
    assert sum(len(m["content"]) for m in sent[1:]) <= 300
    assert "turn 0 " not in str(sent) and "turn 9 " in str(sent)


# -- streaming ------------------------------------------------------------------------------------
def test_reply_streams_in_cumulative_pieces(assistant, server):
    outputs = run(assistant, report=make_report())
    assert len(outputs) > 3
    assert all(later.startswith(earlier) for earlier, later in zip(outputs, outputs[1:]))
    assert outputs[-1] == REPLY


def test_the_model_sees_the_analysis():
    with FakeOpenAIServer(reply=reply_from_system_prompt(), api_key=API_KEY) as s:
        a = load_assistant(settings_for(s))
        assert run(a, report=make_report("Severe", 60, "Severe"))[-1].startswith("Your photo was graded Severe.")


def test_each_piece_reaches_the_user_as_it_arrives():
    """Streaming, not buffering: with the server pausing between words, the first words are passed on
    long before the last. (Relative to the server's own pauses; a buffering client yields all at once.)"""
    delay, words = 0.15, REPLY.split()
    with FakeOpenAIServer(reply=REPLY, api_key=API_KEY, chunk_delay=delay) as slow:
        a = load_assistant(settings_for(slow, chat_timeout=5.0))
        arrivals: list[tuple[float, str]] = []
        for text in a.stream("How do I use benzoyl peroxide?", [], make_report()):
            arrivals.append((time.monotonic(), text))
    assert arrivals[-1][1] == REPLY and len(arrivals) == len(words)
    assert arrivals[0][1] == words[0] + " "
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread >= 0.5 * delay * (len(words) - 1), f"all pieces came within {spread:.2f} s: buffered"


# -- failures -------------------------------------------------------------------------------------
ERROR_MODES = [
    ("401", "did not accept the app's API key"),
    ("429", "busy or its usage quota is used up"),
    ("500", "server error (500)"),
    ("hang", "did not answer within 1 s"),
]


@pytest.mark.parametrize("mode, expected", ERROR_MODES, ids=[m for m, _ in ERROR_MODES])
def test_each_failure_gives_a_readable_message_then_the_next_call_works(assistant, server, mode, expected):
    server.mode = mode
    started = time.monotonic()
    outputs = run(assistant, report=make_report())
    # The client gives up after its timeout (1 s) and does not retry; the server would hang for 30 s.
    # 15 s: generous for 2 busy cores, still far below the hang.
    assert time.monotonic() - started < HANG_SECONDS / 2, "a failure must not keep the user waiting long"
    first, final = outputs[0], outputs[-1]
    assert first.startswith("⚠️") and expected in first
    assert not message_leaks(first), first  # no path, errno or exception text
    assert "Traceback" not in final and API_KEY not in final
    # The user still gets help: the offline assistant answers below the notice.
    assert "the offline assistant's answer" in final and "Benzoyl peroxide" in final
    server.mode = "normal"
    assert run(assistant)[-1] == REPLY


@pytest.mark.parametrize("mode, expected", [("cut", "broke off"), ("stall", "stopped sending")])
def test_a_stream_broken_midway_keeps_the_text_and_says_so(assistant, server, mode, expected):
    server.mode = mode
    outputs = run(assistant)
    words = REPLY.split()
    assert outputs[-1].startswith(f"{words[0]} {words[1]}")  # the pieces that arrived are kept
    assert "The reply was cut off" in outputs[-1] and expected in outputs[-1]
    server.mode = "normal"
    assert run(assistant)[-1] == REPLY


def test_an_unexpected_failure_is_described_without_its_type_or_text():
    # Anything that is not an OpenAI error (a bug, a library change): one plain sentence.
    err = FileNotFoundError(2, "No such file or directory", "/srv/app/secret.json")
    message = describe_error(err, host="127.0.0.1:9", model="m", timeout=3.0)
    assert message == "Something went wrong while talking to the chat service."
    assert not message_leaks(message)


def test_connection_refused_falls_back_to_the_offline_assistant(refused_url):
    a = load_assistant(settings_for(None, openai_base_url=refused_url))
    final = run(a, "Does chocolate cause acne?")[-1]
    assert final.startswith("⚠️ Could not reach the chat service at 127.0.0.1")
    assert "the offline assistant's answer" in final and "Chocolate" in final


def test_retries_follow_settings(server):
    a = load_assistant(settings_for(server, chat_max_retries=1))
    server.queue("500")
    assert run(a)[-1] == REPLY
    assert len(server.chat_requests) == 2


def test_empty_message_sends_nothing(assistant, server):
    assert run(assistant, "   ") == ["Please type a question about your skin."]
    assert server.chat_requests == []


# -- privacy --------------------------------------------------------------------------------------
def test_key_and_profile_never_reach_the_logs(caplog, server, refused_url):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "openai._base_client", "httpx", "httpx2", "httpcore", "acne", "acne.chat"):
        caplog.set_level(logging.DEBUG, logger=name)
    profile = Profile(treatments="ProfileMarker-tretinoin", sensitivities="ProfileMarker-fragrance")
    a = load_assistant(settings_for(server))
    outputs = []
    for mode in ("normal", "401", "429", "500", "cut", "hang", "normal"):
        server.mode = mode
        outputs += run(a, "UserMarker: how do I use benzoyl peroxide?", gradio_history("hi", "hello"),
                       make_report(), profile)
    refused = load_assistant(settings_for(None, openai_base_url=refused_url))
    outputs += run(refused, "UserMarker question", [], make_report(), profile)

    assert any(r.name.startswith(("openai", "httpx")) for r in caplog.records), "client logging was not captured"
    assert any(r.name.startswith("acne.chat") and r.levelno == logging.WARNING for r in caplog.records)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert API_KEY not in logged and API_KEY[-12:] not in logged
    assert "ProfileMarker" not in logged and "UserMarker" not in logged
    assert not any(API_KEY in o for o in outputs)
    # The server really received the key (so its absence from the logs means something).
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_missing_key_without_base_url_is_a_readable_message(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    a = OpenAIAssistant(Settings(openai_api_key=None, openai_base_url=None), fallback=None)
    assert run(a) == ["⚠️ The chat service is not configured correctly (no API key?). "
                      "Set OPENAI_API_KEY or OPENAI_BASE_URL."]


def test_current_message_already_in_history_is_not_sent_twice(assistant, server):
    run(assistant, "What about sunscreen?", gradio_history("hi", "hello", "What about sunscreen?"))
    assert [m["content"] for m in server.chat_requests[-1].messages[1:]] == ["hi", "hello", "What about sunscreen?"]
