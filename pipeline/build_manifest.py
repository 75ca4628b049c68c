"""A build's manifest: inputs, per-stage funnel, shards and audit files; and the check that it
accounts for every row read."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pipeline.build_config import BuildConfig, Plan
from pipeline.config import to_dict
from pipeline.decontaminate import DecontaminateConfig, eval_set_summaries

class AccountingError(RuntimeError):
    """The output does not account for every row read: a bug, so nothing is published."""


def check_accounting(manifest: dict[str, Any], rows_read: int) -> None:
    """Every row read is kept or dropped with a reason, exactly once: ``kept + drops == read``."""
    dropped = manifest["records"] - manifest["documents"]
    if manifest["records"] != rows_read:
        raise AccountingError(
            f"read {rows_read} rows, but the output accounts for {manifest['records']} "
            f"({manifest['documents']} kept + {dropped} dropped); nothing was published"
        )


def assemble_manifest(
    config: BuildConfig,
    plan: Plan,
    inputs: list[dict[str, Any]],
    summaries: list[dict[str, Any]],
    counters: dict[str, dict[str, int]],
    build_name: str,
) -> dict[str, Any]:
    """The manifest of one build's files; their paths start at its version folder."""
    summaries = sorted(summaries, key=lambda s: s["shard"])
    drops: Counter[str] = Counter()
    for summary in summaries:
        drops.update(json.loads(summary["drops"]))
    kept = sum(s["rows"] for s in summaries)
    records = kept + sum(drops.values())

    stages, remaining = [], records
    for name in plan.stage_names:
        prefix = f"{name}:"
        stage_drops = {reason.removeprefix(prefix): n for reason, n in sorted(drops.items()) if reason.startswith(prefix)}
        dropped = sum(stage_drops.values())
        stages.append(
            {
                "name": name,
                "docs_in": remaining,
                "docs_out": remaining - dropped,
                "drops": stage_drops,
                "counters": dict(sorted(counters.get(name, {}).items())),
            }
        )
        remaining -= dropped
    for segment in plan.segments:
        for name, options in segment:
            if isinstance(options, DecontaminateConfig):  # what the evaluation sets could catch
                next(stage for stage in stages if stage["name"] == name)["eval_sets"] = eval_set_summaries(options)
    unknown = sorted(r for r in drops if r.split(":", 1)[0] not in plan.stage_names)
    if unknown:
        raise RuntimeError(f"drop reasons from no configured stage: {unknown}")

    return {
        "dataset": to_dict(config.dataset),
        "config": to_dict(config),
        "inputs": inputs,
        "records": records,
        "documents": kept,
        "text_bytes": sum(s["text_bytes"] for s in summaries),
        "read_errors": {
            reason: n for reason, n in stages[0]["drops"].items() if not reason.startswith("record_type:")
        },
        "stages": stages,
        "shards": [
            {"path": f"{build_name}/shards/{s['name']}", "rows": s["rows"], "sha256": s["sha256"]}
            for s in summaries if s["rows"]
        ],
        "audit": {
            "rows": sum(s["audit_rows"] for s in summaries),
            "files": [f"{build_name}/audit/{s['name']}" for s in summaries if s["audit_rows"]],
        },
    }
