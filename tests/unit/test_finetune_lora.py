"""LoRA: the adapted model starts as the base model, only adapters train, and merging folds them in."""

import pytest
import torch

from model.config import preset
from model.finetune.lora import LoRAConfig, LoRALinear, apply_lora, merge_lora, trainable_parameter_count
from model.gpt import GPT


def models(**overrides):
    torch.manual_seed(0)
    base = GPT(preset("tiny", **overrides))
    adapted = GPT(base.config)
    adapted.load_state_dict(base.state_dict())
    return base.eval(), adapted.eval()


@pytest.mark.parametrize("architecture", [{}, {"mlp": "swiglu", "bias": False, "qkv_bias": False}])
def test_at_init_the_adapted_model_computes_the_base_model(architecture):
    base, adapted = models(**architecture)
    apply_lora(adapted, LoRAConfig(enabled=True, rank=4, alpha=8))
    tokens = torch.randint(0, base.config.vocab_size, (2, 16))
    torch.testing.assert_close(adapted(tokens)[0], base(tokens)[0], rtol=0, atol=0)


def test_only_lora_parameters_train_and_their_count_is_two_rank_d_per_projection():
    _, model = models()
    config = LoRAConfig(enabled=True, rank=4, alpha=8, targets=["qkv_proj", "down_proj"])
    wrapped = apply_lora(model, config)
    assert wrapped == ["blocks.0.attn.qkv_proj", "blocks.0.mlp.down_proj", "blocks.1.attn.qkv_proj",
                       "blocks.1.mlp.down_proj"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{layer}.{ab}" for layer in wrapped for ab in ("lora_a", "lora_b")}
    emb, hidden = model.config.emb_dim, model.config.mlp_hidden_dim
    per_block = 4 * (emb + 3 * emb) + 4 * (hidden + emb)  # rank x (in + out) for each wrapped projection
    assert trainable_parameter_count(model) == 2 * per_block


def test_merge_folds_the_adapters_so_the_merged_model_computes_the_adapted_one():
    _, model = models()
    apply_lora(model, LoRAConfig(enabled=True, rank=4, alpha=16))
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, LoRALinear):  # trained adapters: B is no longer zero
            torch.nn.init.normal_(module.lora_b, std=0.05)
    tokens = torch.randint(0, model.config.vocab_size, (2, 16))
    adapted = model(tokens)[0]
    base_logits = GPT(model.config).eval()
    merge_lora(model)
    assert not any(isinstance(module, LoRALinear) for module in model.modules())
    assert not any("lora" in name for name, _ in model.named_parameters())
    torch.testing.assert_close(model(tokens)[0], adapted, rtol=1e-4, atol=1e-4)
    assert set(model.state_dict()) == set(base_logits.state_dict())


def test_unknown_targets_are_rejected_by_name():
    with pytest.raises(ValueError, match="attn_proj"):
        LoRAConfig(targets=["attn_proj"])
