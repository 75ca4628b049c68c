"""Exact resume through real Ray Train: a run that fails and resumes sees the very batches of one that does not.

Each run trains nothing: it records the (source, sequence id) of every row of every micro-batch, per
worker, and checkpoints the loader state through ``ray.train.report``. The failing run raises after a
checkpoint; Ray Train restarts the workers, which resume from it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import ray.train
from ray.train.torch import TorchTrainer

from model import data
from pipeline.tokenize import TokenizeConfig
from tests.unit.test_tokenize import build_without_ray, documents

pytestmark = pytest.mark.integration

MICRO_BATCH, GLOBAL_BATCH, STEPS, CHECKPOINT_EVERY, FAIL_AFTER = 4, 8, 20, 4, 13


@pytest.fixture(scope="module")
def loader_config(corpus, tmp_path_factory) -> data.LoaderConfig:
    """Two sources, weighted 1:1: ~600 and ~60 training windows of 32 tokens (the small one wraps epochs)."""
    root = tmp_path_factory.mktemp("token-sources")
    alice = (corpus / "text" / "gutenberg-11-alice.txt").read_text().split("\n\n")[:400]
    verdict = (corpus / "text" / "the-verdict.txt").read_text().split("\n\n")[:25]
    config = TokenizeConfig(context_length=32, shard_tokens=8_000, val_fraction=0.1)
    build_without_ray(documents(alice, "alice"), root / "alice", config)
    build_without_ray(documents(verdict, "verdict"), root / "verdict", config)
    return data.LoaderConfig(
        sources=[data.TokenSourceConfig(path=str(root / "alice")), data.TokenSourceConfig(path=str(root / "verdict"))],
        prefetch_batches=1,
    )


def record_batches(config: dict) -> None:
    """The train loop: log each micro-batch's rows; checkpoint the loader; fail once if asked."""
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    state = config["resume"]
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / f"loader-{rank}.json").read_text())
    batches = data.train_batches(config["loader"], MICRO_BATCH, state, seed=config["seed"], global_batch=GLOBAL_BATCH,
                                 steps=STEPS, rank=rank, ranks=world_size)
    attempt = "first" if checkpoint is None else "resumed"
    log = Path(config["log_dir"]) / f"rank-{rank}.jsonl"
    iterator = iter(batches)
    accumulation = GLOBAL_BATCH // (MICRO_BATCH * world_size)
    while batches.step < STEPS:
        for _ in range(accumulation):
            batch = next(iterator)
            rows = list(zip(batch["source"].tolist(), batch["sequence_id"].tolist()))
            with log.open("a") as f:
                f.write(json.dumps({"attempt": attempt, "step": batches.step, "rows": rows}) + "\n")
        if config["fail"] and attempt == "first" and batches.step == FAIL_AFTER:
            raise RuntimeError("simulated worker failure")
        if batches.step % CHECKPOINT_EVERY == 0:
            with log.open("a") as f:
                f.write(json.dumps({"attempt": attempt, "state": batches.state_dict()}) + "\n")
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / f"loader-{rank}.json").write_text(json.dumps(batches.state_dict()))
                ray.train.report({"step": batches.step}, checkpoint=ray.train.Checkpoint.from_directory(folder))
    validation = [
        row for b in data.validation_batches(config["loader"], MICRO_BATCH) for row in zip(b["source"].tolist(), b["sequence_id"].tolist())
    ]
    with log.open("a") as f:
        f.write(json.dumps({"attempt": attempt, "val": validation, "tokens": batches.tokens_per_source()}) + "\n")


def run(loader_config: data.LoaderConfig, workers: int, fail: bool, tmp_path: Path, resume: dict | None = None) -> dict[int, list[dict]]:
    log_dir = tmp_path / f"log-{workers}-{fail}"
    log_dir.mkdir()
    trainer = TorchTrainer(
        record_batches,
        train_loop_config={"loader": loader_config, "seed": 11, "log_dir": str(log_dir), "fail": fail, "resume": resume},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(
            name=f"resume-{workers}-{fail}",
            storage_path=str(tmp_path / "runs"),
            failure_config=ray.train.FailureConfig(max_failures=1 if fail else 0),
        ),
        datasets=data.ray_datasets(loader_config, seed=11, global_batch=GLOBAL_BATCH, steps=STEPS, data_ranks=workers),
        dataset_config=data.dataset_config(),
    )
    trainer.fit()
    return {rank: [json.loads(line) for line in (log_dir / f"rank-{rank}.jsonl").read_text().splitlines()] for rank in range(workers)}


def global_batches(records: dict[int, list[dict]], attempt: str | None = None) -> dict[int, list[tuple[int, int]]]:
    """Step -> the rows of its global batch: every worker's micro-batches, rank after rank."""
    found: dict[int, list[tuple[int, int]]] = {}
    for rank in sorted(records):
        for record in records[rank]:
            if "rows" in record and attempt in (None, record["attempt"]):
                found.setdefault(record["step"], []).extend(map(tuple, record["rows"]))
    return found


@pytest.fixture(scope="module")
def uninterrupted(ray_local, loader_config, tmp_path_factory) -> dict[int, dict[int, list[dict]]]:
    """The records of an uninterrupted run, with 1 and with 2 workers."""
    return {workers: run(loader_config, workers, False, tmp_path_factory.mktemp("straight")) for workers in (1, 2)}


def test_each_step_reads_the_same_global_batch_on_any_number_of_workers(uninterrupted):
    one, two = global_batches(uninterrupted[1]), global_batches(uninterrupted[2])
    assert sorted(one) == list(range(1, STEPS + 1)) and one == two
    assert all(len(rows) == GLOBAL_BATCH for rows in one.values())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_and_resumed_run_sees_exactly_the_batches_of_an_uninterrupted_one(loader_config, uninterrupted, workers, tmp_path):
    straight = uninterrupted[workers]
    broken = run(loader_config, workers, fail=True, tmp_path=tmp_path)
    resume_from = (FAIL_AFTER // CHECKPOINT_EVERY) * CHECKPOINT_EVERY
    for rank in range(workers):
        expected = [r["rows"] for r in straight[rank] if "rows" in r]
        first = [r for r in broken[rank] if r["attempt"] == "first" and "rows" in r]
        resumed = [r for r in broken[rank] if r["attempt"] == "resumed" and "rows" in r]
        assert resumed[0]["step"] == resume_from + 1  # the next unseen batch: none skipped
        stitched = [r["rows"] for r in first if r["step"] <= resume_from] + [r["rows"] for r in resumed]
        assert stitched == expected  # ... and none repeated
        # What the first attempt did after its last checkpoint was lost with it, and is redone alike.
        assert [r["rows"] for r in first] == expected[: len(first)]
        final = broken[rank][-1]
        assert final["val"] == straight[rank][-1]["val"] and final["tokens"] == straight[rank][-1]["tokens"]


@pytest.mark.parametrize(("written_by", "resumed_on"), [(2, 1), (1, 2)])
def test_a_run_resumes_on_another_number_of_workers_with_the_next_unseen_rows(loader_config, uninterrupted, written_by,
                                                                              resumed_on, tmp_path):
    state = next(r["state"] for r in uninterrupted[written_by][0] if "state" in r and r["state"]["step"] == 8)
    resumed = run(loader_config, resumed_on, fail=False, tmp_path=tmp_path, resume=state)
    expected = global_batches(uninterrupted[written_by])
    assert global_batches(resumed) == {step: rows for step, rows in expected.items() if step > 8}


def test_sources_are_drawn_in_proportion_and_rows_repeat_only_in_a_new_epoch(loader_config, uninterrupted):
    drawn = data.step_counts([1.0, 1.0], GLOBAL_BATCH, STEPS, seed=11).sum(axis=0)
    verdict_epoch = data.sources(loader_config)[1][2]["splits"]["train"]["sequences"]
    assert drawn[1] > verdict_epoch  # the small source starts a second epoch
    rows = [row for step, batch in sorted(global_batches(uninterrupted[1]).items()) for row in batch]
    assert [sum(1 for source, _ in rows if source == index) for index in (0, 1)] == drawn.tolist()
    verdict = [sequence for source, sequence in rows if source == 1]
    assert len(set(verdict[:verdict_epoch])) == verdict_epoch
    assert verdict[verdict_epoch:] != verdict[: len(verdict) - verdict_epoch]  # reshuffled
    tokens = uninterrupted[1][0][-1]["tokens"]
    assert tokens == {"alice": int(drawn[0]) * 32, "verdict": int(drawn[1]) * 32}
    assert uninterrupted[2][1][-1]["tokens"] == tokens  # counted over all workers


def test_validation_rows_are_the_same_for_any_world_size(uninterrupted):
    one = [tuple(row) for row in uninterrupted[1][0][-1]["val"]]
    two = [tuple(row) for rank in (0, 1) for row in uninterrupted[2][rank][-1]["val"]]
    assert sorted(one) == sorted(two) and len(set(one)) == len(one)
    assert {source for source, _ in one} == {0, 1}
