"""Model references -> the folder holding the weights, for every job that takes a model."""

from __future__ import annotations

import pytest

from model.reference import resolve_model
from model.serve.app import default_model_name


def touch(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def test_each_local_layout_resolves_to_its_weights_folder(tmp_path):
    ours, hf = tmp_path / "ours", tmp_path / "hf"
    touch(ours / "model.json")
    touch(hf / "config.json")
    run = tmp_path / "runs" / "pretrain-demo"
    for step in (40, 80):
        touch(run / f"checkpoint-{step:08d}" / "model" / "model.json")
    touch(run / "checkpoint-00000120" / "train_state.pt")  # no model/: an unfinished checkpoint
    logged = tmp_path / "mlflow-model"
    touch(logged / "MLmodel")
    touch(logged / "artifacts" / "checkpoint" / "model.json")

    assert resolve_model(str(ours)) == ours
    assert resolve_model(str(hf)) == hf
    assert resolve_model(str(run / "checkpoint-00000040")) == run / "checkpoint-00000040" / "model"
    assert resolve_model(str(run)) == run / "checkpoint-00000080" / "model"  # the latest complete one
    assert resolve_model(f"file://{logged}") == logged / "artifacts" / "checkpoint"


def test_a_folder_without_a_model_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no model"):
        resolve_model(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "missing"))


@pytest.mark.parametrize("reference, name", [
    ("models:/webllm-demo/3", "webllm-demo"),
    ("models:/webllm-demo@champion", "webllm-demo"),
    ("data/runs/pretrain-demo/checkpoint-00000080/model", "pretrain-demo"),
    ("s3://bucket/runs/gpt2-124m/", "gpt2-124m"),
])
def test_served_models_are_named_after_their_reference(reference, name):
    assert default_model_name(reference) == name


def test_a_run_on_s3_is_downloaded_once_and_loads_like_a_local_one(s3_bucket, tmp_path, corpus):
    import fsspec
    import torch

    from model.checkpoint import save_checkpoint
    from model.config import preset
    from model.gpt import GPT
    from model.inference import load_inference_model
    from pipeline.tokenizer import load_tokenizer, tokenizer_identity

    encoding = load_tokenizer("gpt2")
    torch.manual_seed(0)
    local = save_checkpoint(GPT(preset("tiny", vocab_size=encoding.n_vocab)), tmp_path / "ckpt",
                            {"spec": "gpt2", **tokenizer_identity(encoding)})
    fs = fsspec.filesystem("s3")
    run = f"{s3_bucket}/runs/tiny"
    fs.put(f"{local}/", f"{run}/checkpoint-00000004/model/", recursive=True)
    fs.put_file(str(local / "model.json"), f"{run}/checkpoint-00000002/train_state.pt")  # no model/: skipped

    cache = tmp_path / "cache"
    folder = resolve_model(run, cache_dir=cache)
    assert folder.is_dir() and folder.parent == cache and (folder / "model.safetensors").is_file()
    assert resolve_model(run, cache_dir=cache) == folder  # from the cache
    loaded = load_inference_model(str(folder))
    torch.testing.assert_close(loaded.model.state_dict()["tok_emb.weight"],
                               load_inference_model(str(local)).model.state_dict()["tok_emb.weight"])
    with pytest.raises(FileNotFoundError, match="holds no model"):
        resolve_model(f"{s3_bucket}/runs/missing", cache_dir=cache)
