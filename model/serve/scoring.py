"""How likely a model finds each document: its log-likelihood and its bits per byte.

    bits per byte = -(sum of the log-probabilities of the document's tokens) / (ln 2 * UTF-8 bytes)

Every token of the text is scored: the text follows an ``<|endoftext|>`` (the document boundary the
model was trained with), so even the first token has a context. A text longer than the context is
scored in consecutive windows of ``context_length`` predictions; each window's first input is the
previous window's last token, so every token is scored exactly once, with the context of its own
window (a slightly higher loss at window starts than a sliding window would give, at a fraction of
its cost).

``DocumentScorer`` is a pipeline stage (``pipeline/stage.py``): a perplexity filter in the data
pipeline can run it, and ``jobs/generate_batch.py --score`` runs it over any dataset.
"""

from __future__ import annotations

import math

import pyarrow as pa
import torch
import torch.nn.functional as F

from model.inference import InferenceModel
from pipeline.documents import alive_mask, put_column
from pipeline.stage import Stage

SCORE_COLUMNS = {
    "log_likelihood": pa.float64(),  # nats, summed over the document's tokens
    "scored_tokens": pa.int64(),
    "text_bytes": pa.int64(),
    "bits_per_byte": pa.float64(),
}


class DocumentScorer(Stage):
    """Adds ``SCORE_COLUMNS`` to a batch with a ``text`` column. Rows already dropped (a
    ``drop_reason``) and rows without text get nulls; the latter are counted in ``stats``."""

    name = "score"

    def __init__(self, served: InferenceModel, window_batch: int = 8):
        super().__init__()
        if served.end_of_text is None:
            raise ValueError("scoring needs a tokenizer with <|endoftext|>: it is the context of a document's first token")
        self.served = served
        self.window_batch = window_batch  # windows per forward pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch["text"].to_pylist()
        alive = alive_mask(batch).to_pylist() if "drop_reason" in batch.column_names else [True] * len(texts)
        scores: list[tuple | None] = [None] * len(texts)
        for index, (text, is_alive) in enumerate(zip(texts, alive)):
            if not is_alive:
                continue
            if not text:
                self.stats["no_text"] += 1
                continue
            scores[index] = self.score(text)
        for position, (column, kind) in enumerate(SCORE_COLUMNS.items()):
            batch = put_column(batch, column, pa.array([None if score is None else score[position] for score in scores],
                                                       kind))
        return batch

    def score(self, text: str) -> tuple[float, int, int, float]:
        """-> (log-likelihood in nats, tokens scored, UTF-8 bytes, bits per byte)."""
        tokens = self.served.encoding.encode_ordinary(text)
        log_likelihood = self._log_likelihood([self.served.end_of_text, *tokens])
        size = len(text.encode("utf-8"))
        return log_likelihood, len(tokens), size, -log_likelihood / (math.log(2) * size)

    @torch.no_grad()
    def _log_likelihood(self, sequence: list[int]) -> float:
        model = self.served.model
        width = model.config.context_length
        windows = [sequence[begin : begin + width + 1] for begin in range(0, len(sequence) - 1, width)]
        device = next(model.parameters()).device
        total = 0.0
        for first in range(0, len(windows), self.window_batch):
            group = windows[first : first + self.window_batch]
            longest = max(len(window) for window in group) - 1
            # Right padding: causal attention keeps it out of every real position's view, and its
            # targets are ignored.
            inputs = torch.zeros(len(group), longest, dtype=torch.long)
            targets = torch.full((len(group), longest), -100, dtype=torch.long)
            for row, window in enumerate(group):
                inputs[row, : len(window) - 1] = torch.tensor(window[:-1])
                targets[row, : len(window) - 1] = torch.tensor(window[1:])
            logits, _ = model(inputs.to(device))
            losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().to(device), reduction="sum",
                                     ignore_index=-100)
            total -= float(losses)
        return total
