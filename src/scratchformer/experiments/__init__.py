"""Studies: one module per experiment; importing this package registers them all."""

from scratchformer.experiments.registry import get, register, studies  # noqa: F401

# Study modules register themselves on import. Keep this list sorted.
from scratchformer.experiments import (  # noqa: F401  isort: skip
    attention,
    feedforward,
    gpt_arithmetic,
    lowrank,
    moe,
    nli,
    norm_geometry,
    norm_placement,
    positional,
    positional_ablation,
    shakespeare,
    sparse_attention,
)
