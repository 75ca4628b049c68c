"""lm-evaluation-harness on our models, offline (``jobs/evaluate.py --lm-eval TASKS``).

lm-eval evaluates Hugging Face models, so a model goes through its Hugging Face export (the GPT-2
layout, ``model/checkpoint.py``), with its tokenizer converted from our tiktoken encoding and written
beside it (``tokenizer.json``: the very same token ids). Nothing is downloaded: lm-eval's own task
definitions are used as they are, and a local task file points one at local data. This module
writes one for the shared HellaSwag file; any other task works the same way:

    # my_tasks/arc_easy_local.yaml, then: --lm-eval arc_easy_local --lm-eval-tasks my_tasks
    include: <lm-eval's package>/tasks/arc/arc_easy.yaml
    task: arc_easy_local
    dataset_path: json
    dataset_name: null
    dataset_kwargs:
      data_files: {test: /data/arc-easy-test.jsonl}

The file must hold the fields the task's prompts read (HellaSwag's original schema for
``hellaswag``; the Hugging Face dataset's columns in general).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from model.checkpoint import export_hf_gpt2
from model.inference import load_inference_model
from pipeline.corpus import corpus_path
from pipeline.tokenizer import RANKS_FILE, save_tokenizer

LOCAL_HELLASWAG = "hellaswag_local"


def export_for_harness(reference: str, folder: Path) -> Path:
    """The model ``reference`` names in Hugging Face layout, with a Hugging Face tokenizer."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    served = load_inference_model(reference)  # LoRA merged, tokenizer checked
    export_hf_gpt2(served.model, folder, eos_token_id=served.end_of_text)
    encoding = served.encoding
    save_tokenizer(encoding, folder / "tiktoken")
    converted = TikTokenConverter(vocab_file=str(folder / "tiktoken" / RANKS_FILE), pattern=encoding._pat_str,
                                  extra_special_tokens=encoding._special_tokens).converted()
    end = "<|endoftext|>" if served.end_of_text is not None else None
    PreTrainedTokenizerFast(tokenizer_object=converted, eos_token=end, bos_token=end, unk_token=end,
                            model_max_length=served.model.config.context_length).save_pretrained(folder)
    return folder


def write_local_tasks(folder: Path, hellaswag_path: str | Path | None = None) -> Path:
    """``hellaswag_local``: lm-eval's ``hellaswag`` over a local file (the shared one by default)."""
    import lm_eval

    original = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    data = Path(hellaswag_path) if hellaswag_path else corpus_path("eval", "hellaswag-val-1000.jsonl")
    task = {"include": str(original), "task": LOCAL_HELLASWAG, "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {"validation": str(data.resolve())}},
            "training_split": None, "validation_split": "validation"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{LOCAL_HELLASWAG}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return folder


def run_harness(reference: str, tasks: list[str], *, task_folders: list[str] = (), limit: int | None = None,
                batch_size: int = 16, hellaswag_path: str | None = None) -> dict[str, dict[str, float]]:
    """lm-eval's results: task -> metric -> value (standard errors included, as ``<metric>_stderr``)."""
    # Offline, whatever the environment says: a task that is not local fails instead of downloading.
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="webllm-harness-") as scratch:
        model_dir = export_for_harness(reference, Path(scratch) / "model")
        local = write_local_tasks(Path(scratch) / "tasks", hellaswag_path)
        manager = TaskManager(include_path=[str(local), *task_folders])
        output = simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "device": "cpu",
                                                         "dtype": "float32"},
                                 tasks=tasks, task_manager=manager, limit=limit, batch_size=batch_size,
                                 log_samples=False)
    return {task: _metrics(values) for task, values in output["results"].items()}


def _metrics(values: dict[str, Any]) -> dict[str, float]:
    """lm-eval names metrics ``acc,none`` (metric, filter); keep the numbers, named ``acc``."""
    return {key.split(",")[0]: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}
