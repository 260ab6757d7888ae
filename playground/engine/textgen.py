"""The built-in offline text model: a word-level trigram LM trained on CPython's help topics."""

import math
import random
import re
import threading
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import accumulate, pairwise
from typing import Any

from .base import Canceled, Emitter, Result

MODEL_NAME = "Trigram LM (Python help topics)"

# Quoted spans ("len(s)", “end”) are kept whole: the corpus quotes code, and splitting it
# would leave the model to balance quote marks, which an n-gram model does badly.
TOKEN_RE = re.compile(r'"[^"\n]{1,40}"|“[^”\n]{1,40}”|\w+(?:[-.’\']\w+)*(?:\(\))?|[^\w\s]')
NO_SPACE_BEFORE = frozenset(",.;:)]}?!%")
NO_SPACE_AFTER = frozenset("([{")

_UNDERLINE_RE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$", re.MULTILINE)
_MARKER_RE = re.compile(r"^(?:\d+\.|\*|-|\(\d+\))\s+")
_EMPHASIS_RE = re.compile(r"\*{1,2}([^*\s][^*]*?)\*{1,2}")
_FOOTNOTE_RE = re.compile(r"\s*\[\d+\]")
_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_SENTENCE_END_RE = re.compile(r"[.?!][)\"”]?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_prose(text: str) -> bool:
    """True for a paragraph of sentences, not code, grammar, tables or headings."""
    if ">>>" in text or "::=" in text or "|" in text:
        return False
    words = _WORD_RE.findall(text)
    return len(words) >= 4 and sum(map(len, words)) >= 0.6 * len(text.replace(" ", ""))


def _prose_paragraphs(doc: str) -> Iterator[str]:
    """Yield the prose paragraphs of one reStructuredText-ish help topic, whitespace-normalised."""
    code_indent = None  # set while inside an indented block introduced by "...:"
    prev_colon, prev_indent = False, 0
    for para in re.split(r"\n\s*\n", doc):
        lines = [line for line in para.split("\n") if line.strip()]
        if not lines:
            continue
        indent = _indent(lines[0])
        if code_indent is not None and indent >= code_indent:
            continue
        code_indent = None
        text = " ".join(line.strip() for line in lines)
        # A deeper block is code when introduced by "...:" or not made of sentences; "::" is
        # rendered away in these topics, so the colon alone misses some ("is equivalent to").
        if indent > prev_indent and (prev_colon or not _SENTENCE_END_RE.search(text)):
            code_indent = indent
            continue
        prev_colon = text.endswith(":")
        # Body indent: where a list item's continuation lines sit, so its nested prose isn't code.
        prev_indent = _indent(lines[1]) if len(lines) > 1 else indent
        text = _MARKER_RE.sub("", text)
        if not _UNDERLINE_RE.search(para) and _is_prose(text):
            text = _FOOTNOTE_RE.sub("", _EMPHASIS_RE.sub(r"\1", text))
            yield " ".join(text.split())


def _corpus() -> str:
    """The training text: the prose of every help topic that ships with CPython."""
    from pydoc_data.topics import topics

    return "\n".join(p for key in sorted(topics) for p in _prose_paragraphs(topics[key]))


class _Dist:
    """Successors of one context, grouped by equal count (few groups even for many words)."""

    __slots__ = ("counts", "cum", "groups")

    def __init__(self, successors: dict[int, int]):
        by_count: dict[int, list[int]] = defaultdict(list)
        for token, n in successors.items():
            by_count[n].append(token)
        self.counts = tuple(sorted(by_count, reverse=True))
        self.groups = tuple(tuple(by_count[n]) for n in self.counts)
        # Cumulative weights at temperature 1 and no nucleus cut: the common case needs no maths.
        self.cum = tuple(
            accumulate(n * len(g) for n, g in zip(self.counts, self.groups, strict=True))
        )

    def sample(self, rng: random.Random, temperature: float, top_p: float) -> int:
        """Draw a successor from counts**(1/temperature), cut to the top_p nucleus."""
        if temperature == 0:
            return self.groups[0][0]
        counts, groups = self.counts, self.groups
        if temperature == 1 and top_p >= 1:
            each, cum = counts, self.cum
        else:
            # Scaled by the top count so that small temperatures can't overflow.
            top = counts[0]
            each = [(n / top) ** (1 / temperature) for n in counts]
            cum, total = [], 0.0
            for w, group in zip(each, groups, strict=True):
                total += w * len(group)
                cum.append(total)
            if top_p < 1:
                # Keep whole groups up to the mass, then just enough members of the last one.
                target = top_p * total
                last = bisect_right(cum, target * (1 - 1e-12))
                if last < len(cum):
                    before = cum[last - 1] if last else 0.0
                    need = max(1, math.ceil((target - before) / each[last] - 1e-9))
                    need = min(need, len(groups[last]))
                    groups = [*groups[:last], groups[last][:need]]
                    cum = [*cum[:last], before + need * each[last]]
        r = rng.random() * cum[-1]
        i = min(bisect_right(cum, r), len(cum) - 1)
        before = cum[i - 1] if i else 0
        group = groups[i]
        return group[min(int((r - before) / each[i]), len(group) - 1)]


class TrigramLM:
    """A word-level trigram model with backoff to bigrams and unigrams (no smoothing)."""

    def __init__(self, text: str):
        self.words: list[str] = []
        self.ids: dict[str, int] = {}
        stream = [self._id(tok) for tok in self.tokenize(text)]
        self.n_tokens = len(stream)
        self.unigram = _Dist(Counter(stream))
        self.bigram = self._contexts(Counter(pairwise(stream)))
        self.trigram = self._contexts(Counter(zip(pairwise(stream), stream[2:], strict=False)))
        self._no_space_before = {self.ids[t] for t in NO_SPACE_BEFORE if t in self.ids}
        self._no_space_after = {self.ids[t] for t in NO_SPACE_AFTER if t in self.ids}

    def _id(self, token: str) -> int:
        i = self.ids.get(token)
        if i is None:
            i = self.ids[token] = len(self.words)
            self.words.append(token)
        return i

    @staticmethod
    def _contexts(ngrams: Counter) -> dict:
        by_context: dict[Any, dict[int, int]] = defaultdict(dict)
        for (context, token), n in ngrams.items():
            by_context[context][token] = n
        # Most contexts have one or two successors, so identical distributions are shared.
        shared: dict[tuple, _Dist] = {}
        contexts = {}
        for context, succ in by_context.items():
            key = tuple(succ.items())
            dist = shared.get(key)
            if dist is None:
                dist = shared[key] = _Dist(succ)
            contexts[context] = dist
        return contexts

    def tokenize(self, text: str) -> list[str]:
        """Split text into words, quoted spans and single punctuation marks."""
        return TOKEN_RE.findall(text)

    def count_tokens(self, text: str) -> int:
        """Number of tokens the model sees in text."""
        return len(self.tokenize(text))

    def _dist(self, prev2: int | None, prev1: int | None) -> _Dist:
        if prev1 is not None:
            if prev2 is not None:
                dist = self.trigram.get((prev2, prev1))
                if dist is not None:
                    return dist
            dist = self.bigram.get(prev1)
            if dist is not None:
                return dist
        return self.unigram

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: list[str] = (),
    ) -> Iterator[str]:
        """Yield up to max_tokens text pieces continuing prompt; never yields a stop string."""
        if max_tokens < 0 or temperature < 0 or not 0 < top_p <= 1:
            raise ValueError("need max_tokens >= 0, temperature >= 0 and 0 < top_p <= 1")
        rng = random.Random(seed)
        stops = [s for s in stop if s]
        tokens = self.tokenize(prompt)
        if tokens:
            prev2, prev1 = [None, *(self.ids.get(t) for t in tokens[-2:])][-2:]
        else:
            prev2, prev1 = None, self.ids.get(".")  # what follows a full stop starts a sentence
        space_ok = bool(tokens) and not prompt[-1].isspace()

        held: list[str] = []  # pieces that might be the start of a stop string
        for _ in range(max_tokens):
            token = self._dist(prev2, prev1).sample(rng, temperature, top_p)
            space = space_ok and token not in self._no_space_before
            space = space and prev1 not in self._no_space_after
            piece = " " + self.words[token] if space else self.words[token]
            prev2, prev1, space_ok = prev1, token, True
            if not stops:
                yield piece
                continue
            held.append(piece)
            pending = "".join(held)
            # Any partial match was held back, so a full one can only start inside pending.
            hits = [pending.find(s) for s in stops]
            hit = min((h for h in hits if h >= 0), default=-1)
            if hit >= 0:
                yield from _pieces_before(held, hit)
                return
            keep = max(_prefix_overlap(pending, s) for s in stops)
            ready = _pieces_before(held, len(pending) - keep)
            held = held[len(ready) :]
            yield from ready
        yield from held


def _pieces_before(pieces: list[str], end: int) -> list[str]:
    """The leading pieces that fit entirely in the first end characters."""
    ready, pos = [], 0
    for piece in pieces:
        pos += len(piece)
        if pos > end:
            break
        ready.append(piece)
    return ready


def _prefix_overlap(text: str, stop: str) -> int:
    """Length of the longest tail of text that is a proper prefix of stop."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


_model: TrigramLM | None = None
_lock = threading.Lock()


def get_model() -> TrigramLM:
    """The shared model, trained on first use."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = TrigramLM(_corpus())
    return _model


def render_chat(messages: list[dict]) -> str:
    """Render chat messages as a transcript that ends where the assistant's reply begins."""
    lines = [f"{m['role'].capitalize()}: {' '.join(str(m['content']).split())}" for m in messages]
    # The trailing space makes the first generated word start without one.
    return "\n".join([*lines, "Assistant: "])


def run_text(params: dict[str, Any], emit: Emitter) -> Result:
    """Generate text for validated params, streaming each piece through emit."""
    model = get_model()
    prompt = params.get("prompt")
    if prompt is None:
        prompt = render_chat(params["messages"])
    max_tokens = params["max_tokens"]
    pieces: list[str] = []
    decile = 0
    generated = model.generate(
        prompt,
        max_tokens=max_tokens,
        temperature=params.get("temperature", 1.0),
        top_p=params.get("top_p", 1.0),
        seed=params.get("seed"),
        stop=params.get("stop") or [],
    )
    for piece in generated:
        if len(pieces) % 8 == 0 and emit.canceled():
            raise Canceled()
        emit.delta(piece)
        pieces.append(piece)
        if len(pieces) * 10 // max_tokens > decile:
            decile = len(pieces) * 10 // max_tokens
            emit.progress(len(pieces) / max_tokens)
    prompt_tokens = model.count_tokens(prompt)
    return Result(
        output={
            "text": "".join(pieces),
            # The model never ends on its own, so falling short of max_tokens means a stop hit.
            "finish_reason": "length" if len(pieces) == max_tokens else "stop",
        },
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        },
    )


class TrigramBackend:
    """The catalogue backend for the built-in trigram model.

    Config `token_delay` (seconds per token) makes it as slow as a real model, for demos, load
    tests and the engine's own tests (cancel, time limits, killed workers).
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        delay = float(self.config.get("token_delay") or 0)
        return run_text(params, _Paced(emit, delay) if delay > 0 else emit)


class _Paced:
    """An emitter that waits `delay` before each token and checks for a cancel after it."""

    def __init__(self, emit: Emitter, delay: float):
        self.emit = emit
        self.delay = delay

    def delta(self, text: str) -> None:
        time.sleep(self.delay)
        if self.emit.canceled():
            raise Canceled()
        self.emit.delta(text)

    def __getattr__(self, name):
        return getattr(self.emit, name)
