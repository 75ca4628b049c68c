"""A GPT with a classification head on the last real token (chapter 6 of the book).

In a causal model only the last token has attended to every token of the text, so its final hidden
state summarises the whole input. Sequences are right-padded: the last *real* token is at
``length - 1``, and the padding after it cannot reach it through causal attention, so padding does
not change the result.
"""

from __future__ import annotations

import torch
from torch import nn

from model.gpt import GPT


class GPTClassifier(nn.Module):
    def __init__(self, gpt: GPT, num_classes: int):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.emb_dim, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded token ids and (B,) real lengths -> (B, num_classes) logits."""
        hidden = self.gpt.hidden_states(input_ids)
        last = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), lengths - 1]
        return self.head(last)

