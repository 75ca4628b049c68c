"""Model weights on disk: our checkpoint format, and GPT-2 in the Hugging Face layout.

Our format is a folder a model can be rebuilt from with nothing but ``model/``:

    model.safetensors   the weights (the tied LM head is stored once, as ``tok_emb.weight``)
    model.json          {"format": "webllm-gpt", "version": 1, "config": {GPTConfig fields},
                         "tokenizer": {"spec": "gpt2" or a tokenizer folder, "name", "sha256", ...}}

``model.json`` is written last, so a folder that has one holds a complete checkpoint.

The Hugging Face GPT-2 layout (``config.json`` + ``model.safetensors``) is imported and exported
tensor for tensor; ``transformers`` itself is not needed for either. Weights are only ever read
from safetensors, which holds plain tensors: a pickle file (``pytorch_model.bin``) can run code
when loaded, so it is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.config import GPTConfig
from model.gpt import GPT

FORMAT = "webllm-gpt"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
HF_CONFIG_FILE = "config.json"
HF_INDEX_FILE = "model.safetensors.index.json"


def save_checkpoint(model: GPT, directory: str | Path, tokenizer: Mapping[str, Any]) -> Path:
    """Write ``model`` to ``directory``. ``tokenizer`` must hold the ``spec`` that
    ``pipeline.tokenizer.load_tokenizer`` takes, best with the encoding's ``tokenizer_identity``."""
    if "spec" not in tokenizer:
        raise ValueError("tokenizer: needs a 'spec' (what load_tokenizer takes, e.g. 'gpt2')")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    del state["out_head.weight"]  # the same tensor as tok_emb.weight; safetensors stores it once
    metadata = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "tokenizer": dict(tokenizer)}
    (directory / METADATA_FILE).unlink(missing_ok=True)  # until the new one lands, the folder is incomplete
    _write_atomic(directory / WEIGHTS_FILE, lambda path: save_file(state, path, metadata={"format": "pt"}))
    _write_atomic(directory / METADATA_FILE, lambda path: Path(path).write_text(json.dumps(metadata, indent=2) + "\n"))
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, dict[str, Any]]:
    """-> (the model, in eval mode, and the tokenizer identity it was saved with)."""
    directory = Path(directory)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
        raise ValueError(f"{directory / METADATA_FILE}: not a {FORMAT} v{VERSION} checkpoint")
    model = GPT(GPTConfig(**metadata["config"]))
    state = load_file(directory / WEIGHTS_FILE)
    state["out_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model.to(device).eval(), metadata["tokenizer"]


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> tuple[GPT, dict[str, Any]]:
    """Our checkpoint or a Hugging Face GPT-2 folder, whichever ``path`` holds.

    -> (model in eval mode, tokenizer identity). A GPT-2 folder uses GPT-2's tokenizer.
    """
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return load_checkpoint(path, device)
    if (path / HF_CONFIG_FILE).is_file():
        return import_hf_gpt2(path).to(device).eval(), {"spec": "gpt2"}
    raise FileNotFoundError(
        f"{path}: holds neither {METADATA_FILE} (our checkpoint) nor {HF_CONFIG_FILE} (Hugging Face)"
    )


def tokenizer_of(path: str | Path) -> dict[str, Any]:
    """The tokenizer identity a checkpoint folder (ours or Hugging Face GPT-2) names, without loading weights."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return json.loads((path / METADATA_FILE).read_text())["tokenizer"]
    return {"spec": "gpt2"}


# Hugging Face GPT-2 <-> ours. GPT-2 was written in TensorFlow and its linear layers (``Conv1D``)
# store weights as (in, out), the transpose of ``nn.Linear``'s (out, in).
_HF_TOP = {"wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight",
           "ln_f.weight": "final_norm.weight", "ln_f.bias": "final_norm.bias"}
_HF_BLOCK = {  # inside h.{i} / blocks.{i}: Hugging Face name -> (our name, stored transposed)
    "ln_1.weight": ("norm1.weight", False),
    "ln_1.bias": ("norm1.bias", False),
    "attn.c_attn.weight": ("attn.qkv_proj.weight", True),
    "attn.c_attn.bias": ("attn.qkv_proj.bias", False),
    "attn.c_proj.weight": ("attn.out_proj.weight", True),
    "attn.c_proj.bias": ("attn.out_proj.bias", False),
    "ln_2.weight": ("norm2.weight", False),
    "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("mlp.up_proj.weight", True),
    "mlp.c_fc.bias": ("mlp.up_proj.bias", False),
    "mlp.c_proj.weight": ("mlp.down_proj.weight", True),
    "mlp.c_proj.bias": ("mlp.down_proj.bias", False),
}
# Hugging Face's names for the GELU variants GPT-2 configs use -> F.gelu's ``approximate``.
_HF_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
# Buffers older GPT-2 files carry: the causal mask as a (1, 1, n_positions, n_positions) tensor, not weights.
_HF_BUFFERS = ("attn.bias", "attn.masked_bias")


def import_hf_gpt2(folder: str | Path, **overrides: Any) -> GPT:
    """A Hugging Face GPT-2 folder (``config.json`` + safetensors) -> our GPT, logits for logits.

    ``overrides`` change config fields that do not touch the weights, e.g. ``drop_rate`` for
    fine-tuning or ``vocab_multiple`` (the added embedding rows are zeros and never reach logits).
    """
    folder = Path(folder)
    hf = json.loads((folder / HF_CONFIG_FILE).read_text())
    config = GPTConfig(**{**_config_from_hf(hf, folder), **overrides})
    hf_state = {name.removeprefix("transformer."): tensor for name, tensor in _read_hf_weights(folder).items()}

    state: dict[str, torch.Tensor] = {}
    for hf_name, name in _HF_TOP.items():
        state[name] = _take(hf_state, hf_name, folder)
    for i in range(config.n_layers):
        for hf_name, (name, transposed) in _HF_BLOCK.items():
            tensor = _take(hf_state, f"h.{i}.{hf_name}", folder)
            state[f"blocks.{i}.{name}"] = tensor.t() if transposed else tensor
        for buffer in _HF_BUFFERS:
            hf_state.pop(f"h.{i}.{buffer}", None)
    lm_head = hf_state.pop("lm_head.weight", None)
    if lm_head is not None and not torch.equal(lm_head, state["tok_emb.weight"]):
        raise ValueError(f"{folder}: lm_head.weight differs from wte.weight; only tied GPT-2 heads are supported")
    if hf_state:
        raise ValueError(f"{folder}: unexpected tensors {sorted(hf_state)[:5]}")

    embedding = state["tok_emb.weight"]
    padding = embedding.new_zeros(config.padded_vocab_size - config.vocab_size, config.emb_dim)
    state["tok_emb.weight"] = torch.cat([embedding, padding])
    state["out_head.weight"] = state["tok_emb.weight"]
    model = GPT(config)
    model.load_state_dict(state)
    return model


def export_hf_gpt2(model: GPT, folder: str | Path, eos_token_id: int | None = None) -> Path:
    """Write a GPT-2-architecture model as a Hugging Face folder that ``GPT2LMHeadModel`` loads.

    ``eos_token_id``: the tokenizer's end-of-text id (50256 for GPT-2's), for ``generate``.
    """
    config = model.config
    _check_gpt2_architecture(config)
    ours = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    state = {f"transformer.{hf_name}": ours[name] for hf_name, name in _HF_TOP.items()}
    state["transformer.wte.weight"] = state["transformer.wte.weight"][: config.vocab_size]  # drop the padding
    for i in range(config.n_layers):
        for hf_name, (name, transposed) in _HF_BLOCK.items():
            tensor = ours[f"blocks.{i}.{name}"]
            state[f"transformer.h.{i}.{hf_name}"] = tensor.t() if transposed else tensor
    state = {name: tensor.contiguous() for name, tensor in state.items()}

    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.emb_dim,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.mlp_hidden_dim,
        "activation_function": "gelu_new" if config.gelu_approximate == "tanh" else "gelu",
        "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.drop_rate,
        "embd_pdrop": config.drop_rate,
        "attn_pdrop": config.drop_rate,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / WEIGHTS_FILE, lambda path: save_file(state, path, metadata={"format": "pt"}))
    _write_atomic(folder / HF_CONFIG_FILE, lambda path: Path(path).write_text(json.dumps(hf_config, indent=2) + "\n"))
    return folder


def _config_from_hf(hf: dict[str, Any], folder: Path) -> dict[str, Any]:
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"{folder / HF_CONFIG_FILE}: model_type {hf.get('model_type')!r}, only 'gpt2' is supported")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _HF_GELU:
        raise ValueError(f"{folder}: activation_function {activation!r}; supported: {', '.join(_HF_GELU)}")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise ValueError(f"{folder}: attention scaling other than 1/sqrt(head_dim) is not supported")
    return {
        "vocab_size": hf["vocab_size"],
        "context_length": hf["n_positions"],
        "emb_dim": hf["n_embd"],
        "n_heads": hf["n_head"],
        "n_layers": hf["n_layer"],
        "hidden_dim": hf.get("n_inner"),  # None: 4 * emb_dim, as in GPT-2
        "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        "gelu_approximate": _HF_GELU[activation],
        # Dropout is a training choice, not part of the weights: off unless overridden.
        "drop_rate": 0.0,
    }


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / WEIGHTS_FILE).is_file():
        return load_file(folder / WEIGHTS_FILE)
    if (folder / HF_INDEX_FILE).is_file():  # sharded: the index maps each tensor to its file
        shards = sorted(set(json.loads((folder / HF_INDEX_FILE).read_text())["weight_map"].values()))
        return {name: tensor for shard in shards for name, tensor in load_file(folder / shard).items()}
    raise FileNotFoundError(
        f"{folder}: no {WEIGHTS_FILE}. Only safetensors are read: pickle files such as pytorch_model.bin "
        "can run code when loaded. Convert them once, somewhere you trust, with save_pretrained()."
    )


def _take(state: dict[str, torch.Tensor], name: str, folder: Path) -> torch.Tensor:
    if name not in state:
        raise ValueError(f"{folder}: tensor {name!r} is missing")
    return state.pop(name)


def _check_gpt2_architecture(config: GPTConfig) -> None:
    gpt2 = GPTConfig()
    for field in ("pos_embedding", "norm", "mlp", "qkv_bias", "bias"):
        if getattr(config, field) != getattr(gpt2, field):
            raise ValueError(f"{field}={getattr(config, field)!r}: the GPT-2 layout needs {getattr(gpt2, field)!r}")
    if config.kv_heads != config.n_heads:
        raise ValueError(f"n_kv_heads={config.n_kv_heads}: the GPT-2 layout has one K/V head per query head")


def _write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Write through a temporary name, then rename: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(str(temporary))
    temporary.replace(path)
