"""GPT: a decoder-only transformer, readable top to bottom.

    input ids -> token embedding (+ learned positions) -> dropout
              -> n_layers x Block:  x = x + attention(norm(x));  x = x + mlp(norm(x))
              -> final norm -> LM head (the token embedding, transposed) -> logits

With the default ``GPTConfig`` this is GPT-2 (Radford et al. 2019), weight for weight: it loads
OpenAI's checkpoints (see ``checkpoint.py``). The config switches on the modern parts one at a time:
rotary positions, RMSNorm, a SwiGLU MLP, grouped-query attention, no biases.

The model is plain PyTorch: no Ray, no MLflow, no parallelism. Training code wraps it from outside
(DDP/FSDP, ``torch.compile``, autocast). Every projection is a plain ``nn.Linear`` with a clear
name (``qkv_proj``, ``out_proj``, ``up_proj``, ``gate_proj``, ``down_proj``) so LoRA can wrap them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import GPTConfig


class KVCache:
    """Keys and values of every position seen so far, preallocated for ``max_length`` positions.

    Generation runs the prompt once ("prefill"), then one new token per step: each step only
    computes the new token's query, key and value and attends to the cached ones, instead of
    re-running the whole sequence. Each layer appends its chunk; the model then ``advance``s once.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        max_length: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        shape = (config.n_layers, batch_size, config.kv_heads, max_length, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_length = max_length
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this chunk's (B, kv_heads, T, head_dim) keys and values; return all of them so far."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache is full: {end} positions > max_length={self.max_length}")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n_positions: int) -> None:
        self.length += n_positions


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al. 2021): rotate each pair of query/key channels by an angle proportional to
    the position, so that a query-key dot product depends only on how far apart they are."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # Derived from the config, so not saved in checkpoints.
        self.register_buffer("cos", torch.empty(config.context_length, config.head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(config.context_length, config.head_dim // 2), persistent=False)
        self.init_tables()

    def init_tables(self) -> None:
        half = self.config.head_dim // 2
        device = self.cos.device
        inv_freq = self.config.rope_theta ** (-torch.arange(half, dtype=torch.float32, device=device) / half)
        angles = torch.outer(torch.arange(self.config.context_length, dtype=torch.float32, device=device), inv_freq)
        self.cos.copy_(angles.cos())
        self.sin.copy_(angles.sin())

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B or 1, T) positions -> cos, sin of shape (B or 1, 1, T, head_dim / 2), broadcast over heads."""
        return self.cos[position_ids].unsqueeze(1), self.sin[position_ids].unsqueeze(1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # Channel i is paired with channel i + head_dim/2 (the GPT-NeoX / Hugging Face Llama layout).
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    """softmax(QKᵀ/√d_k + M)V over n_heads heads, with M hiding the future.

    ``scaled_dot_product_attention`` computes it with the flash or memory-efficient kernel where
    the hardware has one, never materialising the (T, T) attention matrix. With grouped-query
    attention, n_heads queries share n_kv_heads keys/values: a smaller KV cache at little cost.
    """

    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.n_heads, self.kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        # One matmul for queries, keys and values together: faster than three small ones.
        qkv_dim = (self.n_heads + 2 * self.kv_heads) * self.head_dim
        self.qkv_proj = nn.Linear(config.emb_dim, qkv_dim, bias=config.qkv_bias)
        self.out_proj = nn.Linear(config.emb_dim, config.emb_dim, bias=config.bias)
        self.attn_drop_rate = config.drop_rate
        self.resid_drop = nn.Dropout(config.drop_rate)

    def forward(
        self,
        x: torch.Tensor,
        rotation: tuple[torch.Tensor, torch.Tensor] | None,
        attn_mask: torch.Tensor | None,
        kv_cache: KVCache | None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q_dim, kv_dim = self.n_heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_dim, kv_dim, kv_dim], dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if rotation is not None:
            q, k = apply_rope(q, *rotation), apply_rope(k, *rotation)
        if kv_cache is not None:
            k, v = kv_cache.append(self.layer_index, k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=attn_mask is None,  # the fast path: one causal chunk, no past, no padding
            dropout_p=self.attn_drop_rate if self.training else 0.0,
            enable_gqa=self.kv_heads != self.n_heads,
        )
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_drop(self.out_proj(y))


class GeluMLP(nn.Module):
    """GPT-2's feed-forward: widen 4x, GELU, narrow."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gelu_approximate = config.gelu_approximate
        self.up_proj = nn.Linear(config.emb_dim, config.mlp_hidden_dim, bias=config.bias)
        self.down_proj = nn.Linear(config.mlp_hidden_dim, config.emb_dim, bias=config.bias)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down_proj(F.gelu(self.up_proj(x), approximate=self.gelu_approximate)))


class SwiGLUMLP(nn.Module):
    """Shazeer (2020), used by Llama: a SiLU-activated gate multiplies a second projection."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.emb_dim, config.mlp_hidden_dim, bias=config.bias)
        self.up_proj = nn.Linear(config.emb_dim, config.mlp_hidden_dim, bias=config.bias)
        self.down_proj = nn.Linear(config.mlp_hidden_dim, config.emb_dim, bias=config.bias)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":  # no mean subtraction, no bias: cheaper, and as good (Zhang & Sennrich 2019)
        return nn.RMSNorm(config.emb_dim, eps=config.norm_eps)
    return nn.LayerNorm(config.emb_dim, eps=config.norm_eps, bias=config.bias)


class Block(nn.Module):
    """Pre-LN: normalise the input of each branch, not the residual stream, so the stream carries an
    unnormalised sum from the embedding to the head and deep stacks train without warm-up tricks."""

    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_index)
        self.norm2 = make_norm(config)
        self.mlp = SwiGLUMLP(config) if config.mlp == "swiglu" else GeluMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rotation, attn_mask, kv_cache)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.padded_vocab_size, config.emb_dim)
        learned_positions = config.pos_embedding == "learned"
        self.pos_emb = nn.Embedding(config.context_length, config.emb_dim) if learned_positions else None
        self.rope = RotaryEmbedding(config) if config.pos_embedding == "rope" else None
        self.drop_emb = nn.Dropout(config.drop_rate)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.final_norm = make_norm(config)
        self.out_head = nn.Linear(config.emb_dim, config.padded_vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017, as GPT-2): the matrix that scores each token as the next one
        # is the one that embeds it. It saves vocab x emb_dim parameters (38M at 124M) at no loss.
        self.out_head.weight = self.tok_emb.weight
        self.register_buffer("vocab_padding", None, persistent=False)  # set by init_buffers
        self.init_buffers()
        self.init_weights()

    def init_buffers(self) -> None:
        """Compute the buffers derived from the config. ``__init__`` calls it, and FSDP again after
        building the model on the ``meta`` device (no memory), sharding it and materialising it."""
        config = self.config
        # The padding rows only give the head's matmul hardware-friendly shapes. A constant -inf
        # added to their logits (free inside the matmul on GPU) gives them zero probability: never
        # sampled, no part of the loss, no gradient.
        if config.padded_vocab_size > config.vocab_size:
            device = self.tok_emb.weight.device
            padding = torch.zeros(config.padded_vocab_size, device=device)
            padding[config.vocab_size :] = float("-inf")
            self.vocab_padding = padding
        if self.rope is not None:
            self.rope.init_tables()

    def init_weights(self) -> None:
        """Draw every parameter's initial value. Under FSDP each worker draws only its shards: no
        worker ever holds the whole randomly initialised model."""
        self.apply(self._init_weights)
        # GPT-2's init: each block adds two branches onto the residual stream, so the variance of the
        # stream would grow with depth; shrinking the branches' last projections by 1/sqrt(2*n_layers)
        # keeps it about constant.
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down_proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):  # gain 1, bias 0
            module.reset_parameters()

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids -> (B, T, emb_dim) final-normed hidden states.

        ``position_ids`` (B, T): each token's position; by default the next T positions after the
        cache, the same for every row. Left-padded batches give each row its own.
        ``attention_mask`` (B, past + T): 1 for real tokens, 0 for padding, including the cached past.
        ``kv_cache``: keys and values of the past positions; this chunk's are appended to it.
        """
        B, T = input_ids.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + T > self.config.context_length:
            raise ValueError(f"{past + T} positions exceed context_length={self.config.context_length}")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)

        x, rotation = self.embed(input_ids, position_ids)
        attn_mask = build_attention_mask(T, past, attention_mask, input_ids.device)

        for block in self.blocks:
            x = block(x, rotation, attn_mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.final_norm(x)

    def embed(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Token ids -> the residual stream's input, and the rotary angles the blocks apply (None
        with learned positions, which are added here instead)."""
        x = self.tok_emb(input_ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        rotation = self.rope(position_ids) if self.rope is not None else None
        return self.drop_emb(x), rotation

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states -> next-token logits over the real vocabulary (B, T, vocab_size)."""
        return self._padded_logits(hidden)[..., : self.config.vocab_size]

    def _padded_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        padding = self.vocab_padding
        # A buffer is not a parameter: FSDP's mixed-precision policy casts only parameters, so a
        # bfloat16 forward would meet a float32 bias here.
        return F.linear(hidden, self.out_head.weight, padding if padding is None else padding.to(hidden.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (logits (B, T, vocab_size), mean cross-entropy over targets != -100, or None)."""
        hidden = self.hidden_states(
            input_ids, position_ids=position_ids, attention_mask=attention_mask, kv_cache=kv_cache
        )
        logits = self._padded_logits(hidden)
        loss = None
        if targets is not None:
            # Over the padded logits, which are contiguous (the padding adds exp(-inf) = 0), and in
            # float32 whatever the compute dtype: a bfloat16 log-softmax over 50k logits loses digits.
            loss = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=-100)
        return logits[..., : self.config.vocab_size], loss


def build_attention_mask(
    n_new: int, n_past: int, attention_mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor | None:
    """Which keys each new query may see: a boolean (B or 1, 1, n_new, n_past + n_new) mask, True = see.

    None in the common training case (no past, no padding): the attention kernel then applies the
    causal mask itself, which is faster than reading one.
    """
    if n_past == 0 and attention_mask is None:
        return None
    query_slots = torch.arange(n_past, n_past + n_new, device=device).unsqueeze(1)
    key_slots = torch.arange(n_past + n_new, device=device).unsqueeze(0)
    allowed = key_slots <= query_slots  # (n_new, n_past + n_new): the past and itself, never the future
    if attention_mask is None:
        return allowed[None, None]
    allowed = allowed & attention_mask.bool()[:, None, None, :]
    # A padding query would otherwise see no key at all and produce NaN, and NaN values poison real
    # queries even through zero attention weights: let every slot see itself.
    return allowed | (key_slots == query_slots)


def count_parameters(model: nn.Module, include_embeddings: bool = True) -> int:
    """Distinct parameters (the tied head counts once). Without embeddings is the count that scaling
    laws use (Kaplan et al. 2020): token and position embeddings are lookups, not compute."""
    total = sum(p.numel() for p in model.parameters())
    if include_embeddings:
        return total
    return total - sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))


def flops_per_token(model: GPT, seq_len: int) -> int:
    """Training FLOPs (forward + backward) per token at sequence length ``seq_len``.

    6 per weight that multiplies activations (2 forward, 4 backward; Kaplan et al. 2020) including
    the LM head, plus attention's QKᵀ and AV: 6 * 2 * n_layers * seq_len * emb_dim (PaLM, app. B).
    """
    config = model.config
    matmul_weights = count_parameters(model, include_embeddings=False) + model.out_head.weight.numel()
    return 6 * matmul_weights + 12 * config.n_layers * seq_len * config.emb_dim


def estimate_mfu(model: GPT, tokens_per_s: float, peak_flops: float, seq_len: int | None = None) -> float:
    """Model FLOPs utilisation: the fraction of the hardware's peak FLOP/s that training achieves.
    Recomputation (activation checkpointing) is not counted as useful work."""
    return flops_per_token(model, seq_len or model.config.context_length) * tokens_per_s / peak_flops


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay the matrices of linear layers; not biases, norm gains or embeddings,
    whose scale carries meaning that decay toward zero would only erode."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if param.dim() >= 2 and id(param) not in embeddings:
            decay.append(param)
        else:
            no_decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def configure_optimizers(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; on CUDA the fused kernel updates all tensors in one launch."""
    groups = param_groups(model, weight_decay)
    on_cuda = all(param.is_cuda for group in groups for param in group["params"])
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=on_cuda)
