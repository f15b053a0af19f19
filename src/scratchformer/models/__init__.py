"""Whole models assembled from the layers in :mod:`scratchformer.nn`."""

from scratchformer.models.encoder import EncoderClassifier
from scratchformer.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "EncoderClassifier", "GPTConfig"]
