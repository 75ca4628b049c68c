"""Tokens per second the loader delivers to one Ray Train worker, against two yardsticks.

    ours:      a TorchTrainer with one worker (1 CPU; Ray Data's read tasks get the others) iterating
               model.data.train_batches: micro-batches of --batch x 256-token windows, the first
               --warmup batches untimed
    baseline:  pyarrow.parquet.ParquetFile.iter_batches over the same token shards in this process,
               each batch turned into the same int64 input_ids/targets (model.data.model_batch)
    training:  what the "small-cpu" model (4 layers x 192, context 256, GPT-2 vocabulary) consumes:
               one forward/backward/AdamW step on one micro-batch with torch on --cpus threads

Targets: ours >= 0.5x the pyarrow loop, and >= 20x the training consumption. Medians of --repeats.

Token data: tinyshakespeare (split at blank lines) and the 75-language Leipzig sentences (20 per
document), repeated --copies times, tokenized with GPT-2 into 256-token windows by
pipeline.tokenize.build_token_shards.

    .venv/bin/python benchmarks/loader.py --repeats 3
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/model.py shares its name with the model package, and Python puts this script's folder
# first on sys.path (Ray's workers too): without this line `import model` would find that file.
sys.path = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import ray.train  # noqa: E402
import torch  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from model import data  # noqa: E402
from model.config import preset  # noqa: E402
from model.gpt import GPT  # noqa: E402
from pipeline.corpus import corpus_path  # noqa: E402
from pipeline.tokenize import TokenizeConfig, build_token_shards  # noqa: E402
from pipeline.versions import Build, VersionPaths, publish  # noqa: E402

CONTEXT = 256


def token_dataset(folder: Path, copies: int) -> str:
    texts = corpus_path("text", "tinyshakespeare.txt").read_text().split("\n\n")
    for path in sorted(corpus_path("lang", "sentences").glob("*.txt")):
        lines = path.read_text().splitlines()
        texts += ["\n".join(lines[i : i + 20]) for i in range(0, len(lines), 20)]
    texts = [f"{copy} {text}" for copy in range(copies) for text in texts]
    text = Build(VersionPaths.of(str(folder / "text")), "build-benchmark")
    shard = f"{text.name}/shards/part-0.parquet"
    (folder / "text" / shard).parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}), folder / "text" / shard)
    publish(text, {"documents": len(texts), "shards": [{"path": shard, "rows": len(texts)}]})
    config = TokenizeConfig(context_length=CONTEXT, shard_tokens=2_000_000, val_fraction=0.01)
    manifest = build_token_shards(str(folder / "text"), str(folder / "tokens"), config)
    print(f"token data: {manifest['splits']['train']['tokens']:,} train tokens in {len(manifest['splits']['train']['shards'])} shards")
    return str(folder / "tokens")


def time_loader(config: dict) -> float:
    """The train loop: pull micro-batches; returns the delivered tokens per second."""
    batches = iter(data.train_batches(config["loader"], config["batch"], None, seed=0, global_batch=config["batch"],
                                      steps=config["steps"] + config["warmup"], rank=0, ranks=1))
    for _ in range(config["warmup"]):
        next(batches)
    started = time.perf_counter()
    tokens = 0
    for _ in range(config["steps"]):
        tokens += next(batches)["input_ids"].numel()
    return tokens / (time.perf_counter() - started)


def loader_tokens_per_s(loader: data.LoaderConfig, batch: int, steps: int, warmup: int, storage: str) -> float:
    trainer = TorchTrainer(
        time_loader,
        train_loop_config={"loader": loader, "batch": batch, "steps": steps, "warmup": warmup},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(storage_path=storage),
        datasets=data.ray_datasets(loader, 0, global_batch=batch, steps=steps + warmup, data_ranks=1),
        dataset_config=data.dataset_config(),
    )
    return trainer.fit().return_value


def pyarrow_tokens_per_s(root: str, batch: int, steps: int) -> float:
    manifest = data.token_manifest(root)
    files = [f"{root}/{shard['path']}" for shard in manifest["splits"]["train"]["shards"]]
    started = time.perf_counter()
    tokens, done = 0, 0
    while done < steps:
        for path in files:
            for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch, columns=data.TOKEN_COLUMNS):
                rows = pa.Table.from_batches([record_batch])
                rows = rows.append_column("source", pa.array([0] * len(rows), pa.int64()))
                tokens += data.model_batch(rows)["input_ids"].numel()
                done += 1
                if done == steps:
                    return tokens / (time.perf_counter() - started)
    raise AssertionError("unreachable")


def training_tokens_per_s(batch: int, steps: int = 5) -> float:
    model = GPT(preset("small-cpu", vocab_size=50257))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    input_ids = torch.randint(0, 50257, (batch, CONTEXT))
    targets = torch.randint(0, 50257, (batch, CONTEXT))
    times = []
    for step in range(steps + 2):
        started = time.perf_counter()
        _, loss = model(input_ids, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:  # the first steps allocate
            times.append(time.perf_counter() - started)
    return batch * CONTEXT / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1, help="copies of the text")
    parser.add_argument("--batch", type=int, default=32, help="micro-batch size (sequences)")
    parser.add_argument("--steps", type=int, default=1500, help="timed micro-batches per loader run")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()

    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Ray starts its workers at niceness 15; on a shared machine that starves them next to the
    # baseline, which runs at 0 in this process. Same priority for both.
    os.environ["RAY_worker_niceness"] = "0"
    torch.set_num_threads(args.cpus)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, object_store_memory=1_000_000_000,
             log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ours, baseline, training = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        root = token_dataset(Path(folder), args.copies)
        loader = data.LoaderConfig(sources=[data.TokenSourceConfig(path=root)])
        for repeat in range(args.repeats):
            ours.append(loader_tokens_per_s(loader, args.batch, args.steps, args.warmup, f"{folder}/runs"))
            baseline.append(pyarrow_tokens_per_s(root, args.batch, args.steps))
            training.append(training_tokens_per_s(args.batch))
            print(f"repeat {repeat}: loader {ours[-1]:,.0f} tokens/s, pyarrow loop {baseline[-1]:,.0f} tokens/s, "
                  f"small-cpu training {training[-1]:,.0f} tokens/s", flush=True)
    ray.shutdown()
    mine, base, train = statistics.median(ours), statistics.median(baseline), statistics.median(training)
    print(f"median: loader {mine:,.0f} tokens/s; pyarrow loop {base:,.0f} ({mine / base:.2f}x, target >= 0.5x); "
          f"small-cpu training consumes {train:,.0f} ({mine / train:.0f}x, target >= 20x)")


if __name__ == "__main__":
    main()
