"""The study kit: configs checked once (`config`), one train/evaluate pair (`train`) and the
char-LM builders (`lm`). Every study that trains a model is built from these; library code
(models, data, metrics) lives in the layers below."""

from scratchformer.experiments.kit.config import (
    ATTENTION_CHOICES,
    CharGPTConfig,
    CharTextConfig,
    StudyConfig,
    TrainingConfig,
    at_least,
    choice,
    each,
    in_range,
    positive,
    positive_real,
    unit_real,
)
from scratchformer.experiments.kit.lm import (
    char_text,
    gpt_config,
    load_char_model,
    save_char_model,
    text_split,
    train_char_lm,
)
from scratchformer.experiments.kit.stats import mean_std
from scratchformer.experiments.kit.threads import torch_threads
from scratchformer.experiments.kit.train import (
    TrainResult,
    lm_batches,
    lm_eval,
    lm_loss,
    train,
    train_config,
)

__all__ = [
    "ATTENTION_CHOICES",
    "CharGPTConfig",
    "CharTextConfig",
    "StudyConfig",
    "TrainResult",
    "TrainingConfig",
    "at_least",
    "char_text",
    "choice",
    "each",
    "gpt_config",
    "in_range",
    "lm_batches",
    "lm_eval",
    "lm_loss",
    "load_char_model",
    "mean_std",
    "positive",
    "positive_real",
    "save_char_model",
    "text_split",
    "torch_threads",
    "train",
    "train_char_lm",
    "train_config",
    "unit_real",
]
