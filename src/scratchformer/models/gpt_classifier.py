"""A GPT with a classification head on the last token of each sequence.

    idx (B, T), lengths (B,) -> GPT hidden states (B, T, d) -> state at position lengths-1
                             -> dropout -> linear -> logits (B, num_classes)

Under the causal mask the state at position ``t`` is a function of tokens ``0..t`` only, so the
last real token is the one position that has read the whole input, and right padding after it
changes nothing (docs/derivations/causal-mask.md). The body is an ordinary `GPT`, so a language
model pretrained by the project loads into it unchanged (`from_language_model`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from scratchformer.models.gpt import GPT, GPTConfig
from scratchformer.validation import check_int, check_probability

__all__ = ["GPTClassifier"]


class GPTClassifier(nn.Module):
    """GPT body + linear head on the last real token: ``(idx, lengths) -> (B, num_classes)``."""

    def __init__(self, config: GPTConfig, num_classes: int, head_dropout: float = 0.0) -> None:
        super().__init__()
        check_int("num_classes", num_classes, 2)
        check_probability("head_dropout", head_dropout)
        self.gpt = GPT(config)
        self.num_classes = num_classes
        self.drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(config.d_model, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_language_model(cls, lm: GPT, num_classes: int,
                            head_dropout: float = 0.0) -> GPTClassifier:
        """A classifier whose body is a copy of the pretrained ``lm`` and whose head is new."""
        if not isinstance(lm, GPT):
            raise TypeError(f"lm must be a GPT, got {type(lm).__name__}")
        model = cls(lm.config, num_classes, head_dropout)
        model.gpt.load_state_dict(copy.deepcopy(lm.state_dict()))
        return model

    @property
    def config(self) -> GPTConfig:
        """The body's GPTConfig."""
        return self.gpt.config

    def num_parameters(self) -> int:
        """Trainable parameters, each shared tensor counted once."""
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values()
                   if p.requires_grad)

    def forward(self, idx: Tensor, lengths: Tensor) -> Tensor:
        """Class logits (B, num_classes) read at position ``lengths - 1`` of each row."""
        if not isinstance(lengths, Tensor) or lengths.shape != idx.shape[:1]:
            got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
            raise ValueError(f"lengths must have shape ({idx.shape[0]},), got {got}")
        if bool((lengths < 1).any()) or bool((lengths > idx.shape[1]).any()):
            raise ValueError(f"lengths must lie in [1, {idx.shape[1]}], got "
                             f"{lengths.min().item()}..{lengths.max().item()}")
        hidden = self.gpt.hidden_states(idx)
        last = hidden[torch.arange(idx.shape[0], device=idx.device), lengths.to(idx.device) - 1]
        return self.head(self.drop(last))
