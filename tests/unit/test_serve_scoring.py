"""Scoring documents (log-likelihood, bits per byte) and completing prompts without a server."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.generate import generate
from model.inference import load_inference_model
from model.serve.complete import complete
from model.serve.engine import Engine, SamplingParams
from model.serve.scoring import DocumentScorer
from pipeline.tokenizer import load_tokenizer, tokenizer_identity
from tests.unit.test_generate import peaky_model


@pytest.fixture(scope="module")
def served(corpus, tmp_path_factory):
    encoding = load_tokenizer("gpt2")
    model = peaky_model(vocab_size=encoding.n_vocab, context_length=32)
    folder = save_checkpoint(model, Path(tmp_path_factory.mktemp("model")), {"spec": "gpt2", **tokenizer_identity(encoding)})
    return load_inference_model(str(folder))


def reference_log_likelihood(served, text: str) -> float:
    """Token by token, each with its whole history up to the context: the definition."""
    tokens = [served.end_of_text, *served.encoding.encode_ordinary(text)]
    total = 0.0
    with torch.no_grad():
        for position in range(1, len(tokens)):
            context = tokens[max(0, position - served.model.config.context_length) : position]
            logits, _ = served.model(torch.tensor([context]))
            total += float(logits[0, -1].float().log_softmax(-1)[tokens[position]])
    return total


def test_a_short_document_is_scored_token_by_token(served):
    text = "The cat sat on the mat. Naïve café!"
    log_likelihood, tokens, size, bits_per_byte = DocumentScorer(served).score(text)
    assert tokens == len(served.encoding.encode_ordinary(text))
    assert size == len(text.encode())
    assert log_likelihood == pytest.approx(reference_log_likelihood(served, text), rel=1e-4)
    assert bits_per_byte == pytest.approx(-log_likelihood / (math.log(2) * size))


def test_a_document_longer_than_the_context_scores_every_token_once(served):
    text = " ".join(f"word{index}" for index in range(60))  # ~120 tokens, context 32
    scorer = DocumentScorer(served, window_batch=3)
    log_likelihood, tokens, _, _ = scorer.score(text)
    assert tokens == len(served.encoding.encode_ordinary(text)) > 3 * served.model.config.context_length
    # Window by window: each window's first input is the previous window's last token.
    sequence = [served.end_of_text, *served.encoding.encode_ordinary(text)]
    width = served.model.config.context_length
    expected = 0.0
    with torch.no_grad():
        for begin in range(0, len(sequence) - 1, width):
            window = sequence[begin : begin + width + 1]
            logits, _ = served.model(torch.tensor([window[:-1]]))
            expected += float(logits[0].float().log_softmax(-1).gather(1, torch.tensor(window[1:])[:, None]).sum())
    assert log_likelihood == pytest.approx(expected, rel=1e-4)


def test_the_stage_scores_alive_rows_and_counts_rows_without_text(served):
    batch = pa.table({"id": ["a", "b", "c", "d"], "text": ["Hello world.", "", None, "Dropped text"],
                      "drop_reason": [None, None, None, "gopher:too_short"]})
    scorer = DocumentScorer(served)
    scored = scorer(batch)
    assert scored["scored_tokens"].to_pylist()[1:] == [None, None, None]
    assert scored["bits_per_byte"][0].as_py() > 0
    assert scored.column_names[:3] == ["id", "text", "drop_reason"]
    assert scorer.take_stats() == {"no_text": 2}


def test_complete_matches_generate_and_reports_rows_it_cannot_serve(served):
    engine = Engine(served.model, max_batch_size=4)
    prompts = ["Hello there", None, "x " * 40, [5, 6, 7], "Once"]
    params = [SamplingParams(max_tokens=5, temperature=0, stop_token_ids=served.stop_token_ids)] * len(prompts)
    completions = complete(engine, served, prompts, params)
    for index in (0, 4):
        expected = generate(served.model, [served.encode(prompts[index])], 5, temperature=0,
                            stop_token=served.end_of_text)[0]
        assert completions[index].text == served.encoding.decode(expected)
        assert completions[index].finish_reason in {"length", "stop"}
    assert (completions[1].finish_reason, completions[1].error_code) == ("error", "missing_prompt")
    assert completions[2].error_code == "context_length_exceeded" and completions[2].text is None
    assert completions[3].prompt_tokens == 3 and completions[3].completion_tokens == 5
    stop = completions[0].text[2:5]
    with_stop = complete(engine, served, ["Hello there"], params[:1], stop=[stop])[0]
    assert with_stop.text == completions[0].text[: completions[0].text.index(stop)]
    assert with_stop.finish_reason == "stop"
    assert not engine.has_work()


def test_a_model_serves_with_the_template_and_adapters_its_fine_tuning_recorded(served, tmp_path):  # noqa: F811
    import copy
    from dataclasses import asdict

    from model.finetune.checkpoint import save_finetuned
    from model.finetune.instructions import PromptTemplate
    from model.finetune.lora import LoRAConfig, apply_lora

    template = PromptTemplate(instruction="Q: {instruction}", input="\nContext: {input}", response="\nA: ")
    base = served.model
    tuned = copy.deepcopy(base)
    lora = LoRAConfig(enabled=True, rank=2, alpha=4)
    apply_lora(tuned, lora)
    for name, parameter in tuned.named_parameters():
        if "lora" in name:
            torch.nn.init.normal_(parameter, std=0.05)  # adapters that change the output
    metadata = {"kind": "instruct", "lora": {"rank": 2, "alpha": 4, "targets": lora.targets},
                "prompt_template": asdict(template)}
    save_finetuned(tuned.state_dict(), tmp_path / "tuned", base.config, {"spec": "gpt2"}, metadata)

    loaded = load_inference_model(str(tmp_path / "tuned"))
    assert loaded.template == template  # chat formats messages with it
    prompt = torch.tensor([served.encode("Hello there")])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(prompt)[0], tuned.eval()(prompt)[0], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(loaded.model(prompt)[0], base(prompt)[0])

    save_finetuned(base.state_dict(), tmp_path / "classifier", base.config, {"spec": "gpt2"},
                   {"kind": "classifier", "labels": ["ham", "spam"], "lora": None})
    with pytest.raises(ValueError, match="classifier"):
        load_inference_model(str(tmp_path / "classifier"))
