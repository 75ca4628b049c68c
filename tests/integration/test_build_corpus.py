"""Whole builds over the shared corpus, through to token shards: every stage runs on real data, and
text read as plain input comes back out of the token shards unchanged."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.build import build, tokenize_version, tokens_dir
from pipeline.build_config import BuildConfig
from pipeline.config import load_config
from pipeline.readers import ReadConfig, list_inputs, read_file
from pipeline.stages import DEDUP, REGISTRY
from tests.unit.test_tokenize import decoded_documents

pytestmark = pytest.mark.integration

FULL_CHAIN = """
  - url_filter: {domain_blocklist_files: [], url_substring_blocklist_files: []}
  - extract: {extractor: resiliparse}
  - language: {languages: [en], min_score: 0.65}
  - gopher_repetition: {}
  - gopher_quality: {}
  - c4_quality: {filter_no_terminal_punct: false}
  - fineweb_quality: {max_duplicate_line_chars: 0.01}
  - dedup: {exact: {enabled: true}, minhash: {preset: fineweb}}
  - decontaminate: {}
  - pii: {}
"""


def write_config(tmp_path: Path, inputs: list[str], stages: str, read: str = "{}") -> BuildConfig:
    path = tmp_path / "build.yaml"
    path.write_text(
        f"dataset: {{name: corpus, version: v1}}\ninputs: {json.dumps(inputs)}\noutput: {tmp_path / 'text'}\n"
        f"read: {read}\nstages: {stages}\nshards: {{target_mb: 0.5}}\ncompute: {{stage_workers: 2}}\n"
        f"tokenize: {{output: {tmp_path / 'tokens'}, context_length: 128, shard_tokens: 200000, val_fraction: 0.1}}\n"
    )
    return load_config(BuildConfig, path)


def test_every_stage_runs_over_every_shared_web_file(ray_local, corpus, tmp_path):
    inputs = [str(corpus / "web")]  # WARC, WET, JSONL, saved HTML pages, and the malformed WET files
    config = write_config(tmp_path, inputs, FULL_CHAIN)
    manifest = build(config)

    stages = {stage["name"]: stage for stage in manifest["stages"]}
    assert list(stages) == ["read", *(entry.split(":")[0].strip(" -") for entry in FULL_CHAIN.strip().splitlines())]
    assert set(stages) == {"read", DEDUP, *REGISTRY}  # every stage there is
    assert all(stage["docs_in"] > 0 for stage in stages.values())
    # Every HellaSwag item pairs its context with 4 endings; the manifest says how many could be caught.
    hellaswag = stages["decontaminate"]["eval_sets"]["hellaswag-val-1000"]
    assert hellaswag["items"] == 1000 and 900 < hellaswag["items_with_ngrams"] <= 1000 and hellaswag["ngrams"] > 10_000
    # Real pages are dropped by each quality family, and every drop is counted under its stage.
    for name in ("language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"):
        assert sum(stages[name]["drops"].values()) > 0, name
    assert manifest["records"] - sum(sum(s["drops"].values()) for s in stages.values()) == manifest["documents"] > 50
    assert any(reason.startswith(("truncated", "corrupt", "malformed")) for reason in manifest["read_errors"])
    read_paths = {entry["path"] for entry in manifest["inputs"]}
    assert len(read_paths) == len(list_inputs(inputs)) and any(path.endswith(".html.gz") for path in read_paths)

    tokens = tokenize_version(config, "v1")
    assert tokens["total_tokens"] > 100_000
    assert tokens["splits"]["train"]["documents"] + tokens["splits"]["val"]["documents"] == manifest["documents"]


def test_plain_text_and_web_text_come_back_out_of_the_token_shards(ray_local, corpus, tmp_path):
    shakespeare = corpus / "text" / "tinyshakespeare.txt"
    wet = corpus / "web" / "wet" / "cc-main-2016-50-sample.warc.wet.gz"
    config = write_config(tmp_path, [str(shakespeare), str(wet)], "[]", read="{text_documents: paragraphs}")
    build(config)
    tokens = tokenize_version(config, "v1")

    expected = Counter(row["text"] for path in (shakespeare, wet)
                       for row in read_file(str(path), ReadConfig(text_documents="paragraphs")) if "text" in row)
    assert len(expected) > 7000  # tinyshakespeare's speeches, and the WET pages
    out = Path(tokens_dir(config, "v1"))
    assert decoded_documents(out, tokens, "train") + decoded_documents(out, tokens, "val") == expected
