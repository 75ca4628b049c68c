"""The rebuild's bookkeeping, without Ray: the CURRENT pointer, version names, what counts as new,
and how a run resumes after a crash between committing a version and moving CURRENT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.build_config import BuildConfig
from pipeline.config import ConfigError, to_dict
from pipeline.rebuild import new_inputs, rebuild, starting_version
from pipeline.versions import CURRENT, VersionError, next_version, read_current, set_current

DEDUP = {"dedup": {"exact": {"enabled": True}}}


def commit_version(root: Path, version: str, parent: str | None = None, config: BuildConfig | None = None) -> None:
    """A complete version as far as the bookkeeping looks: a manifest (that lists no files)."""
    (root / version).mkdir(parents=True)
    manifest = {"dataset": {"name": "web", "version": version}, "inputs": [], "files": []}
    if parent:
        manifest["parent"] = {"version": parent}
    if config:
        manifest["config"] = to_dict(config)
    (root / version / "manifest.json").write_text(json.dumps(manifest))


def config_for(root: Path, **changes) -> BuildConfig:
    values = {"dataset": {"name": "web", "version": "v1"}, "inputs": [str(root.parent / "incoming")],
              "output": str(root), "stages": ["extract", DEDUP], **changes}
    return BuildConfig(**values)


@pytest.mark.parametrize(
    ("version", "following"), [("v1", "v2"), ("v9", "v10"), ("2024-v09", "2024-v10"), ("web-007", "web-008")]
)
def test_next_version_counts_up_keeping_the_width(version, following):
    assert next_version(version) == following


def test_a_version_without_a_trailing_number_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="^dataset.version: version 'latest' does not end in a number"):
        rebuild(config_for(tmp_path / "web", dataset={"name": "web", "version": "latest"}))


def test_a_rebuild_needs_a_dedup_stage(tmp_path):
    with pytest.raises(ConfigError, match="^stages: a rebuild needs a dedup stage"):
        rebuild(config_for(tmp_path / "web", stages=["extract"]))


def test_current_names_only_complete_versions_and_is_replaced_whole(tmp_path):
    root = tmp_path / "web"
    commit_version(root, "v1")
    commit_version(root, "v2", parent="v1")
    assert read_current(str(root)) is None
    set_current(str(root), "v1")
    set_current(str(root), "v2")
    assert (root / CURRENT).read_text() == "v2\n"
    assert sorted(p.name for p in root.iterdir()) == [CURRENT, "v1", "v2"]  # no temporary file left
    with pytest.raises(VersionError, match="v3 is not complete"):
        set_current(str(root), "v3")
    (root / CURRENT).write_text("v3\n")
    with pytest.raises(VersionError, match="names 'v3', which is not a complete version"):
        read_current(str(root))


def test_starting_version_adopts_a_committed_version_current_never_reached(tmp_path):
    root = tmp_path / "web"
    commit_version(root, "v1")
    commit_version(root, "v2", parent="v1")
    (root / "v3" / "build-20261206T000000Z-abcdef").mkdir(parents=True)  # a killed build: not a version
    set_current(str(root), "v1")
    assert starting_version(config_for(root)) == "v2"
    assert read_current(str(root)) == "v2"


def test_starting_version_takes_a_version_built_without_current(tmp_path):
    root = tmp_path / "web"
    assert starting_version(config_for(root)) is None
    commit_version(root, "v1")
    assert starting_version(config_for(root)) == "v1"
    assert read_current(str(root)) == "v1"


def test_a_next_version_that_is_no_rebuild_of_current_is_never_overwritten(tmp_path):
    root = tmp_path / "web"
    commit_version(root, "v1")
    commit_version(root, "v2")  # built by hand with build_dataset.py, say
    set_current(str(root), "v1")
    with pytest.raises(VersionError, match="v2 exists but is not a rebuild of v1"):
        starting_version(config_for(root))
    assert read_current(str(root)) == "v1"


def test_new_inputs_are_the_listed_files_the_parent_lacks():
    ingested = [{"path": "/in/a.warc.gz", "size": 10}, {"path": "/in/b.warc.gz", "size": 20}]
    listed = [*ingested, {"path": "/in/c.warc.gz", "size": 5}]
    assert new_inputs(listed, ingested, "v1") == [{"path": "/in/c.warc.gz", "size": 5}]
    assert new_inputs(ingested[:1], ingested, "v1") == []  # files archived away: nothing new


def test_an_ingested_input_that_changed_stops_the_rebuild():
    ingested = [{"path": "/in/a.warc.gz", "size": 10}]
    with pytest.raises(VersionError, match="changed size since: /in/a.warc.gz"):
        new_inputs([{"path": "/in/a.warc.gz", "size": 11}], ingested, "v1")


def test_a_new_input_named_like_an_ingested_one_stops_the_rebuild():
    ingested = [{"path": "/in/2024-10/part-0000.jsonl", "size": 10, "name": "2024-10/part-0000.jsonl"}]
    elsewhere = {"path": "/in/2024-11/part-0000.jsonl", "size": 12, "name": "2024-11/part-0000.jsonl"}
    assert new_inputs([*ingested, elsewhere], ingested, "v1") == [elsewhere]  # ids hash the path below the root
    moved_root = {"path": "/other/2024-10/part-0000.jsonl", "size": 12, "name": "2024-10/part-0000.jsonl"}
    with pytest.raises(VersionError, match="named like inputs already in v1.*/other/2024-10/part-0000.jsonl"):
        new_inputs([*ingested, moved_root], ingested, "v1")
    older = [{"path": "/in/2024-10/part-0000.jsonl", "size": 10}]  # a manifest from before names: base names
    with pytest.raises(VersionError, match="named like inputs already in v1"):
        new_inputs([*older, {"path": "/in/2024-11/part-0000.jsonl", "size": 12}], older, "v1")


def test_a_rebuild_with_other_stages_than_the_parent_is_refused(tmp_path):
    root = tmp_path / "web"
    (tmp_path / "incoming").mkdir()
    commit_version(root, "v1", config=config_for(root))
    set_current(str(root), "v1")
    with pytest.raises(ConfigError, match="^stages: differs from the settings v1 was built with"):
        rebuild(config_for(root, stages=["extract", {"pii": {}}, DEDUP]))
