"""lm-evaluation-harness on our model, offline, through ``jobs/evaluate.py --lm-eval``: its
HellaSwag and ours score the same model the same, and its results land in MLflow."""

from __future__ import annotations

import mlflow
import pytest
import torch

from jobs import evaluate as evaluate_job
from model.evaluate import load_hellaswag, score_hellaswag
from model.harness import LOCAL_HELLASWAG, export_for_harness
from model.inference import load_inference_model
from pipeline.corpus import corpus_path
from model.checkpoint import save_checkpoint
from pipeline.tokenizer import load_tokenizer, tokenizer_identity
from tests.unit.test_generate import peaky_model

ITEMS = 200


@pytest.fixture(scope="module")
def served(corpus, tmp_path_factory):
    """A small GPT with GPT-2's tokenizer and room for every HellaSwag item (lm-eval refuses longer)."""
    encoding = load_tokenizer("gpt2")
    model = peaky_model(vocab_size=encoding.n_vocab, context_length=256)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("model"), {"spec": "gpt2", **tokenizer_identity(encoding)})
    return load_inference_model(str(folder))


def test_the_exported_tokenizer_gives_our_token_ids(served, tmp_path, corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = export_for_harness(str(served.folder), tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = (corpus / "text" / "the-verdict.txt").read_text()[:5000] + " naïve 日本語 <|endoftext|>"
    assert tokenizer.encode(text, add_special_tokens=False) == served.encoding.encode(text, allowed_special="all")
    assert tokenizer.eos_token_id == served.end_of_text
    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = torch.tensor([served.encode("Hello there, general")])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(tokens).logits, served.model(tokens)[0], rtol=1e-4, atol=1e-4)


def test_lm_evals_hellaswag_and_ours_agree_on_the_same_model(served, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert evaluate_job.main(["--model", str(served.folder), "--lm-eval", LOCAL_HELLASWAG, "--limit", str(ITEMS)]) == 0
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("evaluations").experiment_id])
    theirs = run.data.metrics

    model = load_inference_model(str(served.folder))
    items = load_hellaswag(corpus_path("eval", "hellaswag-val-1000.jsonl"), model.encoding, ITEMS)
    ours = score_hellaswag(model.model, [(item, True) for item in items], torch.device("cpu")).metrics()
    assert ours["hellaswag_acc"] == pytest.approx(theirs[f"lm_eval.{LOCAL_HELLASWAG}.acc"], abs=0.005)
    assert ours["hellaswag_acc_norm"] == pytest.approx(theirs[f"lm_eval.{LOCAL_HELLASWAG}.acc_norm"], abs=0.005)
    assert theirs[f"lm_eval.{LOCAL_HELLASWAG}.sample_len"] == ITEMS
