"""Writes a tiny random-weight Llama that vLLM can serve, all offline and deterministic.

    .cic/vllm-env/bin/python tests/vllm/make_tiny_model.py OUT_DIR

The model is real in every way but its weights: a ``LlamaForCausalLM`` of two layers
(head_dim 32, the least vLLM's CPU attention takes), a byte-level BPE tokenizer trained
here on the text below, and a chat template in ``tokenizer_config.json``. It answers
nonsense, quickly. It needs ``torch``, ``transformers`` and ``tokenizers``: run it with the
vLLM environment's Python (``deploy/vllm/setup-env.sh``), not the workspace's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB_SIZE = 512
CORPUS = """\
CrossLogic Inference Cloud serves large language models on spot GPUs across clouds.
A node agent supervises the inference engine, announces the node when the engine
answers, and sends a heartbeat with the engine's load every few seconds. When the cloud
warns that it will take the machine away, the agent drains the engine: no new requests,
and the requests in flight get until the deadline to finish. The scheduler places
replicas of each deployment on the cheapest capacity that is healthy, and the gateway
routes each chat completion to the replica with the most room in its key-value cache.
The user asks a question; the assistant answers it, one token at a time, streamed or
not. Hello, how are you today? I am fine, thank you. What is the capital of France?
Paris is the capital of France. Count from one to ten: one two three four five six
seven eight nine ten. The quick brown fox jumps over the lazy dog.
"""


def train_tokenizer() -> object:
    """A byte-level BPE tokenizer trained on ``CORPUS`` (any text encodes)."""
    from tokenizers import (  # type: ignore[import-not-found, unused-ignore]
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    return tokenizer


def make(out: Path) -> None:
    import torch  # type: ignore[import-not-found, unused-ignore]
    from transformers import (  # type: ignore[import-not-found, unused-ignore]
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    # transformers may keep the template in chat_template.jinja; put it in the config.
    config_file = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    config_file.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim = 64 / 2 = 32
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="bfloat16",  # what vLLM runs on a CPU that has it; it casts otherwise
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    print(f"tiny llama: {sum(p.numel() for p in model.parameters())} parameters,"
          f" vocabulary of {len(tokenizer)}, in {out}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} OUT_DIR")
    make(Path(sys.argv[1]))
