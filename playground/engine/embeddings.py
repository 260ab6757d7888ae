"""The built-in offline embedding model: feature hashing of word and character n-grams.

A text becomes a bag of features: its words, its adjacent word pairs, and the character 3- to
5-grams of each word padded with boundary markers ("<cat>" gives "<ca", "cat", "at>", "<cat",
"cat>", "<cat>"), all taken from the lowercased text. Each distinct feature is hashed with
BLAKE2b (stable across runs, processes and machines, unlike Python's salted ``hash()``) to one of
DIM slots and a sign, and adds its sublinear term frequency ``1 + log(count)`` there. Each kind
of feature gets a vector of its own, scaled to unit length and then weighted (character n-grams
1, words 0.5, word pairs 0.25); their sum, L2-normalised, is the embedding. So texts sharing words,
or parts of words, have a higher cosine similarity than unrelated ones; a text without words
(empty, whitespace or punctuation only) embeds as all zeros.

Pure Python and the standard library. The n-grams of each word and the slot of each feature are
cached, so a text of a thousand words takes a few milliseconds.
"""

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from itertools import chain, pairwise
from typing import Any

from .base import Canceled, Emitter, Result

DIM = 256
MODEL_NAME = "Hashing embeddings (word and character n-grams)"

# Words: runs of letters and digits, keeping inner apostrophes and hyphens ("don't",
# "state-of-the-art"). Punctuation and other symbols are neither counted nor embedded.
_WORD_RE = re.compile(r"\w+(?:['’-]\w+)*")
_CHAR_NGRAMS = (3, 4, 5)
# The relative weight of each kind of feature in the final vector. Character n-grams weigh most:
# on pairs of paragraphs from CPython's help topics (same topic or not) they rank best, and they
# make near spellings ("colour"/"color", "run"/"running") similar; words and word pairs add the
# exact matches and word order.
_WORD_WEIGHT = 0.5
_BIGRAM_WEIGHT = 0.25
_CHAR_WEIGHT = 1.0
# Each kind of feature hashes under its own BLAKE2b personalisation, so a word, a word pair and a
# character n-gram never share a feature; changing the scheme's version changes every slot.
_PERSON = {kind: f"pg-embed-v1-{kind}".encode() for kind in ("w", "b", "c")}


def tokenize(text: str) -> list[str]:
    """The lowercased words of text, as embedded and as counted for usage."""
    return _WORD_RE.findall(text.lower())


def _slot_function(kind: str, cache_size: int) -> Callable[[str], int]:
    """A cached map from a feature of one kind to its signed slot, from a stable hash.

    The slot is i for +1 in dimension i and DIM + i for -1 (so accumulating needs no branch).
    """
    base = hashlib.blake2b(digest_size=8, person=_PERSON[kind])

    @lru_cache(maxsize=cache_size)
    def slot(feature: str) -> int:
        h = base.copy()
        h.update(feature.encode())
        value = int.from_bytes(h.digest(), "little")
        return value % DIM + (DIM if value >> 63 else 0)

    return slot


_word_slot = _slot_function("w", 1 << 15)
_bigram_slot = _slot_function("b", 1 << 15)
_char_slot = _slot_function("c", 1 << 16)


@lru_cache(maxsize=1 << 14)
def _char_grams(word: str) -> tuple[str, ...]:
    """The character 3- to 5-grams of a word padded with boundary markers."""
    padded = f"<{word}>"
    size = len(padded)
    return tuple(padded[i : i + n] for n in _CHAR_NGRAMS for i in range(size - n + 1))


@lru_cache(maxsize=256)
def _tf(count: int) -> float:
    """Sublinear term frequency."""
    return 1.0 + math.log(count)


def _kind_vector(counts: Counter[str], slot: Callable[[str], int], weight: float) -> list[float]:
    """The signed-hash vector of one kind of feature, scaled to length weight."""
    acc = [0.0] * (2 * DIM)
    for s, tf in zip(map(slot, counts), map(_tf, counts.values()), strict=True):
        acc[s] += tf
    vec = [p - n for p, n in zip(acc[:DIM], acc[DIM:], strict=True)]
    norm = math.sqrt(math.fsum(x * x for x in vec))
    if norm == 0.0:
        return vec
    scale = weight / norm
    return [x * scale for x in vec]


def _embed_words(words: list[str]) -> list[float]:
    """The embedding of a text from its words (see the module's docstring)."""
    if not words:
        return [0.0] * DIM
    parts = (
        _kind_vector(Counter(words), _word_slot, _WORD_WEIGHT),
        _kind_vector(Counter(map(" ".join, pairwise(words))), _bigram_slot, _BIGRAM_WEIGHT),
        _kind_vector(
            Counter(chain.from_iterable(map(_char_grams, words))), _char_slot, _CHAR_WEIGHT
        ),
    )
    vec = [a + b + c for a, b, c in zip(*parts, strict=True)]
    norm = math.sqrt(math.fsum(x * x for x in vec))
    return [x / norm for x in vec]


def embed_text(text: str) -> list[float]:
    """The DIM-dimensional unit vector of text (all zeros when it has no words)."""
    return _embed_words(tokenize(text))


def run_embeddings(params: dict[str, Any], emit: Emitter) -> Result:
    """Embed each of the validated params' input strings, in order."""
    inputs = params["input"]
    if isinstance(inputs, str):
        inputs = [inputs]
    total = len(inputs)
    embeddings: list[list[float]] = []
    prompt_tokens = 0
    decile = 0
    for i, text in enumerate(inputs):
        if emit.canceled():
            raise Canceled()
        words = tokenize(text)
        prompt_tokens += len(words)
        embeddings.append([round(x, 6) + 0.0 for x in _embed_words(words)])
        done = i + 1
        if done * 10 // total > decile:
            decile = done * 10 // total
            emit.progress(done / total)
    return Result(
        output={"embeddings": embeddings},
        usage={"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    )


class HashingEmbeddingBackend:
    """The catalogue backend for the built-in hashing embedding model."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        return run_embeddings(params, emit)
