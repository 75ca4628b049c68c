"""Where the shared real-data corpus lives: ``$CORPUS_DIR``, else ``../shared/corpus`` beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    configured = os.environ.get("CORPUS_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "corpus"


def corpus_path(*parts: str) -> Path:
    """A file or folder of the corpus; a clear error naming the path when it is missing."""
    path = corpus_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"missing corpus file {path}: set CORPUS_DIR to the folder holding the shared corpus "
            "(see ../shared/corpus/README.md)"
        )
    return path
