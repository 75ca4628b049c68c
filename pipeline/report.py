"""What a finished build tells people: a console summary and an MLflow run."""

from __future__ import annotations

import tempfile
from typing import Any

from pipeline import tracking
from pipeline.tokenize import plot_doc_length_histogram


def funnel(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """Documents remaining after each stage, starting with every record read."""
    return [("records", manifest["records"])] + [(s["name"], s["docs_out"]) for s in manifest["stages"]]


def summary_table(manifest: dict[str, Any], seconds: dict[str, float]) -> str:
    dataset = manifest["dataset"]
    lines = [
        f"dataset {dataset['name']} {dataset['version']}: {manifest['documents']:,} documents "
        f"({manifest['text_bytes'] / 1e6:,.1f} MB of text) in {len(manifest['shards'])} shards, "
        f"from {manifest['records']:,} records in {len(manifest['inputs'])} input files",
        f"{'stage':<20}{'in':>10}{'out':>10}{'docs/s':>10}  dropped by reason (and in-place edits)",
    ]
    for stage in manifest["stages"]:
        rate = stage["docs_in"] / seconds[stage["name"]] if seconds.get(stage["name"]) else None
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(stage["drops"].items(), key=lambda kv: -kv[1]))
        edits = ", ".join(f"{name} {n:,}" for name, n in stage["counters"].items() if stage["name"] != "extract")
        lines.append(
            f"{stage['name']:<20}{stage['docs_in']:>10,}{stage['docs_out']:>10,}"
            f"{(f'{rate:,.0f}' if rate else '-'):>10}  {reasons or '-'}{f' (edits: {edits})' if edits else ''}"
        )
    return "\n".join(lines)


def tokens_summary(tokens: dict[str, Any], folder: str) -> str:
    splits = tokens["splits"]
    return (
        f"tokens ({tokens['tokenizer']['name']}, context {tokens['context_length']}): "
        + ", ".join(
            f"{split} {splits[split]['tokens']:,} in {splits[split]['sequences']:,} sequences "
            f"from {splits[split]['documents']:,} documents" for split in ("train", "val")
        )
        + f"\ntoken shards: {folder}"
    )


def token_metrics(tokens: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {"tokens.total": tokens["total_tokens"]}
    for split, counts in tokens["splits"].items():
        for key in ("tokens", "sequences", "documents"):
            metrics[f"tokens.{split}.{key}"] = counts[key]
    return metrics


def stage_metrics(manifest: dict[str, Any], seconds: dict[str, float]) -> dict[str, float]:
    metrics: dict[str, float] = {"records": manifest["records"], "documents": manifest["documents"]}
    metrics["text_mb"] = manifest["text_bytes"] / 1e6
    for stage in manifest["stages"]:
        name = stage["name"]
        metrics[f"{name}.docs_in"] = stage["docs_in"]
        metrics[f"{name}.docs_out"] = stage["docs_out"]
        for reason, count in stage["drops"].items():
            metrics[f"{name}.dropped.{reason.replace(':', '.')}"] = count
        for counter, count in stage["counters"].items():
            metrics[f"{name}.{counter}"] = count
        if seconds.get(name):
            metrics[f"{name}.docs_per_s"] = stage["docs_in"] / seconds[name]
    if seconds.get("total"):
        metrics["build_seconds"] = seconds["total"]
        metrics["records_per_s"] = manifest["records"] / seconds["total"]
    return metrics


def log_build(manifest: dict[str, Any], seconds: dict[str, float], experiment: str,
              tags: dict[str, str] | None = None, tokens: dict[str, Any] | None = None) -> str:
    """One MLflow run per build: config as params, counts as metrics, manifest and funnel as artifacts,
    and the token shards' counts, manifest and document-length histogram when it made them.
    The run is tagged with the dataset's name and version (so later runs can find it), plus ``tags``."""
    dataset = manifest["dataset"]
    tags = {"dataset.name": dataset["name"], "dataset.version": dataset["version"], **(tags or {})}
    with tracking.run(experiment, f"{dataset['name']}-{dataset['version']}", tags=tags) as active:
        tracking.log_config(manifest["config"])
        tracking.log_metrics(stage_metrics(manifest, seconds))
        tracking.log_dict(manifest, "manifest.json")
        tracking.log_figure(tracking.funnel_figure(funnel(manifest)), "funnel.png")
        if tokens is not None:
            tracking.log_metrics(token_metrics(tokens))
            tracking.log_dict(tokens, "tokens/manifest.json")
            with tempfile.TemporaryDirectory() as scratch:
                plot_doc_length_histogram(tokens, f"{scratch}/doc_length_tokens.png")
                tracking.log_artifacts(scratch, "tokens")
        return active.info.run_id
