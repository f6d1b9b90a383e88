"""What the simulator says: seeded words, cut at stop strings, and seeded embedding vectors."""

from __future__ import annotations

import base64
import math
import random
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["VOCABULARY", "Answer", "apply_stop", "embed", "encode_vector", "generate", "key_for"]

VOCABULARY = (
    "the", "spot", "node", "answered", "while", "scheduler", "kept", "every", "replica",
    "warm", "and", "gateway", "routed", "each", "request", "to", "least", "loaded", "engine",
    "a", "cloud", "zone", "price", "dropped", "so", "model", "moved", "quickly", "before",
    "notice", "came", "tokens", "streamed", "back", "from", "GPU", "cheap", "capacity",
    "returned", "later", "than", "planned", "but", "nothing", "failed", "today", "again",
    "fast",
)  # fmt: skip
"""Distinct words: the ``i``-th choice starts with its own, so ``n`` choices never agree."""


def key_for(sim_seed: int, request_seed: int | None) -> int:
    """What an answer depends on besides its context: the simulator's and the request's
    seeds (sampling settings such as the temperature change nothing)."""
    return zlib.crc32(f"{sim_seed}|{request_seed}|".encode())


def generate(
    key: int, context: str, count: int, index: int = 0, *, leading_space: bool = False
) -> list[str]:
    """``count`` tokens (a word and a space each) of choice ``index``, continuing ``context``.

    Chat tokens are a word then a space; text-completion tokens a space then a word, as a
    BPE tokeniser's are, so that a prompt's continuation reads (and counts) as words.

    Each token is a function of ``key`` and of all the text before it, the context's and
    the answer's own, as a greedy language model's would be. So the same request always
    gets the same answer, a shorter answer is a prefix of a longer one, and an answer cut
    short and asked again with its text appended to the context (a resumed stream) goes
    on exactly as the whole one would have. Choice ``index`` starts with a word of its
    own, so ``n`` choices never agree.
    """
    state = zlib.crc32(context.encode(), key)  # CRC-32 runs on: crc(a + b) = crc(b, crc(a))
    tokens: list[str] = []
    for step in range(count):
        pick = (state >> 8) % len(VOCABULARY)
        word = VOCABULARY[(pick + index) % len(VOCABULARY) if step == 0 else pick]
        token = f" {word}" if leading_space else f"{word} "
        tokens.append(token)
        state = zlib.crc32(token.encode(), state)
    return tokens


@dataclass(frozen=True)
class Answer:
    """One choice as sent: its text token by token, the tokens generated, why it ended.

    ``pieces`` may be fewer than ``generated``: the tokens that make up a stop string are
    generated, then withheld, as vLLM does.
    """

    pieces: Sequence[str]
    generated: int
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def apply_stop(tokens: Sequence[str], stops: Sequence[str]) -> Answer:
    """``tokens`` up to the first stop string, which is left out (finish reason ``stop``).

    The stop string completed first (its end earliest) wins, as an engine checks after each
    token; without a match every token is kept (finish reason ``length``).
    """
    text = "".join(tokens)
    best: tuple[int, int] | None = None  # (end, start) of the winning match
    for stop in stops:
        start = text.find(stop) if stop else -1
        if start >= 0 and (best is None or (start + len(stop), start) < best):
            best = (start + len(stop), start)
    if best is None:
        return Answer(tokens, len(tokens), "length")
    end, start = best
    pieces: list[str] = []
    generated = offset = 0
    for token in tokens:
        if offset >= end:
            break
        generated += 1
        if offset < start:
            pieces.append(token[: start - offset])
        offset += len(token)
    return Answer(pieces, generated, "stop")


def embed(text: str, dimensions: int, seed: int = 0) -> list[float]:
    """A unit vector that depends only on ``text`` and ``seed``.

    Fewer dimensions give the first ones of the longer vector, normalised again (as a
    Matryoshka model's ``dimensions`` does).
    """
    rng = random.Random(f"{seed}|{text}")
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


def encode_vector(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    """As the request asked: a list of floats, or base64 of little-endian float32s."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)
