"""Fine-tuning a pretrained GPT (chapters 6 and 7 of the book, and its LoRA appendix), as tasks of
the shared training loop in ``model/train.py``:

    base.py, lineage.py     the starting model (our checkpoint, a run's latest, Hugging Face GPT-2,
                            or a random init) and the MLflow run that trained it
    lora.py                 low-rank adapters: apply, count, merge
    splits.py, batches.py   deterministic splits; resumable micro-batches of examples
    task.py                 what both tasks share (trainable part, checkpoint format, params)
    classify.py             classification: labeled.py (files, collate), classifier.py (the head),
                            metrics.py (accuracy / precision / recall / F1, confusion matrix)
    instruct.py             instruction following: instructions.py (prompt template, collate with
                            masks), judge.py (0-100 scores from an OpenAI-compatible endpoint)
    checkpoint.py           fine-tuned models on disk
"""
