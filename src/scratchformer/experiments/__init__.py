"""Studies: one module per experiment; importing this package registers them all."""

from scratchformer.experiments.registry import get, register, studies  # noqa: F401

# Study modules register themselves on import. Keep this list sorted.
from scratchformer.experiments import (  # noqa: F401  isort: skip
    attention,
    feedforward,
    gpt_arithmetic,
    positional,
    positional_ablation,
    shakespeare,
)
