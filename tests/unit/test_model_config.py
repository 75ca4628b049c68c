import pytest
import torch

from model.config import PRESETS, GPTConfig, preset
from model.gpt import GPT, count_parameters
from pipeline.config import ConfigError


def test_default_config_is_gpt2_small():
    assert GPTConfig() == preset("gpt2-124m", vocab_multiple=1)


@pytest.mark.parametrize(
    ("name", "expected"),
    # The parameter counts of OpenAI's released GPT-2 models (tied head counted once).
    [("gpt2-124m", 124_439_808), ("gpt2-355m", 354_823_168), ("gpt2-774m", 774_030_080), ("gpt2-1558m", 1_557_611_200)],
)
def test_gpt2_presets_have_the_released_parameter_counts(name, expected):
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(preset(name, vocab_multiple=1))
    assert count_parameters(model) == expected


def test_every_preset_builds_a_model():
    for name, config in PRESETS.items():
        with torch.device("meta"):
            model = GPT(config)
        assert count_parameters(model) > 0, name


def test_tiny_presets_are_small_enough_for_unit_tests():
    for name in ("tiny", "llama-tiny"):
        assert 200_000 < count_parameters(GPT(preset(name))) < 1_000_000


def test_gpt2_presets_pad_the_vocab_to_a_multiple_of_128():
    config = preset("gpt2-124m")
    assert config.vocab_size == 50257
    assert config.padded_vocab_size == 50304


def test_llama_presets_use_the_modern_options():
    config = preset("llama-124m")
    assert (config.pos_embedding, config.norm, config.mlp) == ("rope", "rmsnorm", "swiglu")
    assert not config.bias and not config.qkv_bias
    assert config.kv_heads < config.n_heads
    assert config.mlp_hidden_dim == 2048  # 8/3 * 768, a multiple of 64


def test_preset_overrides_return_a_new_config():
    config = preset("gpt2-124m", context_length=256, drop_rate=0.1)
    assert (config.context_length, config.drop_rate, config.emb_dim) == (256, 0.1, 768)
    assert PRESETS["gpt2-124m"].context_length == 1024


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"embedding_size": 10}, "embedding_size"),
        ({"norm": "batchnorm"}, "norm"),
        ({"emb_dim": 100}, "emb_dim"),
        ({"n_kv_heads": 5}, "n_kv_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"drop_rate": 1.5}, "drop_rate"),
        ({"emb_dim": 12 * 3, "pos_embedding": "rope"}, "pos_embedding"),  # head_dim 3 cannot be rotated in pairs
    ],
)
def test_bad_overrides_are_rejected_by_name(overrides, named):
    with pytest.raises(ConfigError, match=named):
        preset("gpt2-124m", **overrides)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="gpt2-124m"):
        preset("gpt5")


def test_config_round_trips_through_a_dict():
    config = preset("llama-tiny")
    assert GPTConfig(**config.to_dict()) == config


def test_mlp_width_defaults():
    assert GPTConfig(emb_dim=64, n_heads=4).mlp_hidden_dim == 256
    assert GPTConfig(emb_dim=96, n_heads=4, mlp="swiglu").mlp_hidden_dim == 256
    assert GPTConfig(emb_dim=64, n_heads=4, mlp="swiglu", hidden_dim=100).mlp_hidden_dim == 100
