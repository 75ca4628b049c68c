"""The generative pyfunc as MLflow loads it: logged and registered into a real (SQLite) tracking
store, loaded back by ``models:/`` URI, it continues prompts as ``generate`` does, and it carries its
tokenizer, so it loads where the corpus is not."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from model.generate import generate
from model.inference import TOKENIZER_DIR, load_inference_model
from model.reference import resolve_model
from model.serve.pyfunc import log_generative_model
from pipeline import tracking
from tests.unit.test_serve_scoring import served  # noqa: F401 - the shared small model fixture


@pytest.fixture
def registered(served, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("WEBLLM_MODEL_CACHE", str(tmp_path / "cache"))
    with tracking.run("serving-tests", "pyfunc"):
        version = log_generative_model(served.folder, "tiny-pyfunc")
    assert version == "1"
    return served


def test_the_registered_pyfunc_completes_prompts_as_generate_does(registered):
    model = mlflow.pyfunc.load_model("models:/tiny-pyfunc/1")
    prompts = ["Hello there", "Once upon a time"]
    answer = model.predict(pd.DataFrame({"prompt": prompts}), params={"max_tokens": 6, "temperature": 0.0})
    for prompt, completion in zip(prompts, answer["completion"]):
        expected = generate(registered.model, [registered.encode(prompt)], 6, temperature=0,
                            stop_token=registered.end_of_text)[0]
        assert completion == registered.encoding.decode(expected)
    # The REST form {"inputs": {"prompt": [...]}} reaches predict as one row holding the list.
    listed = model.predict({"prompt": prompts}, params={"max_tokens": 6, "temperature": 0.0})
    assert list(listed["completion"]) == list(answer["completion"])
    with pytest.raises(mlflow.exceptions.MlflowException, match="temperature"):
        model.predict(pd.DataFrame({"prompt": ["x"]}), params={"temperature": -1.0})


def test_every_job_resolves_the_registered_model_without_the_corpus(registered, tmp_path, monkeypatch):
    folder = resolve_model("models:/tiny-pyfunc/1")
    assert (folder / TOKENIZER_DIR).is_dir() and (folder / "model.json").is_file()
    monkeypatch.setenv("CORPUS_DIR", str(tmp_path / "no-corpus"))  # GPT-2's files are not here
    reloaded = load_inference_model("models:/tiny-pyfunc/1")
    assert reloaded.encoding.encode("Hello there") == registered.encoding.encode("Hello there")
