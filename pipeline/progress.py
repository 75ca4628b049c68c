"""One line per phase of a build: what it processed, how long it took, how fast.

    read + 6 stages:      12,345 records in  10.2 s (1,210/s)
    dedup + 1 stage:      12,345 records in   3.1 s (3,982/s), 1,024 duplicates removed

The lines go to the ``pipeline.progress`` logger; the jobs show it on the console
(``pipeline/console.py``), a library user sees it only if they ask for it.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def report(name: str, count: int, seconds: float, unit: str = "records", detail: str = "") -> None:
    rate = f"{count / seconds:,.0f}/s" if seconds > 0 else "-"
    logger.info("%-20s %10s %s in %6.1f s (%s)%s", f"{name}:", f"{count:,}", unit, seconds, rate,
                f", {detail}" if detail else "")


def stages_label(first: str, stages: int) -> str:
    """``read + 6 stages``: what one phase of the stage chain runs."""
    return f"{first} + {stages} stage{'s' if stages != 1 else ''}" if stages else first
