"""Behaviour of the built-in hashing embedding model and its backend entry point (no database)."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playground.engine.base import Canceled, Result
from playground.engine.embeddings import (
    DIM,
    MODEL_NAME,
    HashingEmbeddingBackend,
    embed_text,
    run_embeddings,
    tokenize,
)

FOX = "The quick brown fox jumps over the lazy dog."


class FakeEmitter:
    """Records what a backend reports; turns canceled from the cancel_at-th check on (1-based)."""

    def __init__(self, cancel_at: int | None = None):
        self.progresses: list[float] = []
        self.logs: list[str] = []
        self.cancel_at = cancel_at
        self.cancel_checks = 0

    def progress(self, value: float) -> None:
        self.progresses.append(value)

    def delta(self, text: str) -> None:
        raise AssertionError("an embedding backend streams no text")

    def log(self, message: str) -> None:
        self.logs.append(message)

    def metrics(self, **numbers: float) -> None:
        pass

    def canceled(self) -> bool:
        self.cancel_checks += 1
        return self.cancel_at is not None and self.cancel_checks >= self.cancel_at


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_model_constants():
    assert DIM == 256
    assert MODEL_NAME == "Hashing embeddings (word and character n-grams)"


def test_tokenize_lowercases_and_keeps_inner_apostrophes_and_hyphens():
    assert tokenize("  Don't STOP-believing,\tOK?\n") == ["don't", "stop-believing", "ok"]
    assert tokenize("") == []
    assert tokenize(" \n\t ") == []
    assert tokenize("... !!! ---") == []
    assert tokenize("x = 2 + 40") == ["x", "2", "40"]


def test_same_text_same_vector():
    assert embed_text(FOX) == embed_text(FOX)
    assert embed_text(FOX) == embed_text(str(FOX))  # not an identity-keyed cache


def test_pinned_values_catch_a_change_of_hashing():
    vector = embed_text(FOX)
    nonzero = [(i, x) for i, x in enumerate(vector) if x][:6]
    expected = [
        (8, 0.132845),
        (13, -0.099447),
        (22, 0.068931),
        (23, -0.099447),
        (25, 0.224927),
        (28, -0.099447),
    ]
    assert [i for i, _ in nonzero] == [i for i, _ in expected]
    for (_, got), (_, want) in zip(nonzero, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)


def test_same_vector_in_another_process_with_another_hash_seed():
    code = (
        "import json\n"
        "from playground.engine.embeddings import embed_text\n"
        f"print(json.dumps([round(x, 6) for x in embed_text({FOX!r})]))\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [round(x, 6) for x in embed_text(FOX)]


@pytest.mark.parametrize(
    "text", ["a", "cat", FOX, "naïve café — 東京 2024", "word " * 500, "x" * 300]
)
def test_dimension_and_unit_norm(text):
    vector = embed_text(text)
    assert len(vector) == DIM
    assert all(isinstance(x, float) for x in vector)
    assert norm(vector) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n", "?!. ,;"])
def test_text_without_words_embeds_as_zeros(text):
    assert embed_text(text) == [0.0] * DIM


@pytest.mark.parametrize(
    ("anchor", "near", "far"),
    [
        ("the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew by ten percent"),
        (
            "How do I reset my password?",
            "I forgot my password and need to reset it",
            "The weather in Paris is sunny today",
        ),
        (
            "Python is a programming language",
            "python programming language tutorial",
            "chocolate cake recipe with frosting",
        ),
        ("the colour of the sky", "the color of the skies", "stock market closed lower"),
    ],
)
def test_texts_sharing_words_are_more_similar(anchor, near, far):
    a, n, f = embed_text(anchor), embed_text(near), embed_text(far)
    assert cosine(a, n) > cosine(a, f) + 0.2
    assert cosine(a, n) > cosine(n, f) + 0.2


def test_near_spellings_are_similar_through_character_ngrams():
    colour = embed_text("colour")
    assert cosine(colour, embed_text("color")) > cosine(colour, embed_text("banana")) + 0.2


def test_word_order_matters_a_little():
    a, b = embed_text("dog bites man"), embed_text("man bites dog")
    assert 0.7 < cosine(a, b) < 1 - 1e-6


def test_case_and_whitespace_insensitive():
    base = embed_text("the cat sat on the mat")
    assert embed_text("The  CAT sat\ton\nthe MAT  ") == base
    assert embed_text("\n  THE cat SAT on the mat") == base


def test_run_embeddings_output_and_usage():
    inputs = ["the cat sat on the mat", "", "Hello, world!", FOX]
    emit = FakeEmitter()
    result = run_embeddings({"input": inputs}, emit)
    assert isinstance(result, Result)
    embeddings = result.output["embeddings"]
    assert len(embeddings) == len(inputs)
    for text, vector in zip(inputs, embeddings, strict=True):
        assert len(vector) == DIM
        assert vector == pytest.approx(embed_text(text), abs=5e-7)
        assert all(round(x, 6) == x for x in vector)
    assert embeddings[1] == [0.0] * DIM
    assert norm(embeddings[0]) == pytest.approx(1.0, abs=1e-4)
    assert result.usage == {"prompt_tokens": 6 + 0 + 2 + 9, "total_tokens": 17}
    # Serialisable as is, with no negative zeros.
    assert "-0.0," not in json.dumps(result.output)


def test_run_embeddings_is_deterministic():
    params = {"input": [FOX, "another text"]}
    assert run_embeddings(params, FakeEmitter()) == run_embeddings(params, FakeEmitter())


def test_backend_runs_run_embeddings():
    backend = HashingEmbeddingBackend({"anything": 1})
    result = backend.run({"input": ["a cat"]}, FakeEmitter())
    assert result.usage == {"prompt_tokens": 2, "total_tokens": 2}
    assert result.output["embeddings"][0] == [round(x, 6) + 0.0 for x in embed_text("a cat")]


def test_cancel_raises_canceled():
    with pytest.raises(Canceled):
        run_embeddings({"input": ["one", "two", "three"]}, FakeEmitter(cancel_at=1))

    emit = FakeEmitter(cancel_at=3)
    with pytest.raises(Canceled):
        run_embeddings({"input": [f"text {i}" for i in range(20)]}, emit)
    assert emit.cancel_checks == 3  # checked before each input, stopped at once
    assert all(p <= 2 / 20 for p in emit.progresses)


@pytest.mark.parametrize("count", [1, 3, 10, 11, 37, 2048])
def test_progress_within_bounds_non_decreasing_and_sparse(count):
    emit = FakeEmitter()
    run_embeddings({"input": [f"text number {i}" for i in range(count)]}, emit)
    progresses = emit.progresses
    assert 1 <= len(progresses) <= 10
    assert all(0 <= p <= 1 for p in progresses)
    assert progresses == sorted(progresses)
    assert progresses[-1] == 1.0
    assert emit.cancel_checks == count


def test_a_thousand_words_is_fast():
    words = FOX.rstrip(".").split() + "pack my box with five dozen liquor jugs".split()
    text = " ".join(f"{words[i % len(words)]}{i % 97}" for i in range(1000))
    assert len(tokenize(text)) == 1000
    start = time.perf_counter()
    embed_text(text)
    # Well under 20 ms on a developer machine; generous here for slow, shared CI runners.
    assert time.perf_counter() - start < 0.5
