"""Model configs: one dataclass with the book's field names, and named presets.

Every architectural choice is a field whose default is what GPT-2 did, so ``GPTConfig()`` is
GPT-2 small and the modern options (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases)
are switched on one field at a time. The config is a typed config like every other in the
project: unknown keys and ill-typed values are rejected by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pipeline.config import ConfigError, config_dataclass, validate


@config_dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2's BPE: 50,000 merges + 256 bytes + <|endoftext|>
    context_length: int = 1024  # the most positions the model ever sees at once
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    # Dropout after embeddings, attention weights and residual branches. GPT-2 used 0.1; single-epoch
    # pretraining on lots of data does better without, fine-tuning on little data may want it back.
    drop_rate: float = 0.0
    qkv_bias: bool = True  # bias on the query/key/value projection
    bias: bool = True  # bias on the other linear layers and the norms
    pos_embedding: Literal["learned", "rope"] = "learned"
    rope_theta: float = 10000.0  # RoPE base: wavelengths run from 2*pi to 2*pi*theta
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    mlp: Literal["gelu", "swiglu"] = "gelu"
    # GPT-2 was trained with GELU's tanh approximation, so loading its weights exactly needs it; "none"
    # is the exact erf form (nanoGPT's choice), a little cheaper on CPU.
    gelu_approximate: Literal["tanh", "none"] = "tanh"
    # MLP width; None means 4*emb_dim for GELU and 8/3*emb_dim (rounded up to 64) for SwiGLU, which
    # keeps the parameter count of the three SwiGLU matrices equal to the two GELU ones.
    hidden_dim: int | None = None
    n_kv_heads: int | None = None  # grouped-query attention; None means one K/V head per query head
    # The embedding/head matrices get rows up to a multiple of this, so the largest matmul has
    # hardware-friendly shapes (50257 -> 50304). The extra rows never appear in logits.
    vocab_multiple: int = 1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "vocab_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError("drop_rate: must be in [0, 1)")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim: {self.emb_dim} is not divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_kv_heads: {self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.pos_embedding == "rope" and self.head_dim % 2:
            raise ValueError(f"pos_embedding: RoPE needs an even head size, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def mlp_hidden_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        if self.mlp == "gelu":
            return 4 * self.emb_dim
        return round_up(8 * self.emb_dim // 3, 64)

    @property
    def padded_vocab_size(self) -> int:
        return round_up(self.vocab_size, self.vocab_multiple)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _gpt2(emb_dim: int, n_heads: int, n_layers: int) -> GPTConfig:
    return GPTConfig(emb_dim=emb_dim, n_heads=n_heads, n_layers=n_layers, vocab_multiple=128)


def _llama(emb_dim: int, n_heads: int, n_kv_heads: int, n_layers: int, **extra: Any) -> GPTConfig:
    """GPT-2's skeleton with the Llama-era parts: RoPE, RMSNorm, SwiGLU, GQA, no biases.

    The LM head stays tied to the token embedding, as in small modern models (Llama 3.2 1B, SmolLM).
    """
    return GPTConfig(
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_layers=n_layers,
        qkv_bias=False,
        bias=False,
        pos_embedding="rope",
        norm="rmsnorm",
        mlp="swiglu",
        vocab_multiple=128,
        **extra,
    )


PRESETS: dict[str, GPTConfig] = {
    # GPT-2 as released (Radford et al. 2019); parameter counts with the unpadded vocab.
    "gpt2-124m": _gpt2(emb_dim=768, n_heads=12, n_layers=12),
    "gpt2-355m": _gpt2(emb_dim=1024, n_heads=16, n_layers=24),
    "gpt2-774m": _gpt2(emb_dim=1280, n_heads=20, n_layers=36),
    "gpt2-1558m": _gpt2(emb_dim=1600, n_heads=25, n_layers=48),
    # Unit tests: ~0.5M parameters, a forward pass in milliseconds.
    "tiny": GPTConfig(vocab_size=512, context_length=128, emb_dim=128, n_heads=4, n_layers=2),
    # The CPU demo: GPT-2's tokenizer, ~11M parameters (most in the embedding), trains on
    # tinyshakespeare in minutes on two cores.
    "small-cpu": GPTConfig(context_length=256, emb_dim=192, n_heads=6, n_layers=4, vocab_multiple=128),
    # Llama-style family, sized like their GPT-2 counterparts.
    "llama-tiny": _llama(emb_dim=128, n_heads=4, n_kv_heads=2, n_layers=2, vocab_size=512, context_length=128),
    "llama-124m": _llama(emb_dim=768, n_heads=12, n_kv_heads=4, n_layers=12, context_length=2048),
    "llama-355m": _llama(emb_dim=1024, n_heads=16, n_kv_heads=4, n_layers=24, context_length=2048),
}


def preset(name: str, **overrides: Any) -> GPTConfig:
    """A named preset with some fields changed, e.g. ``preset("gpt2-124m", context_length=256)``.

    Unknown names, unknown fields and bad values raise ``ConfigError`` naming the culprit.
    """
    if name not in PRESETS:
        raise ConfigError(f"model preset {name!r} is unknown; choose one of {', '.join(PRESETS)}")
    return validate(GPTConfig, {**PRESETS[name].to_dict(), **overrides})
