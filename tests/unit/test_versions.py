"""Versions: immutable files, a manifest that lists them, CURRENT; on a local disk and on S3 (moto)."""

from __future__ import annotations

import hashlib
import json

import fsspec
import pytest

from pipeline.storage import join, relative_to
from pipeline.versions import (
    MANIFEST,
    Build,
    VersionError,
    VersionPaths,
    collect_garbage,
    is_complete,
    missing_files,
    open_version,
    publish,
    read_current,
    read_manifest,
    rebase,
    set_current,
)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "dataset")
    return f"{request.getfixturevalue('s3_bucket')}/datasets/web"


def write(path: str, data: bytes) -> None:
    with fsspec.open(path, "wb") as f:
        f.write(data)


def files_under(root: str) -> set[str]:
    fs, base = fsspec.core.url_to_fs(root)
    fs.invalidate_cache()
    return {path[len(base.rstrip("/")) + 1 :] for path in fs.find(base)}


def staged(root: str, version: str, files: dict[str, bytes]) -> Build:
    build = Build.start(VersionPaths(root, version))
    for name, data in files.items():
        write(f"{build.folder}/{name}", data)
    return build


def test_publish_lists_every_file_with_size_and_sha256_and_writes_the_manifest_last(root):
    build = staged(root, "v1", {"shards/a.parquet": b"aaaa", "audit/a.parquet": b"bb"})
    paths = build.paths
    assert missing_files(paths) is None and not is_complete(paths)  # files alone are not a version
    manifest = publish(build, {"documents": 2}, hashes={f"{build.name}/shards/a.parquet": hashlib.sha256(b"aaaa").hexdigest()})
    assert manifest["files"] == [
        {"path": f"{build.name}/audit/a.parquet", "size": 2, "sha256": hashlib.sha256(b"bb").hexdigest()},
        {"path": f"{build.name}/shards/a.parquet", "size": 4, "sha256": hashlib.sha256(b"aaaa").hexdigest()},
    ]
    assert read_manifest(paths.final) == manifest and manifest["build"] == build.name
    assert is_complete(paths) and open_version(paths.final)["documents"] == 2


def test_a_version_with_a_missing_or_cut_file_is_not_complete(root):
    build = staged(root, "v1", {"shards/a.parquet": b"aaaa", "shards/b.parquet": b"bbbb"})
    publish(build, {})
    write(f"{build.folder}/shards/a.parquet", b"aa")  # cut short
    fsspec.core.url_to_fs(root)[0].rm(f"{build.folder}/shards/b.parquet")
    assert sorted(missing_files(build.paths)) == [f"{build.name}/shards/a.parquet", f"{build.name}/shards/b.parquet"]
    assert not is_complete(build.paths)
    with pytest.raises(FileNotFoundError, match="incomplete, 2 listed files"):
        open_version(build.paths.final)
    with pytest.raises(VersionError, match="not complete"):
        set_current(root, "v1")


def test_current_moves_only_to_complete_versions_and_never_names_an_incomplete_one(root):
    assert read_current(root) is None
    with pytest.raises(VersionError):
        set_current(root, "v1")  # nothing there yet
    publish(staged(root, "v1", {"shards/a.parquet": b"a"}), {})
    set_current(root, "v1")
    staged(root, "v2", {"shards/a.parquet": b"half"})  # a build killed before its manifest
    with pytest.raises(VersionError):
        set_current(root, "v2")
    assert read_current(root) == "v1"


def test_a_version_lists_files_of_its_parent_by_path_and_needs_them(root):
    v1 = staged(root, "v1", {"shards/a.parquet": b"old"})
    parent = publish(v1, {})
    v2 = staged(root, "v2", {"shards/b.parquet": b"new"})
    inherited = [{**f, "path": rebase(f["path"], v1.paths.final, v2.paths.final)} for f in parent["files"]]
    assert inherited[0]["path"] == f"../v1/{v1.name}/shards/a.parquet"
    publish(v2, {}, inherited=inherited)
    assert is_complete(v2.paths)
    fsspec.core.url_to_fs(root)[0].rm(f"{v1.folder}/shards/a.parquet")
    assert missing_files(v2.paths) == [f"../v1/{v1.name}/shards/a.parquet"]


def test_overwrite_builds_beside_and_garbage_collection_removes_only_unlisted_files(root):
    first = staged(root, "v1", {"shards/a.parquet": b"first"})
    publish(first, {"n": 1})
    killed = staged(root, "v1", {"shards/a.parquet": b"half"})  # died before publishing
    second = staged(root, "v1", {"shards/a.parquet": b"second"})
    publish(second, {"n": 2})  # --overwrite: the manifest is replaced, the first build's files stay
    assert read_manifest(f"{root}/v1")["n"] == 2
    assert f"v1/{first.name}/shards/a.parquet" in files_under(root)
    write(f"{root}/.rebuild.lease", b"{}")

    assert collect_garbage(root, keep=(".rebuild.lease",)) == []  # young build folders are spared
    removed = collect_garbage(root, keep=(".rebuild.lease",), min_age_seconds=0)
    assert {path.rsplit(f"/{root.rsplit('/', 1)[1]}/", 1)[1] for path in removed} == {
        f"v1/{first.name}/shards/a.parquet", f"v1/{killed.name}/shards/a.parquet"
    }
    assert files_under(root) == {".rebuild.lease", f"v1/{MANIFEST}", f"v1/{second.name}/shards/a.parquet"}
    assert is_complete(second.paths)


def test_paths_join_and_relate_on_object_stores_too():
    assert join("s3://bucket/data/v2", "../v1/build-x/a.parquet") == "s3://bucket/data/v1/build-x/a.parquet"
    assert join("/data/v2", "build-y/a.parquet") == "/data/v2/build-y/a.parquet"
    assert relative_to("s3://bucket/data/v1/build-x/a.parquet", "s3://bucket/data/v2") == "../v1/build-x/a.parquet"
    assert rebase("build-x/a", "/d/v1", "/d/v3") == "../v1/build-x/a"


def test_the_manifest_is_valid_json_even_read_mid_publish(tmp_path):
    """Local publish writes beside and renames: a reader never sees half a manifest."""
    build = staged(str(tmp_path), "v1", {"x": b"1"})
    publish(build, {"big": "x" * 100_000})
    assert json.loads((tmp_path / "v1" / MANIFEST).read_text())["big"] == "x" * 100_000
    assert [p.name for p in (tmp_path / "v1").iterdir() if p.name.endswith(".tmp")] == []
