"""Studies: one module per experiment, declared in `registry.CATALOG` and imported on use."""

from scratchformer.experiments.registry import CATALOG, get, register, studies

__all__ = ["CATALOG", "get", "register", "studies"]
