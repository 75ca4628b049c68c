"""Building stages from config, and the FineWeb preset running as one chain."""

from pathlib import Path

import pytest
import yaml

from pipeline.chain import StageChain
from pipeline.config import ConfigError
from pipeline.documents import table_from_rows
from pipeline.filters import STAGES
from pipeline.stages import build_stage

PRESET = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "stages" / "fineweb.yaml"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_builds_from_defaults_and_is_named_by_its_key(name):
    assert build_stage(name).name == name


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nope", {}, "stages.nope: unknown stage"),
        ("gopher_quality", {"min_wordz": 3}, "stages.gopher_quality.min_wordz: unknown key"),
        ("gopher_quality", {"min_words": "many"}, "stages.gopher_quality.min_words"),
        ("gopher_repetition", {"max_duplicate_line_fraction": 2}, "gopher_repetition.max_duplicate_line_fraction"),
        ("fineweb_quality", {"max_duplicate_line_chars": -0.1}, "stages.fineweb_quality.max_duplicate_line_chars"),
    ],
)
def test_bad_options_name_the_key(name, options, message):
    with pytest.raises(ConfigError, match=message):
        build_stage(name, options)


def preset_chain() -> StageChain:
    entries = yaml.safe_load(PRESET.read_text())["stages"]
    steps = [next(iter(entry.items())) for entry in entries]
    assert [name for name, _ in steps] == [
        "url_filter", "language", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality",
        "decontaminate", "pii",
    ]  # fmt: skip
    return StageChain([lambda name=name, options=options: build_stage(name, options) for name, options in steps])


PROSE = (
    "The river rose slowly through the night, and by morning the lower road was under water. "
    "Farmers moved their animals to higher ground while their children watched from the hill. "
    "Nobody in the village could remember a worse flood, not even the oldest fisherman. "
    "The school stayed closed for a whole week, which the children did not mind at all. "
    "When the water finally went down, the mud it left behind covered every field. "
    "Write to the mayor at mayor@village.example.org if you want to help with the cleanup."
)


def test_the_fineweb_preset_runs_as_one_chain():
    chain = preset_chain()
    batch = table_from_rows(
        [
            {"id": "prose", "url": "https://village.example/flood", "text": PROSE},
            {"id": "french", "text": "Le comité s'est réuni mardi pour discuter du nouveau budget de la ville."},
            {"id": "spam", "text": "\n".join(["Buy cheap watches now and save big today!"] * 20)},
            {"id": "gone", "drop_reason": "read:truncated_gzip"},
        ]
    )
    out = chain(batch)
    assert out["drop_reason"].to_pylist() == [
        None,
        "language:other_language",
        "gopher_repetition:duplicate_lines",
        "read:truncated_gzip",
    ]
    assert "email@example.com" in out["text"][0].as_py()
    stats = chain.take_stats()
    assert stats["counters"]["pii"] == {"emails_masked": 1}
    assert set(stats["seconds"]) == {*STAGES, "decontaminate"}
    # A batch with nothing alive still comes out with the same columns and types.
    assert chain(table_from_rows([{"id": "gone", "drop_reason": "read:empty_payload"}])).schema == out.schema
