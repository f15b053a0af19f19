"""Whole models assembled from the layers in :mod:`scratchformer.nn`."""

from scratchformer.models.encoder import EncoderClassifier

__all__ = ["EncoderClassifier"]
