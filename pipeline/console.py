"""The console of a dataset job: one progress line per phase and the summary, while Ray's own
output (execution plans, operator statistics, worker warnings, C++ log lines) goes to a log file
whose path the job prints first. ``--verbose`` shows everything on the console instead."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray

RAY_LOGS = "/tmp/ray/session_latest/logs"


class Console:
    """Where a job's own error lines go: the terminal's stderr, also while Ray's output is diverted."""

    def __init__(self, stderr_fd: int = 2):
        self.stderr_fd = stderr_fd

    def error(self, message: str) -> None:
        sys.stderr.flush()
        os.write(self.stderr_fd, f"{message}\n".encode())


@contextmanager
def job_console(job: str, verbose: bool) -> Iterator[Console]:
    """Show the ``pipeline`` loggers' lines on stdout; unless ``verbose``, send everything written to
    this process's stderr (file descriptor 2, so C++ and subprocess output too) to a log file until
    the block ends. An exception leaving the block prints after stderr is back."""
    lines = logging.StreamHandler(sys.stdout)
    lines.setFormatter(logging.Formatter("%(message)s"))
    shown = logging.getLogger("pipeline")
    shown.addHandler(lines)
    shown.setLevel(logging.INFO)
    shown.propagate = False
    if verbose:
        yield Console()
        return
    ray.data.DataContext.get_current().enable_progress_bars = False
    log_path = os.path.join(tempfile.gettempdir(), f"webllm-{job}-{time.strftime('%Y%m%d-%H%M%S')}.log")
    print(f"Ray's output: {log_path}, Ray's logs: {RAY_LOGS} (--verbose shows them here)", flush=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield Console(terminal)
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
