"""Both fine-tunes through the shared training loop on a local Ray: a classifier with LoRA on two
workers resumes exactly, and instruction tuning lowers the validation loss on response tokens."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import preset
from model.finetune.checkpoint import load_finetuned_state
from model.finetune.classify import ClassifierConfig, ClassifierTask
from model.finetune.instruct import InstructConfig, InstructTask
from model.gpt import GPT
from model.launch import launch
from model.train import Worker
from pipeline.config import to_dict, validate
from pipeline.tokenizer import tokenizer_identity

STEPS, RESUME_FROM = 4, 2


def save_tiny_base(folder: Path) -> Path:
    """A tiny random GPT with GPT-2's tokenizer in our checkpoint format: a base model in seconds."""
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=50257, context_length=128, emb_dim=64, n_heads=2))
    return save_checkpoint(model, folder, {"spec": "gpt2", **tokenizer_identity("gpt2")})


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("base") / "model")


def classifier_config(base: Path, output: Path, **sections: dict[str, Any]) -> ClassifierConfig:
    config = {
        "run": {"name": "classify", "output": str(output), "max_steps": STEPS, "log_every_steps": 1,
                "eval_every_steps": STEPS},
        # Dropout on, so that resuming has to restore each worker's random generator too.
        "model": {"init_from": str(base), "overrides": {"drop_rate": 0.1}},
        "trainable": {"lora": {"enabled": True, "rank": 4, "alpha": 8}},
        "data": {"max_length": 64},
        "batch": {"global_batch_size": 8, "micro_batch_size": 2},
        "optim": {"learning_rate": 1e-3, "warmup_steps": 2},
        "checkpoint": {"every_steps": RESUME_FROM},
        "eval": {"max_examples": 16},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "tracking": {"enabled": False},
    }
    for section, values in sections.items():
        config[section] = {**config[section], **values}
    return validate(ClassifierConfig, config)


def test_a_lora_classifier_on_two_workers_resumes_exactly(ray_local, corpus, base, tmp_path):
    config = classifier_config(base, tmp_path / "a")
    learned = launch(config, ClassifierTask(config), to_dict(config), {}, [])
    checkpoint = Path(learned.checkpoint.path).parent / f"checkpoint-{RESUME_FROM:08d}"
    config = classifier_config(base, tmp_path / "b", run={"name": "resumed"},
                               checkpoint={"resume_from": str(checkpoint)})
    resumed = launch(config, ClassifierTask(config), to_dict(config), {}, [])

    assert [entry["step"] for entry in resumed.history] == list(range(RESUME_FROM + 1, STEPS + 1))
    assert [entry["loss"] for entry in resumed.history] == [entry["loss"] for entry in learned.history[RESUME_FROM:]]
    assert resumed.result.metrics["val_accuracy"] == learned.result.metrics["val_accuracy"]

    # The checkpoint: the base weights untouched, the adapters and the head beside them.
    state, metadata = load_finetuned_state(Path(learned.checkpoint.path) / "model", "gpt.")
    assert metadata["kind"] == "classifier" and metadata["labels"] == ["ham", "spam"]
    assert metadata["lora"] == {"rank": 4, "alpha": 8.0, "targets": config.trainable.lora.targets}
    original, _ = load_checkpoint(base)
    torch.testing.assert_close(state["gpt.blocks.0.attn.qkv_proj.weight"], original.blocks[0].attn.qkv_proj.weight)
    assert state["gpt.blocks.0.attn.qkv_proj.lora_b"].abs().sum() > 0
    assert state["head.weight"].shape == (2, 64)


def test_instruction_tuning_lowers_the_response_loss(ray_local, corpus, base, tmp_path):
    config = validate(InstructConfig, {
        "run": {"name": "instruct", "output": str(tmp_path), "max_steps": 8, "log_every_steps": 4,
                "eval_every_steps": 4},
        "model": {"init_from": str(base)},
        "batch": {"global_batch_size": 8, "micro_batch_size": 4},
        "optim": {"learning_rate": 3e-3, "warmup_steps": 0},
        "checkpoint": {"every_steps": 8},
        "eval": {"val_examples": 16},
        "tracking": {"enabled": False},
    })
    task = InstructTask(config)
    alone = Worker(rank=0, world_size=1, device=torch.device("cpu"), autocast=nullcontext, data_rank=0, data_ranks=1)
    before = task.evaluate(task.build_model(), alone, step=0, final=False).metrics["val_loss"]
    outcome = launch(config, task, to_dict(config), {}, [])
    assert outcome.result.metrics["step"] == 8
    assert outcome.result.metrics["val_loss"] < before - 0.3, (before, outcome.result.metrics["val_loss"])
