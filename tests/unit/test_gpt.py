import math

import pytest
import torch
import torch.nn.functional as F

from model.config import GPTConfig, preset
from model.gpt import (
    GPT,
    KVCache,
    configure_optimizers,
    count_parameters,
    estimate_mfu,
    flops_per_token,
    param_groups,
)

# Each architectural option on its own, then all of them together.
VARIANTS = {
    "gpt2": {},
    "rope": {"pos_embedding": "rope"},
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"mlp": "swiglu"},
    "gqa": {"n_kv_heads": 2},
    "mqa": {"n_kv_heads": 1},
    "no-bias": {"bias": False, "qkv_bias": False},
    "llama": {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_heads": 2,
              "bias": False, "qkv_bias": False},
}


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(preset("tiny", **overrides)).eval()


def random_tokens(batch: int, length: int, seed: int = 1, vocab: int = 512) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_initial_loss():
    model = tiny_model()
    ids = random_tokens(2, 16)
    logits, loss = model(ids, random_tokens(2, 16, seed=2))
    assert logits.shape == (2, 16, 512)
    # At init the model knows nothing: about ln(vocab) per token.
    assert loss.item() == pytest.approx(math.log(512), abs=0.3)
    assert model(ids)[1] is None


def test_hidden_states_feed_the_logits():
    model = tiny_model()
    ids = random_tokens(2, 16)
    hidden = model.hidden_states(ids)
    assert hidden.shape == (2, 16, 128)
    torch.testing.assert_close(model.logits(hidden), model(ids)[0])


def test_loss_skips_targets_of_minus_100():
    model = tiny_model()
    ids = random_tokens(2, 16)
    targets = ids.clone()
    targets[:, :10] = -100
    logits, loss = model(ids, targets)
    expected = F.cross_entropy(logits[:, 10:].reshape(-1, 512), ids[:, 10:].reshape(-1))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_future_never_leaks(variant):
    model = tiny_model(**VARIANTS[variant])
    ids = random_tokens(2, 20)
    changed = ids.clone()
    changed[:, 11:] = (changed[:, 11:] + 7) % 512
    with torch.no_grad():
        before, after = model(ids)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :11], after[:, :11])
    assert (before[:, 11:] - after[:, 11:]).abs().max() > 1e-3  # the change itself is seen


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains(variant):
    model = tiny_model(drop_rate=0.1, **VARIANTS[variant]).train()
    ids = random_tokens(2, 32)
    _, loss = model(ids, ids)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_kv_cache_gives_the_logits_of_a_full_forward(variant):
    model = tiny_model(**VARIANTS[variant])
    ids = random_tokens(3, 24)
    cache = KVCache(model.config, batch_size=3, max_length=24)
    with torch.no_grad():
        full = model(ids)[0]
        chunks = [model(ids[:, a:b], kv_cache=cache)[0] for a, b in [(0, 10), (10, 11), (11, 12), (12, 24)]]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 24


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_left_padding_with_positions_matches_the_unpadded_sequence(variant):
    model = tiny_model(**VARIANTS[variant])
    ids = random_tokens(1, 12)
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 12, dtype=torch.long)], dim=1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = model(ids)[0]
        with_padding = model(padded, position_ids=positions, attention_mask=mask)[0]
    torch.testing.assert_close(with_padding[:, 5:], alone, atol=1e-5, rtol=1e-5)


def test_padded_vocab_rows_never_reach_the_logits_the_loss_or_the_gradients():
    model = tiny_model(vocab_size=500, vocab_multiple=64).train()
    assert model.tok_emb.weight.shape[0] == 512
    targets = random_tokens(2, 8, seed=2, vocab=500)
    logits, loss = model(random_tokens(2, 8, vocab=500), targets)
    assert logits.shape[-1] == 500
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 500), targets.reshape(-1)))
    loss.backward()
    assert model.tok_emb.weight.grad[500:].abs().max() == 0
    assert model.tok_emb.weight.grad[:500].abs().max() > 0


def test_head_is_tied_and_init_follows_gpt2():
    config = GPTConfig(vocab_size=1000, context_length=64, emb_dim=256, n_heads=4, n_layers=8)
    torch.manual_seed(0)
    model = GPT(config)
    assert model.out_head.weight is model.tok_emb.weight
    residual_std = 0.02 / math.sqrt(2 * config.n_layers)
    for block in model.blocks:
        assert block.attn.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.mlp.down_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.attn.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.qkv_proj.bias.abs().max() == 0
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_activation_checkpointing_gives_the_same_gradients_and_names():
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from model.parallel import checkpoint_blocks

    ids = random_tokens(2, 32)
    plain, wrapped = tiny_model().train(), tiny_model().train()
    checkpoint_blocks(wrapped)
    for model in (plain, wrapped):
        model(ids, ids)[1].backward()
    assert get_model_state_dict(wrapped).keys() == plain.state_dict().keys()  # checkpoints name no wrapper
    gradients = {name.replace("_checkpoint_wrapped_module.", ""): param.grad for name, param in wrapped.named_parameters()}
    for name, param in plain.named_parameters():
        torch.testing.assert_close(gradients[name], param.grad, msg=name)


def test_context_length_is_enforced():
    model = tiny_model()
    with pytest.raises(ValueError, match="context_length"):
        model(random_tokens(1, 129))


def test_param_groups_decay_only_linear_matrices():
    model = tiny_model(vocab_size=500, vocab_multiple=64)
    model.blocks[0].norm1.weight.requires_grad_(False)  # frozen parameters are left out
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(param): name for name, param in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    linear = ("qkv_proj.weight", "out_proj.weight", "up_proj.weight", "down_proj.weight")
    assert decayed == {name for name in names.values() if name.endswith(linear)}
    assert {"tok_emb.weight", "pos_emb.weight", "final_norm.weight", "final_norm.bias",
            "blocks.0.attn.qkv_proj.bias", "blocks.1.norm2.weight"} <= not_decayed
    assert "blocks.0.norm1.weight" not in decayed | not_decayed
    assert len(decayed) + len(not_decayed) == len(names) - 1
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)

    optimizer = configure_optimizers(model, learning_rate=3e-4, weight_decay=0.1)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_parameter_counts_with_and_without_embeddings():
    model = tiny_model()
    embeddings = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert count_parameters(model) - count_parameters(model, include_embeddings=False) == embeddings


def test_flops_per_token_and_mfu_for_gpt2_small():
    with torch.device("meta"):
        model = GPT(preset("gpt2-124m"))
    d, layers, seq_len = 768, 12, 1024
    # Per block: qkv 3d^2+3d, out d^2+d, two norms 4d, MLP 8d^2+5d; then the final norm and the head.
    weights = layers * (12 * d * d + 13 * d) + 2 * d + 50304 * d
    expected = 6 * weights + 12 * layers * seq_len * d
    assert flops_per_token(model, seq_len) == expected
    assert estimate_mfu(model, tokens_per_s=1e5, peak_flops=989e12) == pytest.approx(expected * 1e5 / 989e12)
