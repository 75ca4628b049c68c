"""Dedup on a two-node Ray cluster (``ray.cluster_utils.Cluster``, simulated on this machine) gives
the same rows as on one node.

The cluster runs in a subprocess: a driver connects to one Ray at a time, and this session's
driver is connected to the shared local one. The subprocess leads its own process group, so a
timeout takes its whole cluster down with it; it runs while the one-node reference is computed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from pipeline.corpus import REPO_ROOT
from pipeline.dedup import DedupConfig
from tests.integration.dedup_documents import check, planted_documents, run

pytestmark = pytest.mark.integration

TIMEOUT_S = 240
TWO_NODES = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from pipeline.dedup import DedupConfig, deduplicate

    folder = sys.argv[1]
    node = {"num_cpus": 1, "object_store_memory": 150_000_000}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = [node for node in ray.nodes() if node["Alive"]]
        assert [node["Resources"]["CPU"] for node in nodes] == [1.0, 1.0], nodes
        ds = ray.data.read_parquet(f"{folder}/docs.parquet").repartition(4).materialize()
        # Above the edge limit: the star rounds and the shuffle joins, spread over both nodes.
        result = deduplicate(ds, DedupConfig(union_find_edge_limit=0))
        rows = sorted(result.documents.take_all(), key=lambda row: row["id"])
        with open(f"{folder}/rows.json", "w") as f:
            json.dump({"rows": rows, "method": result.stats["components"]["method"]}, f)
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def test_two_nodes_give_the_same_rows_as_one(ray_local, corpus, tmp_path):
    planted = planted_documents(corpus, "web", families=4, singles=8, seed=3)
    pq.write_table(planted.table(), tmp_path / "docs.parquet")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT)}
    log = tmp_path / "two_nodes.log"  # a file, not a pipe: nobody reads a pipe while we run our side
    with log.open("w") as output:
        two_nodes_run = subprocess.Popen(
            [sys.executable, "-c", TWO_NODES, str(tmp_path)], env=env, cwd=REPO_ROOT,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _, one_node = run(planted.table(), DedupConfig())
        two_nodes_run.wait(timeout=TIMEOUT_S)
    finally:
        if two_nodes_run.poll() is None:
            os.killpg(two_nodes_run.pid, signal.SIGKILL)
            two_nodes_run.wait()
    check(one_node, planted, planted.rows)
    assert two_nodes_run.returncode == 0, log.read_text()[-4000:]
    two_nodes = json.loads((tmp_path / "rows.json").read_text())
    assert two_nodes["method"] == "star_rounds"
    assert two_nodes["rows"] == json.loads(json.dumps(one_node))
