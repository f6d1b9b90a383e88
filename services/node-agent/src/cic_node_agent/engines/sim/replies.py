"""Response bodies, shaped as vLLM's: whole answers, stream chunks, embeddings, errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cic_node_agent.engines.sim.protocol import error_body, new_id, now
from cic_node_agent.engines.sim.text import Answer

__all__ = ["ERROR_KINDS", "Reply", "embedding_body", "error_for"]

ERROR_KINDS = {404: "NotFoundError", 500: "InternalServerError"}
"""The ``type`` of an error body by status; any other status is a ``BadRequestError``."""


def error_for(status: int, message: str) -> dict[str, Any]:
    return error_body(status, message, ERROR_KINDS.get(status, "BadRequestError"))


@dataclass(frozen=True)
class Reply:
    """One request's choices and how to wrap them as a chat or a text completion."""

    chat: bool
    head: dict[str, Any]
    answers: Sequence[Answer]
    prompt: int

    @classmethod
    def new(cls, chat: bool, model: str, answers: Sequence[Answer], prompt: int) -> Reply:
        head = {"id": new_id("chatcmpl" if chat else "cmpl"), "created": now(), "model": model}
        return cls(chat, head, answers, prompt)

    @property
    def kind(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    @property
    def generated(self) -> int:
        """Tokens generated over every choice, stop strings included."""
        return sum(answer.generated for answer in self.answers)

    @property
    def steps(self) -> int:
        """Decode steps: the choices are generated together, the longest sets the pace."""
        return max(answer.generated for answer in self.answers)

    @property
    def finish_reason(self) -> str:
        """The request's, for the metrics: its first choice's."""
        return self.answers[0].finish_reason

    def usage(self, generated: int | None = None) -> dict[str, int]:
        """The request's usage; with ``generated``, as it stands after that many tokens."""
        generated = self.generated if generated is None else generated
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": generated,
            "total_tokens": self.prompt + generated,
        }

    def whole(self) -> dict[str, Any]:
        choices = []
        for index, answer in enumerate(self.answers):
            choice: dict[str, Any] = {"index": index}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": answer.text}
            else:
                choice["text"] = answer.text
            choice.update(logprobs=None, finish_reason=answer.finish_reason)
            choices.append(choice)
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self.head, "object": kind, "choices": choices, "usage": self.usage()}

    def chunk(
        self, index: int, content: str | None, finish: str | None = None, role: bool = False
    ) -> dict[str, Any]:
        """Choice ``index``'s chunk; ``None`` content is its closing chunk (an empty delta)."""
        choice: dict[str, Any] = {"index": index}
        if self.chat:
            choice["delta"] = {} if content is None else {"content": content}
            if role:
                choice["delta"] = {"role": "assistant", **choice["delta"]}
        else:
            choice["text"] = content or ""
        choice.update(logprobs=None, finish_reason=finish)
        return {**self.head, "object": self.kind, "choices": [choice]}

    def usage_chunk(self) -> dict[str, Any]:
        """The last chunk when ``stream_options.include_usage`` is set: no choices, the usage."""
        return {**self.head, "object": self.kind, "choices": [], "usage": self.usage()}


def embedding_body(
    model: str, vectors: Sequence[list[float] | str], prompt_tokens: int
) -> dict[str, Any]:
    """``/v1/embeddings``' answer: one vector (floats or base64) per input, in order."""
    data = [
        {"object": "embedding", "index": index, "embedding": vector}
        for index, vector in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0}
    return {
        "id": new_id("embd"),
        "object": "list",
        "created": now(),
        "model": model,
        "data": data,
        "usage": usage,
    }
