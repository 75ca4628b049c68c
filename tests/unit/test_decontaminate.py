"""Decontamination against HellaSwag: 13-gram overlap after normalization drops or flags documents."""

from __future__ import annotations

import json

import pytest

from pipeline.config import ConfigError, validate
from pipeline.decontaminate import FLAG_COLUMN, Decontaminate, DecontaminateConfig, EvalSetConfig, normalized_words
from pipeline.documents import table_from_rows


@pytest.fixture(scope="module")
def hellaswag_items(corpus):
    lines = (corpus / "eval" / "hellaswag-val-1000.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def drop_filter(corpus):
    return Decontaminate(DecontaminateConfig())


def docs(*texts: str, dropped: tuple[int, ...] = ()) -> list[dict]:
    return [
        {"id": f"doc-{i}", "text": text, "drop_reason": "earlier:rule" if i in dropped else None}
        for i, text in enumerate(texts)
    ]


def run(stage, rows):
    return stage(table_from_rows(rows)).to_pylist()


def test_drops_a_page_quoting_an_item_despite_case_and_punctuation(drop_filter, hellaswag_items, corpus):
    item = hellaswag_items[7]
    quoted = f"{item['ctx']} {item['endings'][item['label']]}".upper().replace(" ", " -- ", 3)
    prose = (corpus / "text" / "the-verdict.txt").read_text()[:3000]
    out = run(drop_filter, docs(prose, f"{prose[:500]}\n\n{quoted}\n\n{prose[500:900]}"))
    assert out[0]["drop_reason"] is None and out[0]["text"] == prose
    assert out[1]["drop_reason"] == "decontaminate:hellaswag-val-1000"
    assert out[1]["drop_value"] >= 1
    assert out[1]["text"] is None


def test_a_shared_run_shorter_than_n_words_is_kept(drop_filter, hellaswag_items):
    words = normalized_words(hellaswag_items[3]["ctx"])
    assert len(words) >= 13
    out = run(drop_filter, docs("Intro. " + " ".join(words[:12]) + " then something else entirely.", " ".join(words[:13])))
    assert out[0]["drop_reason"] is None
    assert out[1]["drop_reason"] == "decontaminate:hellaswag-val-1000"


def test_ngrams_crossing_from_context_into_an_ending_count(drop_filter, hellaswag_items):
    item = next(i for i in hellaswag_items if len(normalized_words(i["ctx"])) >= 8 and len(normalized_words(i["endings"][0])) >= 8)
    crossing = " ".join(normalized_words(item["ctx"])[-6:] + normalized_words(item["endings"][0])[:7])
    assert run(drop_filter, docs(crossing))[0]["drop_reason"] == "decontaminate:hellaswag-val-1000"


def test_a_short_context_followed_by_its_correct_ending_is_caught(drop_filter, hellaswag_items, corpus):
    """A page quoting a context and its correct ending (label not 0), each under 13 words: only the
    pair (context, that ending) holds the 13-grams that cross between them."""
    item = next(i for i in hellaswag_items if i["label"] != 0
                and 6 <= len(normalized_words(i["ctx"])) < 13 and 6 <= len(normalized_words(i["endings"][i["label"]])) < 13)
    prose = (corpus / "text" / "the-verdict.txt").read_text()[:600]
    page = f"{prose}\n\n{item['ctx']} {item['endings'][item['label']]}\n\n{prose}"
    assert run(drop_filter, docs(page))[0]["drop_reason"] == "decontaminate:hellaswag-val-1000"


def test_the_summary_counts_the_items_that_give_ngrams(tmp_path):
    from pipeline.decontaminate import eval_set_summaries

    path = tmp_path / "qa.jsonl"
    long = " ".join(f"word{i}" for i in range(14))
    path.write_text(json.dumps({"q": "too short", "a": ["no", "nope"]}) + "\n" + json.dumps({"q": long, "a": ["yes"]}) + "\n")
    config = DecontaminateConfig(eval_sets=[EvalSetConfig(path=str(path), fields=["q", "a"], name="qa")])
    assert eval_set_summaries(config) == {"qa": {"items": 2, "items_with_ngrams": 1, "ngrams": 3}}


def test_real_web_and_book_text_is_kept(drop_filter, corpus):
    texts = (corpus / "text" / "gutenberg-11-alice.txt").read_text().split("\n\n")[:300]
    out = run(drop_filter, docs(*texts))
    assert [row["drop_reason"] for row in out] == [None] * len(texts)


def test_rows_dropped_earlier_keep_their_reason(drop_filter, hellaswag_items):
    item = hellaswag_items[0]
    out = run(drop_filter, docs(item["ctx"] + " " + item["endings"][0], dropped=(0,)))
    assert out[0]["drop_reason"] == "earlier:rule"


def test_flag_mode_keeps_documents_and_counts_overlap(hellaswag_items):
    stage = Decontaminate(DecontaminateConfig(mode="flag"))
    item = hellaswag_items[1]
    out = run(stage, docs("nothing to see here at all", item["ctx"] + " " + " ".join(item["endings"]), "x", dropped=(2,)))
    assert [row["drop_reason"] for row in out] == [None, None, "earlier:rule"]
    assert out[0][FLAG_COLUMN] == 0 and out[1][FLAG_COLUMN] >= 1 and out[2][FLAG_COLUMN] is None
    assert stage.take_stats() == {"flagged:hellaswag-val-1000": 1}


def test_own_eval_set_with_its_fields_and_name(tmp_path):
    path = tmp_path / "quiz.jsonl"
    path.write_text(json.dumps({"question": "What colour is the sky on a clear day", "answers": ["blue", "grey"]}) + "\n")
    stage = Decontaminate(DecontaminateConfig(eval_sets=[EvalSetConfig(path=str(path), fields=["question", "answers"], name="quiz")], n=5))
    out = run(stage, docs("Q: what colour is the sky? On a clear day: BLUE!", "the sky is blue"))
    assert out[0]["drop_reason"] == "decontaminate:quiz"
    assert out[1]["drop_reason"] is None


def test_an_item_without_a_configured_field_is_an_error(tmp_path):
    path = tmp_path / "quiz.jsonl"
    path.write_text('{"question": "a b c"}\n')
    with pytest.raises(ValueError, match="quiz.jsonl:1: item has no field 'answer'"):
        Decontaminate(DecontaminateConfig(eval_sets=[EvalSetConfig(path=str(path), fields=["question", "answer"])]))


@pytest.mark.parametrize(
    "options, message",
    [({"n": 0}, "x.n: Input should be greater than or equal to 1"), ({"mode": "delete"}, "x.mode"), ({"ngram": 13}, "x.ngram: unknown key")],
)
def test_bad_config_names_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        validate(DecontaminateConfig, options, prefix="x")
