"""The training loop under Ray Train on a local Ray: it learns, it resumes exactly, and gradient
accumulation gives the same result however the global batch is split over workers.

The data is tinyshakespeare, cut into documents of 20 speeches so that the build's split by document
id holds some back for validation, built into token shards by the real pipeline with a 512-token
BPE trained on it (a small vocabulary keeps a CPU step fast).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from model import data
from model.checkpoint import save_checkpoint
from model.gpt import GPT
from model.launch import launch
from model.pretrain import PretrainConfig, PretrainTask
from pipeline.build import build
from pipeline.build_config import BuildConfig
from pipeline.config import to_dict, validate
from pipeline.tokenize import TokenizeConfig, build_token_shards
from pipeline.tokenizer import train_bpe

pytestmark = pytest.mark.integration

SPEECHES_PER_DOCUMENT = 20
CONTEXT_LENGTH = 64
LEARN_STEPS, RESUME_FROM = 60, 50


@dataclass
class Shakespeare:
    tokens: str  # the token dataset folder
    train_rows: pa.Table  # the train split's token rows, in manifest order
    unigram_entropy: float  # nats per token of the train targets' unigram distribution


def build_shakespeare_tokens(root: Path, corpus: Path, tokenizer: str | None, speeches: int | None = None) -> str:
    """tinyshakespeare (its first ``speeches`` speeches) as documents of 20 speeches, through the real
    build and tokenization into ``root/tokens`` (needs a Ray). ``tokenizer``: a name, or None for a
    512-token BPE trained on the text. Returns the token dataset folder."""
    cut = (corpus / "text" / "tinyshakespeare.txt").read_text().split("\n\n")[:speeches]
    documents = ["\n\n".join(cut[i : i + SPEECHES_PER_DOCUMENT]) for i in range(0, len(cut), SPEECHES_PER_DOCUMENT)]
    with open(root / "documents.jsonl", "w") as out:
        for number, text in enumerate(documents):
            out.write(json.dumps({"id": f"tinyshakespeare-{number:04d}", "text": text}) + "\n")
    build(validate(BuildConfig, {"inputs": [str(root / "documents.jsonl")], "output": str(root / "text"),
                                 "dataset": {"name": "tinyshakespeare", "version": "v1"}, "stages": []}))
    if tokenizer is None:
        train_bpe(documents, vocab_size=512, out_dir=root / "tokenizer")
        tokenizer = str(root / "tokenizer")
    tokenize = {"tokenizer": tokenizer, "context_length": CONTEXT_LENGTH, "val_fraction": 0.1}
    build_token_shards(str(root / "text" / "v1"), str(root / "tokens"), validate(TokenizeConfig, tokenize))
    return str(root / "tokens")


@pytest.fixture(scope="module")
def shakespeare(ray_local, corpus, tmp_path_factory) -> Shakespeare:
    tokens = build_shakespeare_tokens(tmp_path_factory.mktemp("shakespeare"), corpus, tokenizer=None)
    manifest = data.read_token_manifest(validate(data.LoaderConfig, {"sources": [{"path": tokens}]}))
    assert manifest["splits"]["val"]["sequences"] > 100
    rows = pa.concat_tables(
        pq.read_table(f"{tokens}/{shard['path']}", columns=data.TOKEN_COLUMNS)
        for shard in manifest["splits"]["train"]["shards"]
    )
    rows = rows.append_column("source", pa.array(np.zeros(len(rows), np.int64)))
    targets = data.model_batch(rows)["targets"]
    targets = targets[targets != data.IGNORE_INDEX]
    frequencies = torch.bincount(targets).double() / len(targets)
    frequencies = frequencies[frequencies > 0]
    return Shakespeare(tokens, rows, float(-(frequencies * frequencies.log()).sum()))


def pretrain_config(shakespeare: Shakespeare, output: Path, **sections: dict[str, Any]) -> PretrainConfig:
    config = {
        "run": {"name": "learn", "output": str(output), "max_steps": LEARN_STEPS, "log_every_steps": 10,
                "eval_every_steps": 30},
        # Dropout on, so that resuming has to restore each worker's random generator too.
        "model": {"preset": "tiny", "overrides": {"drop_rate": 0.1}},
        "data": {"sources": [{"path": shakespeare.tokens}], "val_sequences": 256},
        "batch": {"global_batch_size": 32, "micro_batch_size": 8},
        "optim": {"learning_rate": 3e-3, "warmup_steps": 10},
        "checkpoint": {"every_steps": RESUME_FROM, "keep_last": 2},
        "eval": {"val_batches": 16, "hellaswag": {"enabled": False}, "samples": {"prompts": []}},
        # Half a CPU per worker leaves one of the two for Ray Data to read the shards with.
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "parallel": {"strategy": "ddp"},
        "tracking": {"enabled": False},
    }
    for section, values in sections.items():
        config[section] = {**config[section], **values}
    return validate(PretrainConfig, config)


@pytest.fixture(scope="module")
def learned(shakespeare, tmp_path_factory):
    """A 2-worker run of LEARN_STEPS steps, checkpointed at RESUME_FROM and at the end."""
    config = pretrain_config(shakespeare, tmp_path_factory.mktemp("runs"))
    return launch(config, PretrainTask(config), to_dict(config), {}, [])


def test_validation_loss_falls_clearly_below_the_unigram_entropy(learned, shakespeare):
    val_loss = learned.result.metrics["val_loss"]
    # Bits per byte: the same loss per byte of text instead of per token, in bits (the 512-token BPE
    # packs 2 to 3 bytes of Shakespeare into a token).
    assert 0.25 * val_loss < learned.result.metrics["val_bpb"] < 0.75 * val_loss
    # The unigram entropy is what the best model blind to context can reach: 5.2 nats here.
    assert 5.0 < shakespeare.unigram_entropy < 5.5
    assert val_loss < shakespeare.unigram_entropy - 0.5, (val_loss, shakespeare.unigram_entropy)
    losses = [entry["loss"] for entry in learned.history]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0


def test_resumed_run_repeats_the_uninterrupted_one_exactly(learned, shakespeare, tmp_path):
    checkpoint = Path(learned.checkpoint.path).parent / f"checkpoint-{RESUME_FROM:08d}"
    config = pretrain_config(shakespeare, tmp_path, run={"name": "resumed"}, checkpoint={"resume_from": str(checkpoint)})
    resumed = launch(config, PretrainTask(config), to_dict(config), {}, [])

    assert [entry["step"] for entry in resumed.history] == list(range(RESUME_FROM + 1, LEARN_STEPS + 1))
    expected = learned.history[RESUME_FROM:]
    assert [entry["lr"] for entry in resumed.history] == [entry["lr"] for entry in expected]
    assert [entry["loss"] for entry in resumed.history] == [entry["loss"] for entry in expected]
    assert resumed.result.metrics["val_loss"] == learned.result.metrics["val_loss"]


@pytest.fixture(scope="module")
def splits(shakespeare, tmp_path_factory) -> dict[tuple[str, int], Any]:
    """The same 20 steps (global batch 32, no dropout) as 1 worker x 4 micro-batches of 8, and as
    2 workers x 2, under DDP and FSDP, checkpointed at step 10."""
    output = tmp_path_factory.mktemp("splits")
    # One initial model for all: FSDP draws each shard's init on its own worker, the same in
    # distribution but not in value as one worker's; loading it also takes FSDP's broadcast path.
    task = PretrainTask(pretrain_config(shakespeare, output))
    torch.manual_seed(0)
    save_checkpoint(GPT(task.model_config), output / "init", task.tokenizer)
    outcomes = {}
    for workers, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp"), (2, "pipeline"), (4, "pipeline")):
        config = split_config(shakespeare, output, output / "init", f"{strategy}-{workers}", workers, strategy)
        outcomes[strategy, workers] = launch(config, PretrainTask(config), to_dict(config), {}, [])
    return outcomes


# 2 stages of the tiny model's 2 blocks: GPipe alone (recomputing its blocks in backward), and 1F1B in
# each of 2 data-parallel replicas.
PIPELINES = {2: {"pipeline_schedule": "gpipe", "activation_checkpointing": True}, 4: {"pipeline_schedule": "1f1b"}}


def split_config(shakespeare: Shakespeare, output: Path, init: Path, name: str, workers: int, strategy: str,
                 **checkpoint) -> PretrainConfig:
    pipeline = PIPELINES[workers] if strategy == "pipeline" else {}
    return pretrain_config(
        shakespeare, output, run={"name": name, "max_steps": 20, "eval_every_steps": 20},
        model={"init_from": str(init), "overrides": {"drop_rate": 0.0}},
        scaling={"num_workers": workers, "cpus_per_worker": 1 / workers},
        checkpoint={"every_steps": 10, **checkpoint}, parallel={"strategy": strategy, **pipeline},
        eval={"val_batches": 32},  # all 256 validation rows on any number of workers
    )


def losses(outcome) -> list[float]:
    return [entry["loss"] for entry in outcome.history]


def test_one_worker_accumulating_four_equals_two_workers_accumulating_two(splits):
    """The loader gives each step the same global batch for any number of workers, and accumulation
    is exact: the same loss curve, up to float rounding, under DDP, FSDP and a 2-stage pipeline
    (alone, and in 2 data-parallel replicas), and the same validation loss at the end."""
    reference = splits["ddp", 1]
    assert [len(outcome.history) for outcome in splits.values()] == [20] * 5
    for key in (("ddp", 2), ("fsdp", 2), ("pipeline", 2), ("pipeline", 4)):
        np.testing.assert_allclose(losses(splits[key]), losses(reference), rtol=1e-5, err_msg=str(key))
        assert splits[key].result.metrics["val_loss"] == pytest.approx(reference.result.metrics["val_loss"], rel=1e-5)
    assert losses(reference)[-1] < losses(reference)[0] - 0.5  # it trained: the curves are not flat


@pytest.mark.parametrize(("written_by", "resumed_on"),
                         [(("fsdp", 2), ("ddp", 1)), (("ddp", 1), ("fsdp", 2)), (("pipeline", 4), ("ddp", 1))])
def test_a_checkpoint_resumes_on_another_number_of_workers(splits, shakespeare, tmp_path, written_by, resumed_on):
    """Sharded checkpoints reshard, and the loader's position is global: steps 11-20 resumed on
    another number of workers (and another strategy) repeat the uninterrupted run's losses. Up to
    float rounding (rtol 1e-5): the same sums, added in another order."""
    run_folder = Path(splits[written_by].checkpoint.path).parent
    strategy, workers = resumed_on
    config = split_config(shakespeare, tmp_path, run_folder.parent / "init", "resumed", workers, strategy,
                          resume_from=str(run_folder / "checkpoint-00000010"))
    resumed = launch(config, PretrainTask(config), to_dict(config), {}, [])
    assert [entry["step"] for entry in resumed.history] == list(range(11, 21))
    np.testing.assert_allclose(losses(resumed), losses(splits[resumed_on])[10:], rtol=1e-5)
