"""Where a fine-tune starts: checkpoint folders resolved, lineage read from the path, weights kept."""

import pytest
import torch

from model.checkpoint import export_hf_gpt2, save_checkpoint
from model.config import preset
from model.finetune.base import BaseModelConfig, base_config, build_base, resolve_checkpoint, training_run_of
from model.finetune.checkpoint import load_finetuned_state, save_finetuned
from model.gpt import GPT
from pipeline.config import ConfigError

TOKENIZER = {"spec": "gpt2"}


@pytest.fixture
def run_folder(tmp_path):
    torch.manual_seed(0)
    for step in (5, 10):
        save_checkpoint(GPT(preset("tiny")), tmp_path / "runs" / "pre" / f"checkpoint-{step:08d}" / "model", TOKENIZER)
    return tmp_path / "runs" / "pre"


def test_a_run_folder_or_training_checkpoint_resolves_to_its_model(run_folder):
    latest = run_folder / "checkpoint-00000010" / "model"
    assert resolve_checkpoint(str(run_folder)) == latest
    assert resolve_checkpoint(str(run_folder / "checkpoint-00000005")) == run_folder / "checkpoint-00000005" / "model"
    assert resolve_checkpoint(str(latest)) == latest
    assert training_run_of(latest) == (str(run_folder.parent.resolve()), "pre")
    with pytest.raises(ConfigError, match="model.init_from"):
        resolve_checkpoint(str(run_folder.parent.parent))


def test_the_base_keeps_its_weights_from_ours_or_a_hugging_face_folder(run_folder, tmp_path):
    ours = BaseModelConfig(init_from=str(run_folder))
    config, tokenizer = base_config(ours)
    model = build_base(ours, config)
    hf = export_hf_gpt2(model, tmp_path / "hf")
    imported = BaseModelConfig(init_from=str(hf), overrides={"drop_rate": 0.1})
    hf_config, hf_tokenizer = base_config(imported)
    assert hf_config.drop_rate == 0.1 and hf_tokenizer == {"spec": "gpt2"}
    tokens = torch.randint(0, 512, (1, 8))
    torch.testing.assert_close(build_base(imported, hf_config).eval()(tokens)[0], model.eval()(tokens)[0])
    with pytest.raises(ConfigError, match="emb_dim"):
        base_config(BaseModelConfig(init_from=str(run_folder), overrides={"emb_dim": 64}))


def test_fine_tuned_state_round_trips_with_its_added_tensors(tmp_path):
    gpt = GPT(preset("tiny"))
    state = {f"gpt.{key}": value for key, value in gpt.state_dict().items()}
    state["head.weight"] = torch.randn(2, 128)
    save_finetuned(state, tmp_path / "m", gpt.config, TOKENIZER, {"kind": "classifier", "labels": ["a", "b"]}, "gpt.")
    loaded, metadata = load_finetuned_state(tmp_path / "m", "gpt.")
    assert metadata == {"kind": "classifier", "labels": ["a", "b"]}
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value)
