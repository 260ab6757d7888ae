"""Behaviour of the built-in trigram text model and its backend entry point (no database)."""

import re
import threading

import pytest

from playground.engine import textgen
from playground.engine.base import Canceled
from playground.engine.textgen import TrigramBackend, get_model, render_chat, run_text


class FakeEmitter:
    """Records what a backend reports; turns canceled after cancel_after deltas."""

    def __init__(self, cancel_after: int | None = None):
        self.deltas: list[str] = []
        self.progresses: list[float] = []
        self.logs: list[str] = []
        self.cancel_after = cancel_after
        self.cancel_checks = 0

    def progress(self, value: float) -> None:
        self.progresses.append(value)

    def delta(self, text: str) -> None:
        self.deltas.append(text)

    def log(self, message: str) -> None:
        self.logs.append(message)

    def metrics(self, **numbers: float) -> None:
        pass

    def canceled(self) -> bool:
        self.cancel_checks += 1
        return self.cancel_after is not None and len(self.deltas) >= self.cancel_after


def params(**overrides):
    base = {
        "prompt": "The value of",
        "messages": None,
        "max_tokens": 40,
        "temperature": 1.0,
        "top_p": 1.0,
        "seed": 7,
        "stop": [],
    }
    return {**base, **overrides}


@pytest.fixture(scope="module")
def model():
    return get_model()


def gen(model, prompt="The value of", **kw):
    kw.setdefault("max_tokens", 40)
    return list(model.generate(prompt, **kw))


def test_get_model_is_a_singleton(model):
    assert get_model() is model
    assert model.n_tokens > 10_000


def test_concurrent_first_use_trains_once(monkeypatch):
    calls = []

    def small_corpus():
        calls.append(1)
        return "The cat sat on the mat. The dog sat on the log."

    monkeypatch.setattr(textgen, "_model", None)
    monkeypatch.setattr(textgen, "_corpus", small_corpus)
    got = []
    threads = [threading.Thread(target=lambda: got.append(get_model())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(got) == 8 and all(m is got[0] for m in got)


def test_tokenize_splits_punctuation(model):
    assert model.tokenize('Call "len(s)", then stop.') == [
        "Call",
        '"len(s)"',
        ",",
        "then",
        "stop",
        ".",
    ]
    assert model.count_tokens("a, b; c!") == 6
    assert model.count_tokens("") == 0


def test_same_seed_same_text(model):
    assert gen(model, seed=123) == gen(model, seed=123)
    assert gen(model, seed=5, temperature=0.8, top_p=0.9) == gen(
        model, seed=5, temperature=0.8, top_p=0.9
    )


def test_different_seeds_differ(model):
    texts = {"".join(gen(model, seed=s)) for s in range(5)}
    assert len(texts) >= 4


def test_no_seed_is_random(model):
    texts = {"".join(gen(model, seed=None)) for _ in range(5)}
    assert len(texts) >= 4


def test_temperature_zero_is_deterministic_without_seed(model):
    first = gen(model, temperature=0, seed=None)
    assert gen(model, temperature=0, seed=None) == first
    assert gen(model, temperature=0, seed=99) == first


def test_tiny_top_p_is_greedy(model):
    assert gen(model, top_p=1e-9, seed=1) == gen(model, temperature=0)


@pytest.mark.parametrize("n", [0, 1, 7, 100])
def test_max_tokens_exact(model, n):
    assert len(gen(model, max_tokens=n, seed=3)) == n


def test_text_reads_as_text(model):
    text = "".join(gen(model, "", max_tokens=400, seed=11))
    assert not text.startswith(" ")
    assert not re.search(r" [,.;:)?!]", text)
    assert not re.search(r"[(] ", text)
    assert "****" not in text and "====" not in text and ">>>" not in text


def test_piece_spacing_follows_prompt(model):
    assert gen(model, "The value", max_tokens=1, temperature=0)[0].startswith(" ")
    assert not gen(model, "The value ", max_tokens=1, temperature=0)[0].startswith(" ")


def test_unknown_words_back_off(model):
    assert len(gen(model, "qwxyz zzyzx", max_tokens=10, seed=1)) == 10


def expected_before(pieces, stop):
    """The pieces that end before the first occurrence of stop in their joined text."""
    cut, out, pos = "".join(pieces).find(stop), [], 0
    for p in pieces:
        pos += len(p)
        if pos > cut:
            break
        out.append(p)
    return out


def test_multi_token_stop(model):
    full = gen(model, max_tokens=60, seed=21)
    stop = "".join(full[10:13])  # spans three pieces
    stopped = gen(model, max_tokens=60, seed=21, stop=[stop])
    assert stopped == expected_before(full, stop)
    assert len(stopped) <= 10
    assert stop not in "".join(stopped)


@pytest.mark.parametrize("seed", range(25))
def test_stop_never_in_output(model, seed):
    full = gen(model, max_tokens=50, seed=seed)
    text = "".join(full)
    start = seed % 30
    stops = ["zzz never", text[start : start + 3 + seed % 11]]
    stopped = gen(model, max_tokens=50, seed=seed, stop=stops)
    out = "".join(stopped)
    assert all(s not in out for s in stops)
    assert stopped == expected_before(full, stops[1])


def test_held_back_pieces_are_flushed(model):
    # The last pieces could begin these stops, so they are held back and must come out at the end.
    full = gen(model, max_tokens=30, seed=4)
    stops = ["".join(full[-3:]) + "zzz", " the zzz", ", zzz", ". zzz"]
    assert gen(model, max_tokens=30, seed=4, stop=stops) == full


def test_run_text_usage_and_deltas():
    emit = FakeEmitter()
    result = run_text(params(max_tokens=30), emit)
    assert result.output["text"] == "".join(emit.deltas)
    assert result.output["finish_reason"] == "length"
    model = get_model()
    assert result.usage == {
        "prompt_tokens": model.count_tokens("The value of"),
        "completion_tokens": len(emit.deltas),
        "total_tokens": model.count_tokens("The value of") + len(emit.deltas),
    }
    assert len(emit.deltas) == 30


def test_run_text_stop_finish_reason():
    full = run_text(params(max_tokens=40), FakeEmitter()).output["text"]
    stop = full[20:28]
    emit = FakeEmitter()
    result = run_text(params(max_tokens=40, stop=[stop]), emit)
    assert result.output["finish_reason"] == "stop"
    assert stop not in result.output["text"]
    assert full.startswith(result.output["text"])
    assert result.usage["completion_tokens"] == len(emit.deltas) < 40


def test_run_text_progress_bounded_and_monotonic():
    emit = FakeEmitter()
    run_text(params(max_tokens=95), emit)
    assert emit.progresses, "progress never reported"
    assert all(0 <= p <= 1 for p in emit.progresses)
    assert emit.progresses == sorted(emit.progresses)
    assert len(emit.progresses) <= 11


@pytest.mark.parametrize("after", [0, 3, 20])
def test_run_text_cancel(after):
    emit = FakeEmitter(cancel_after=after)
    with pytest.raises(Canceled):
        run_text(params(max_tokens=200), emit)
    assert after <= len(emit.deltas) < after + 8


def test_render_chat():
    messages = [
        {"role": "system", "content": "You explain Python."},
        {"role": "user", "content": "What is  a\nlist?"},
    ]
    text = render_chat(messages)
    assert "System: You explain Python." in text
    assert "User: What is a list?" in text
    assert text.rstrip().endswith("Assistant:")


def test_run_text_with_messages():
    messages = [{"role": "user", "content": "Tell me about dictionaries."}]
    emit = FakeEmitter()
    result = run_text(params(prompt=None, messages=messages, max_tokens=25), emit)
    assert len(emit.deltas) == 25
    assert result.output["text"] == "".join(emit.deltas)
    assert not result.output["text"].startswith(" ")
    assert result.usage["prompt_tokens"] == get_model().count_tokens(render_chat(messages))


def test_backend_runs():
    backend = TrigramBackend({})
    result = backend.run(params(max_tokens=5, temperature=0), FakeEmitter())
    assert result.usage["completion_tokens"] == 5
    assert (
        result.output["text"]
        == run_text(params(max_tokens=5, temperature=0), FakeEmitter()).output["text"]
    )


def test_rejects_bad_sampling_values(model):
    with pytest.raises(ValueError):
        gen(model, temperature=-1)
    with pytest.raises(ValueError):
        gen(model, top_p=0)
