"""A dataset job's console: phase lines on stdout, everything written to stderr diverted to a log
file (C++ output included), the job's own errors still on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_stderr_goes_to_the_log_and_errors_and_progress_stay_on_the_console(tmp_path):
    script = textwrap.dedent("""
        import logging, os, sys
        from pipeline.console import job_console
        from pipeline.progress import report
        with job_console("test", verbose=False) as console:
            print("ray noise", file=sys.stderr)
            os.write(2, b"core_worker.cc noise\\n")  # what C++ code writes, below Python
            report("read + 2 stages", 1000, 2.0)
            console.error("error: shown")
        print("after", file=sys.stderr)
    """)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    log = next(tmp_path.glob("webllm-test-*.log"))
    assert f"Ray's output: {log}" in done.stdout
    assert "read + 2 stages:          1,000 records in    2.0 s (500/s)" in done.stdout
    assert done.stderr == "error: shown\nafter\n"
    assert log.read_text() == "ray noise\ncore_worker.cc noise\n"


def test_verbose_leaves_stderr_alone(tmp_path):
    script = "from pipeline.console import job_console\nimport sys\nwith job_console('test', verbose=True):\n    print('ray noise', file=sys.stderr)\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=120)
    assert done.stderr == "ray noise\n" and not list(tmp_path.glob("webllm-test-*.log"))
