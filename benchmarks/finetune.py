"""Fine-tuning benchmarks, each case a real job through the shared loop (local Ray, MLflow in a
temporary SQLite file), side by side in one process:

- spam classification on the SMS set, split as the book does (balanced, 70/10/20): from our
  pretrained checkpoint against the same model from a random init (what pretraining adds), and LoRA
  against full fine-tuning from the same checkpoint, with trainable-parameter counts;
- instruction tuning from the same checkpoint: validation loss on response tokens through the first
  epoch, and three test responses next to their references;
- what pretraining pays (``instruct-pays``): jobs/configs/finetune-instruct-demo.yaml (one epoch of
  full instruction tuning of small-cpu) from the checkpoint and from a random init, over ``--seeds``
  seeds each; the final response ``val_bpb`` of each, their means and standard errors, and the gap in
  standard errors of the difference, at the config's learning rate for both.

    python -m benchmarks.finetune --base data/runs/pretrain-demo [--epochs 5] [--out results.json]
    python -m benchmarks.finetune --base data/runs/pretrain-english --cases instruct-pays --seeds 3

(as a module: run as a script, its folder would come first on sys.path and benchmarks/model.py
would shadow the project's model package).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import ray
import torch

from model.checkpoint import load_pretrained
from model.finetune.base import resolve_checkpoint
from model.finetune.classify import ClassifierConfig, ClassifierTask
from model.finetune.instruct import InstructConfig, InstructTask
from model.launch import launch
from pipeline import tracking
from pipeline.config import load_config, to_dict, validate

SMS_TRAIN_EXAMPLES = 1045  # the balanced set's 70%
INSTRUCT_DEMO = Path(__file__).resolve().parent.parent / "jobs" / "configs" / "finetune-instruct-demo.yaml"


def classifier_case(name: str, output: Path, epochs: int, lora: bool, learning_rate: float,
                    base: str | None = None, architecture: dict[str, Any] | None = None) -> dict:
    """From ``base``, or from a random init of ``architecture`` (the GPTConfig fields)."""
    batch = 16
    steps = epochs * (SMS_TRAIN_EXAMPLES // batch)
    if base:
        model = {"init_from": base, "overrides": {"drop_rate": 0.1}}
    else:
        model = {"preset": "small-cpu", "overrides": {**architecture, "drop_rate": 0.1}}
    config = validate(ClassifierConfig, {
        "run": {"name": name, "output": str(output), "max_steps": steps, "log_every_steps": 20,
                "eval_every_steps": steps // epochs},
        "model": model,
        "trainable": {"lora": {"enabled": lora, "rank": 8, "alpha": 16}},
        "batch": {"global_batch_size": batch, "micro_batch_size": batch},
        "optim": {"learning_rate": learning_rate, "warmup_steps": 20, "weight_decay": 0.1},
        "checkpoint": {"every_steps": steps, "keep_last": 1},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "tracking": {"experiment": "benchmark-finetune"},
    })
    task = ClassifierTask(config)
    started = time.perf_counter()
    params = task.params()
    launch(config, task, to_dict(config), params, task.inputs())
    return {"case": name, "seconds": time.perf_counter() - started, "steps": steps,
            "parameters": params["model.parameters"], "trainable_parameters": params["model.trainable_parameters"],
            **{key: task.final_metrics[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_f1")}}


def instruct_case(base: str, output: Path) -> dict:
    batch, train_examples = 8, 935
    steps = train_examples // batch  # one epoch
    config = validate(InstructConfig, {
        "run": {"name": "instruct", "output": str(output), "max_steps": steps, "log_every_steps": 10,
                "eval_every_steps": 13},
        "model": {"init_from": base},
        "batch": {"global_batch_size": batch, "micro_batch_size": batch},
        "optim": {"learning_rate": 1e-4, "warmup_steps": 10, "min_lr_ratio": 0.1, "weight_decay": 0.1},
        "checkpoint": {"every_steps": steps, "keep_last": 1},
        "eval": {"test_examples": 3, "max_new_tokens": 64},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "tracking": {"experiment": "benchmark-finetune"},
    })
    task = InstructTask(config)
    alone_before = _val_loss_before(task)
    started = time.perf_counter()
    outcome = launch(config, task, to_dict(config), task.params(), task.inputs())
    client = mlflow.MlflowClient(tracking.tracking_uri())
    history = sorted((m.step, m.value) for m in client.get_metric_history(outcome.run_id, "val_loss"))
    return {"case": "instruct", "seconds": time.perf_counter() - started, "steps": steps,
            "val_loss": [(0, alone_before), *history], "responses": task.responses}


def instruct_pays_case(base: str, output: Path, seeds: int) -> dict:
    """Response val bpb after jobs/configs/finetune-instruct-demo.yaml (one epoch of full fine-tuning,
    the case ``make demo`` prints), from ``base`` and from a random init of the same architecture."""
    finals: dict[str, list[float]] = {"pretrained": [], "random-init": []}
    for seed in range(seeds):
        for start, overrides in (("pretrained", [f"model.init_from={base}"]), ("random-init", [])):
            config = load_config(InstructConfig, INSTRUCT_DEMO, [
                f"run.name=pays-{start}-{seed}", f"run.output={output}", f"run.seed={seed}",
                "tracking.experiment=benchmark-finetune", *overrides])
            task = InstructTask(config)
            outcome = launch(config, task, to_dict(config), task.params(), task.inputs())
            finals[start].append(outcome.result.metrics["val_bpb"])  # the last step's evaluation
            print(f"  {start} seed {seed}: response val bpb {finals[start][-1]:.4f}", flush=True)
    summary = {start: {"val_bpb": values, "mean": statistics.mean(values),
                       "standard_error": statistics.stdev(values) / len(values) ** 0.5}
               for start, values in finals.items()}
    gap = summary["random-init"]["mean"] - summary["pretrained"]["mean"]
    error = (summary["random-init"]["standard_error"] ** 2 + summary["pretrained"]["standard_error"] ** 2) ** 0.5
    return {"case": "instruct-pays", "seeds": seeds, **summary,
            "gap_bpb": gap, "gap_in_standard_errors": gap / error if error else float("inf")}


def _val_loss_before(task: InstructTask) -> float:
    from contextlib import nullcontext

    from model.train import Worker

    worker = Worker(rank=0, world_size=1, device=torch.device("cpu"), autocast=nullcontext)
    torch.manual_seed(task.config.run.seed)
    return task.evaluate(task.build_model(), worker, step=0, final=False).metrics["val_loss"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=500_000_000,
             log_to_driver=False)
    base = str(resolve_checkpoint(args.base).resolve())
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
               "ray": ray.__version__, "base": base, "cases": []}
    architecture = load_pretrained(base)[0].config.to_dict()
    cases = {
        "spam-pretrained-full": lambda: classifier_case("spam-pretrained-full", work, args.epochs, False, 3e-4,
                                                        base=base),
        "spam-random-init-full": lambda: classifier_case("spam-random-init-full", work, args.epochs, False, 3e-4,
                                                         architecture=architecture),
        "spam-pretrained-lora": lambda: classifier_case("spam-pretrained-lora", work, args.epochs, True, 1e-3,
                                                        base=base),
        "instruct": lambda: instruct_case(base, work),
        "instruct-pays": lambda: instruct_pays_case(base, work, args.seeds),
    }
    for name in args.cases.split(","):
        result = cases[name]()
        results["cases"].append(result)
        print(json.dumps(result), flush=True)
    by_case = {result["case"]: result for result in results["cases"]}
    full, random_init = by_case.get("spam-pretrained-full"), by_case.get("spam-random-init-full")
    lora = by_case.get("spam-pretrained-lora")
    if full and random_init:
        print(f"pretrained / random-init test accuracy: {full['test_accuracy'] / random_init['test_accuracy']:.3f}")
    if full and lora:
        print(f"LoRA / full: test accuracy {lora['test_accuracy'] / full['test_accuracy']:.3f}, trainable "
              f"parameters {lora['trainable_parameters']:,} / {full['trainable_parameters']:,}")
    pays = by_case.get("instruct-pays")
    if pays:
        print(f"instruction response val bpb after one epoch, mean +- standard error over {pays['seeds']} seeds: "
              f"pretrained {pays['pretrained']['mean']:.4f} +- {pays['pretrained']['standard_error']:.4f}, "
              f"random init {pays['random-init']['mean']:.4f} +- {pays['random-init']['standard_error']:.4f}; "
              f"gap {pays['gap_bpb']:.4f} bpb = {pays['gap_in_standard_errors']:.1f} standard errors (target >= 3)")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="our pretrained checkpoint (or a training run's folder)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cases", default="spam-pretrained-full,spam-random-init-full,spam-pretrained-lora,instruct",
                        help="comma-separated cases to run")
    parser.add_argument("--seeds", type=int, default=3, help="instruct-pays: seeds per side")
    parser.add_argument("--out", default="finetune-results.json")
    args = parser.parse_args()
    main()
