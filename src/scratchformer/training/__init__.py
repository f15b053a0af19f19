"""Training: the `Trainer` loop, AdamW parameter groups, the LR schedule and checkpoints."""

from scratchformer.training.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from scratchformer.training.metrics_log import LOG_FIELDS, MetricsLog, read_log
from scratchformer.training.optim import build_adamw, decay_split, param_groups
from scratchformer.training.schedule import WarmupCosineLR, warmup_cosine
from scratchformer.training.trainer import TrainConfig, Trainer, to_device

__all__ = [
    "LOG_FIELDS",
    "CheckpointError",
    "CheckpointInfo",
    "MetricsLog",
    "TrainConfig",
    "Trainer",
    "WarmupCosineLR",
    "build_adamw",
    "decay_split",
    "find_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "param_groups",
    "read_log",
    "save_checkpoint",
    "to_device",
    "warmup_cosine",
]
