"""The dedup config: presets, validation errors that name the key, and the stage snippets."""

from __future__ import annotations

import pytest
import yaml

from pipeline.config import ConfigError, load_config, validate
from pipeline.corpus import REPO_ROOT
from pipeline.dedup.config import DedupConfig, MinHashConfig


def test_presets_fill_what_the_config_leaves_out():
    nemo = validate(DedupConfig, {"minhash": {"preset": "nemo", "bands": 10}}).minhash
    assert (nemo.shingle, nemo.ngram, nemo.bands, nemo.rows) == ("char", 24, 10, 13)
    fineweb = DedupConfig().minhash
    assert (fineweb.shingle, fineweb.ngram, fineweb.bands, fineweb.rows, fineweb.num_perm) == ("word", 5, 14, 8, 112)
    assert fineweb.normalize.strip_punctuation
    assert MinHashConfig(preset="nemo", ngram=12).ngram == 12
    custom = validate(MinHashConfig, {"preset": "fineweb", "normalize": {"casefold": False}})
    assert custom.normalize.strip_punctuation and not custom.normalize.casefold


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"minhash": {"preset": "datatrove"}}, "minhash.preset: Input should be 'fineweb' or 'nemo'"),
        ({"minhash": {"bandz": 3}}, "minhash.bandz: unknown key"),
        ({"minhash": {"rows": 0}}, "minhash.rows: Input should be greater than or equal to 1"),
        ({"union_find_edge_limit": -1}, "union_find_edge_limit: Input should be greater than or equal to 0"),
    ],
)
def test_bad_dedup_configs_name_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        validate(DedupConfig, options)


def test_the_stage_snippets_load(tmp_path):
    snippets = yaml.safe_load((REPO_ROOT / "jobs" / "configs" / "stages" / "dedup.yaml").read_text())
    for name, snippet in snippets.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(snippet["dedup"]))
        load_config(DedupConfig, path)
