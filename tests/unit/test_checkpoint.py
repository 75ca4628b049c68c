import json
import pickle
from pathlib import Path

import pytest
import torch
import transformers  # the test extra: these tests are why it is there
from safetensors.torch import load_file, save_file

from model.checkpoint import export_hf_gpt2, import_hf_gpt2, load_checkpoint, load_pretrained, save_checkpoint
from model.config import preset
from model.gpt import GPT

TOKENIZER = {"spec": "gpt2", "name": "gpt2", "n_vocab": 50257, "sha256": "0" * 64}
HF_SHAPES = {"vocab_size": 300, "n_positions": 64, "n_embd": 64, "n_layer": 3, "n_head": 4}


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values in every parameter, norms and biases included: with the default init (gains 1,
    biases 0) a swapped norm or a missing bias would go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1 + (1.0 if param.dim() == 1 else 0.0))


def hf_gpt2(tmp_path: Path, activation: str = "gelu_new"):
    config = transformers.GPT2Config(**HF_SHAPES, activation_function=activation, bos_token_id=299, eos_token_id=299)
    model = transformers.GPT2LMHeadModel(config)
    randomize(model)
    model.save_pretrained(tmp_path / "hf")
    return model.eval(), tmp_path / "hf"


def tokens(batch: int = 2, length: int = 40, vocab: int = 300) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["tiny", "llama-tiny"])
def test_our_checkpoint_round_trips(tmp_path, name):
    torch.manual_seed(0)
    model = GPT(preset(name, vocab_size=300, vocab_multiple=64)).eval()
    randomize(model)
    save_checkpoint(model, tmp_path, tokenizer=TOKENIZER)

    metadata = json.loads((tmp_path / "model.json").read_text())
    assert metadata["config"] == model.config.to_dict()
    assert metadata["tokenizer"] == TOKENIZER
    assert "out_head.weight" not in load_file(tmp_path / "model.safetensors")  # stored once, as tok_emb

    loaded, tokenizer = load_checkpoint(tmp_path)
    assert tokenizer == TOKENIZER
    assert loaded.config == model.config
    assert loaded.out_head.weight is loaded.tok_emb.weight
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens())[0], model(tokens())[0], rtol=0, atol=0)


def test_a_checkpoint_needs_a_tokenizer_spec(tmp_path):
    with pytest.raises(ValueError, match="spec"):
        save_checkpoint(GPT(preset("tiny")), tmp_path, tokenizer={"name": "gpt2"})


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])  # GPT-2's tanh GELU, and the exact one
def test_import_from_hugging_face_gives_the_same_logits(tmp_path, activation):
    hf, folder = hf_gpt2(tmp_path, activation)
    ours = import_hf_gpt2(folder).eval()
    with torch.no_grad():
        difference = (ours(tokens())[0] - hf(tokens()).logits).abs().max().item()
    assert difference <= 1e-4


def test_import_reads_openais_original_layout(tmp_path):
    """The files on the Hub for openai-community/gpt2 have no ``transformer.`` prefix, keep the
    causal-mask buffers and, in some copies, the tied ``lm_head.weight``."""
    hf, folder = hf_gpt2(tmp_path)
    saved = load_file(folder / "model.safetensors")
    state = {name.removeprefix("transformer."): tensor for name, tensor in saved.items()}
    for i in range(HF_SHAPES["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    state["lm_head.weight"] = state["wte.weight"].clone()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    ours = import_hf_gpt2(folder, vocab_multiple=128).eval()
    assert ours.tok_emb.weight.shape[0] == 384
    with torch.no_grad():
        assert (ours(tokens())[0] - hf(tokens()).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("gelu_approximate", ["tanh", "none"])
def test_export_to_hugging_face_gives_the_same_logits(tmp_path, gelu_approximate):
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=300, vocab_multiple=64, context_length=64, gelu_approximate=gelu_approximate)
    ours = GPT(config).eval()
    randomize(ours)
    export_hf_gpt2(ours, tmp_path, eos_token_id=299)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert hf.config.vocab_size == 300
    with torch.no_grad():
        assert (hf(tokens()).logits - ours(tokens())[0]).abs().max().item() <= 1e-4
    # And back again, tensor for tensor (the padding rows of the embedding are not exported).
    again = import_hf_gpt2(tmp_path, vocab_multiple=64).state_dict()
    for name, tensor in ours.state_dict().items():
        rows = slice(0, 300) if name in ("tok_emb.weight", "out_head.weight") else slice(None)
        torch.testing.assert_close(again[name][rows], tensor[rows], rtol=0, atol=0, msg=name)


def test_export_refuses_what_gpt2_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="pos_embedding"):
        export_hf_gpt2(GPT(preset("llama-tiny")), tmp_path)
    with pytest.raises(ValueError, match="n_kv_heads"):
        export_hf_gpt2(GPT(preset("tiny", n_kv_heads=2)), tmp_path)


def test_import_refuses_other_architectures_and_untied_heads(tmp_path):
    _, folder = hf_gpt2(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type"):
        import_hf_gpt2(folder)

    (folder / "config.json").write_text(json.dumps(config))
    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = torch.zeros_like(state["transformer.wte.weight"])
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match="tied"):
        import_hf_gpt2(folder)


class _Payload:
    """Unpickling this touches a file: what a malicious pytorch_model.bin could do, and worse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_weights_are_never_loaded(tmp_path):
    _, folder = hf_gpt2(tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_pretrained(folder)
    assert not marker.exists()


def test_load_pretrained_reads_either_format(tmp_path):
    hf, folder = hf_gpt2(tmp_path)
    model, tokenizer = load_pretrained(folder)
    assert tokenizer == {"spec": "gpt2"} and not model.training
    save_checkpoint(model, tmp_path / "ours", tokenizer=TOKENIZER)
    again, tokenizer = load_pretrained(tmp_path / "ours")
    assert tokenizer == TOKENIZER
    with torch.no_grad():
        torch.testing.assert_close(again(tokens())[0], model(tokens())[0], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_pretrained(tmp_path / "nothing-here")
