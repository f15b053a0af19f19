r"""Study ``molecules.moleculenet``: a graph transformer on ESOL, FreeSolv and Lipophilicity.

Protocol: each MoleculeNet regression set (`scratchformer.data.moleculenet`) is split 80/10/10
at random and by Bemis-Murcko scaffold (whole scaffold groups, `scaffold_split`), once per seed;
every method sees the same splits. Neural models train on the standardised target with MSE and
keep the weights of their best **validation** RMSE (checked every ``eval_every`` steps); test
RMSE (in the target's unit) is reported as mean ± std over the seeds.

Methods:

* ``graphormer``: `GraphTransformer` with degree, spatial (shortest-path distance) and
  edge-path encodings and a virtual read-out token;
* ablations (on ``ablation_splits``): ``set`` (no structure at all: a set transformer over the
  atoms), ``bonded`` (attention masked to bonded neighbours, GAT-like, no other encoding),
  ``no_degree``, ``no_spatial``, ``no_edge`` (one encoding removed each) and
  ``no_virtual_token`` (mean of the atoms read out instead); ``ablation_tasks`` limits all but
  ``set`` to some data sets (the full profile: ESOL and FreeSolv, to fit its time budget);
* baselines: ``mean`` (the train mean), ``rf_morgan`` (random forest on Morgan fingerprints,
  radius 2, 2,048 bits), ``rf_morgan_desc`` (the same plus RDKit's 2-D descriptors) and
  ``mpnn`` (GIN-style message passing with bond features).

The served models (``model/<task>.safetensors`` and ``model/<task>.json``) are the
``graphormer`` of the scaffold split's seed with the best validation RMSE, trained on that
split's training molecules.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.data.molecular_graph import (
    GraphBatch,
    MolGraph,
    collate,
    featurise,
    random_split,
    scaffold,
    scaffold_split,
)
from scratchformer.data.moleculenet import TASKS, load_moleculenet
from scratchformer.experiments.kit import (
    TrainingConfig,
    at_least,
    choice,
    each,
    in_range,
    mean_std,
    positive,
    positive_real,
    torch_threads,
    train,
    train_config,
)
from scratchformer.experiments.kit.config import Rule
from scratchformer.experiments.registry import register
from scratchformer.models.graph_transformer import GraphTransformer, GraphTransformerConfig
from scratchformer.models.molecule_baselines import (
    MPNN,
    fit_forest,
    mean_predictor,
    morgan_fingerprints,
    rdkit_descriptors,
)
from scratchformer.models.molecule_predictor import save_predictor
from scratchformer.viz.figures import new_figure, save_figure
from scratchformer.viz.molecules import plot_attention_examples, plot_distance_bias, plot_parity

MODEL_DIR = "model"
SPLITS = ("random", "scaffold")
ABLATIONS: dict[str, dict[str, Any]] = {
    "set": {"degree": False, "spatial": False, "edge": False},
    "bonded": {"degree": False, "spatial": False, "edge": False, "attention": "bonded"},
    "no_degree": {"degree": False},
    "no_spatial": {"spatial": False},
    "no_edge": {"edge": False},
    "no_virtual_token": {"virtual_token": False},
}
PUBLISHED = {  # test RMSE; scaffold: 5-fold re-runs in the PharmHGT paper
    "scaffold": {"esol": {"AttentiveFP": 0.877, "D-MPNN": 1.050},
                 "freesolv": {"AttentiveFP": 2.073, "D-MPNN": 2.182},
                 "lipo": {"AttentiveFP": 0.721, "D-MPNN": 0.683}},
    "random": {"esol": {"AttentiveFP": 0.853, "PharmHGT": 0.680}},
}
TARGETS = {("scaffold", "esol"): 0.90, ("scaffold", "freesolv"): 2.1,
           ("scaffold", "lipo"): 0.75, ("random", "esol"): 0.65}


@dataclass
class Config(TrainingConfig):
    """Quick profile: the first ``max_molecules`` of each set, one seed, tiny models."""

    tasks: tuple[str, ...] = ("esol", "freesolv", "lipo")
    splits: tuple[str, ...] = SPLITS
    seeds: int = 1
    max_molecules: int = 96  # first molecules of each set; 0 = all
    ablations: tuple[str, ...] = tuple(ABLATIONS)
    ablation_splits: tuple[str, ...] = ("scaffold",)
    ablation_tasks: tuple[str, ...] = ()  # tasks of every ablation (() = all); ``set`` runs
    # on every task, as the structure-free reference of the targets
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_hidden: int = 64
    dropout: float = 0.1
    max_distance: int = 10
    max_hops: int = 5
    batch_size: int = 32
    steps: int = 30  # training steps; with ``epochs`` > 0, the most a model may take
    epochs: float = 0.0  # passes over the training molecules (0 = exactly ``steps``)
    warmup_steps: int = 3
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.01
    eval_every: int = 10
    mpnn: bool = True
    mpnn_d_model: int = 32
    mpnn_layers: int = 3
    rf_trees: int = 20
    descriptors: bool = True
    explain_molecules: int = 3
    device: str = "cpu"

    RULES: ClassVar[dict[str, Rule]] = {
        "tasks": each(choice(*TASKS)), "splits": each(choice(*SPLITS)), "seeds": positive,
        "ablations": each(choice(*ABLATIONS)), "ablation_splits": each(choice(*SPLITS)),
        "ablation_tasks": each(choice(*TASKS)),
        "n_layers": positive, "d_hidden": positive,
        "dropout": in_range(0.0, 1.0, high_inclusive=False), "max_distance": positive,
        "max_hops": positive, "steps": positive, "lr": positive_real,
        "min_lr": positive_real, "eval_every": positive, "epochs": in_range(0.0, 1e4),
        "mpnn_d_model": positive,
        "mpnn_layers": positive, "rf_trees": positive, "max_molecules": at_least(0),
    }

    def check(self) -> None:
        """Cross-field checks: non-empty, distinct choices; the schedule."""
        super().check()
        for name in ("tasks", "splits"):
            v = getattr(self, name)
            if not v or len(set(v)) != len(v):
                raise ValueError(f"{name} must be distinct and non-empty, got {v}")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps must be < steps={self.steps}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr must be <= lr={self.lr}")
        if 0 < self.max_molecules < 20:
            raise ValueError(f"max_molecules must be 0 (all) or >= 20, got {self.max_molecules}")


FULL: dict[str, Any] = {
    "seeds": 3, "max_molecules": 0, "d_model": 64, "n_heads": 4, "n_layers": 2,
    "d_hidden": 128, "batch_size": 32, "steps": 400, "epochs": 20.0, "warmup_steps": 20,
    "eval_every": 25, "lr": 1.5e-3, "min_lr": 1e-4, "mpnn_d_model": 64, "rf_trees": 50,
    "ablations": ("set", "bonded", "no_degree", "no_spatial", "no_edge"),
    "ablation_tasks": ("esol", "freesolv"),
}


# --- data -------------------------------------------------------------------------------------


@dataclass
class TaskData:
    """One task's molecules featurised once: graphs, targets, scaffolds and RF inputs."""

    name: str
    smiles: list[str]
    y: np.ndarray
    graphs: list[MolGraph]
    scaffolds: list[str]
    morgan: np.ndarray
    descriptors: np.ndarray | None
    summary: dict


def load_task(name: str, cfg: Config) -> TaskData:
    """Load, subset (``max_molecules``) and featurise task ``name``."""
    ds = load_moleculenet(name)
    n = len(ds) if cfg.max_molecules == 0 else min(cfg.max_molecules, len(ds))
    smiles, y = ds.smiles[:n], ds.targets[:n]
    t = time.perf_counter()
    graphs = [featurise(s, cfg.max_hops) for s in smiles]
    feat_s = time.perf_counter() - t
    desc = rdkit_descriptors(smiles)[0] if cfg.descriptors else None
    summary = {**ds.summary(), "used": n, "featurise_s": feat_s,
               "max_atoms": max(g.n_atoms for g in graphs),
               "mean_atoms": float(np.mean([g.n_atoms for g in graphs]))}
    return TaskData(name, smiles, y, graphs, [scaffold(s) for s in smiles],
                    morgan_fingerprints(smiles), desc, summary)


def split_indices(data: TaskData, kind: str, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices of split ``kind`` for ``seed``."""
    if kind == "random":
        return random_split(len(data.y), seed)
    return scaffold_split(data.scaffolds, seed)


# --- training ---------------------------------------------------------------------------------


def _chunks(graphs: list[MolGraph], idx: np.ndarray, max_hops: int, size: int = 128
            ) -> list[tuple[np.ndarray, GraphBatch]]:
    """Evaluation batches of ``idx`` (sorted by size to pad little): (positions, batch)."""
    order = np.argsort([graphs[i].n_atoms for i in idx], kind="stable")
    out = []
    for s in range(0, len(order), size):
        pos = order[s:s + size]
        out.append((pos, collate([graphs[i] for i in idx[pos]], max_hops)))
    return out


@torch.no_grad()
def predict(model: nn.Module, chunks: list[tuple[np.ndarray, GraphBatch]], n: int
            ) -> np.ndarray:
    """Standardised predictions of the molecules of ``chunks`` in their original order."""
    was = model.training
    model.eval()
    out = np.zeros(n)
    for pos, batch in chunks:
        out[pos] = model(batch).double().numpy()
    model.train(was)
    return out


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2)))


def fit_graph_model(model: nn.Module, data: TaskData, tr: np.ndarray, va: np.ndarray,
                    cfg: Config, seed: int) -> tuple[nn.Module, dict, float, float]:
    """Train ``model`` on molecules ``tr`` (MSE on the standardised target) through the kit,
    keeping the weights of the best validation RMSE; returns it, its info and the scale."""
    mean, std = float(data.y[tr].mean()), float(data.y[tr].std()) or 1.0
    target = torch.from_numpy((data.y - mean) / std).float()
    graphs, B = data.graphs, cfg.batch_size
    val_chunks = _chunks(graphs, va, cfg.max_hops)

    sizes = np.array([graphs[i].n_atoms for i in tr])
    per_epoch = math.ceil(len(tr) / B)
    cache: dict[int, list[np.ndarray]] = {}

    def epoch_batches(epoch: int) -> list[np.ndarray]:
        """A seeded shuffle of ``tr`` cut into batches of similar-sized molecules (less
        padding): windows of 16 batches are sorted by size, then the batch order shuffled."""
        if epoch not in cache:
            rng = np.random.default_rng([seed, epoch])
            perm = rng.permutation(len(tr))
            window = 16 * B
            for w in range(0, len(perm), window):
                part = perm[w:w + window]
                perm[w:w + window] = part[np.argsort(sizes[part], kind="stable")]
            out = [tr[perm[i:i + B]] for i in range(0, len(perm), B)]
            cache.clear()
            cache[epoch] = [out[i] for i in rng.permutation(len(out))]
        return cache[epoch]

    def batches(step: int, micro: int, gen: torch.Generator) -> tuple[GraphBatch, Tensor]:
        pick = epoch_batches(step // per_epoch)[step % per_epoch]
        return collate([graphs[i] for i in pick], cfg.max_hops), target[pick]

    def loss_fn(m: nn.Module, batch: tuple[GraphBatch, Tensor]) -> tuple[Tensor, int]:
        g, t = batch
        return nn.functional.mse_loss(m(g), t), len(t)

    def eval_fn(m: nn.Module) -> dict[str, float]:
        return {"val_rmse": rmse(data.y[va], predict(m, val_chunks, len(va)) * std + mean)}

    best: dict[str, Any] = {"value": math.inf, "state": None, "step": 0}

    def on_eval(trainer: Any, step: int, metrics: dict) -> None:
        if metrics["val_rmse"] < best["value"]:
            best.update(value=metrics["val_rmse"], step=step,
                        state=copy.deepcopy(trainer.model.state_dict()))

    steps = cfg.steps
    if cfg.epochs > 0:
        steps = min(steps, max(cfg.warmup_steps + 1, math.ceil(cfg.epochs * len(tr) / B)))
    tcfg = train_config(cfg, seed, max_steps=steps, eval_interval=min(cfg.eval_every, steps),
                        betas=(0.9, 0.999), log_interval=max(1, min(50, steps // 4)),
                        progress=False)
    torch.manual_seed(seed)
    result = train(model, tcfg, batches, loss_fn=loss_fn, eval_fn=eval_fn, on_eval=[on_eval])
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    info = {"train_s": result.train_s, "ms_per_step": result.ms_per_step,
            "best_val_rmse": best["value"], "best_step": best["step"], "steps": steps,
            "parameters": sum(p.numel() for p in model.parameters())}
    return model, info, mean, std


def gt_config(cfg: Config, **switches: Any) -> GraphTransformerConfig:
    """The study's graph transformer config with structural ``switches``."""
    return GraphTransformerConfig(d_model=cfg.d_model, n_heads=cfg.n_heads,
                                  n_layers=cfg.n_layers, d_hidden=cfg.d_hidden,
                                  dropout=cfg.dropout, max_distance=cfg.max_distance,
                                  max_hops=cfg.max_hops, **switches)


# --- the study --------------------------------------------------------------------------------


@dataclass
class Served:
    """The best-validation graphormer of one task's scaffold seeds."""

    val_rmse: float
    model: GraphTransformer
    mean: float
    std: float
    seed: int
    test_rmse: float
    test_idx: np.ndarray


@register("molecules.moleculenet", Config, full=FULL)
def run(cfg: Config, out: Path) -> dict:
    """Graph transformer, its ablations and four baselines on three MoleculeNet sets."""
    start = time.perf_counter()
    costs: dict[str, float] = {}
    per_seed: dict[str, dict[str, dict[str, list[dict]]]] = {}
    parity: list[tuple[str, np.ndarray, np.ndarray, str]] = []
    served: dict[str, Served] = {}
    datasets: dict[str, dict] = {}
    model_info: dict[str, list[dict]] = {}  # "task/method" -> one info per run
    with torch_threads(cfg.threads):
        for task in cfg.tasks:
            t = time.perf_counter()
            data = load_task(task, cfg)
            costs[f"{task}_features_s"] = time.perf_counter() - t
            datasets[task] = data.summary
            per_seed[task] = {}
            for split in cfg.splits:
                res: dict[str, list[dict]] = per_seed[task].setdefault(split, {})
                for s in range(cfg.seeds):
                    seed = cfg.seed + s
                    tr, va, te = split_indices(data, split, seed)
                    datasets[task].setdefault("split_sizes", {})[split] = [len(tr), len(va),
                                                                           len(te)]
                    y_te, y_va = data.y[te], data.y[va]

                    def add(method: str, p_te: np.ndarray, p_va: np.ndarray,
                            res: dict = res, y_te: np.ndarray = y_te,
                            y_va: np.ndarray = y_va) -> None:
                        res.setdefault(method, []).append(
                            {"test_rmse": rmse(y_te, p_te), "val_rmse": rmse(y_va, p_va),
                             "test_mae": float(np.mean(np.abs(y_te - p_te)))})

                    t = time.perf_counter()
                    add("mean", mean_predictor(data.y[tr], len(te)),
                        mean_predictor(data.y[tr], len(va)))
                    inputs = {"rf_morgan": data.morgan}
                    if data.descriptors is not None:
                        inputs["rf_morgan_desc"] = np.hstack([data.morgan, data.descriptors])
                    for method, x in inputs.items():
                        rf = fit_forest(x[tr], data.y[tr], seed, cfg.rf_trees)
                        add(method, rf.predict(x[te]), rf.predict(x[va]))
                    costs["forest_s"] = costs.get("forest_s", 0.0) + time.perf_counter() - t

                    te_chunks = _chunks(data.graphs, te, cfg.max_hops)
                    va_chunks = _chunks(data.graphs, va, cfg.max_hops)
                    variants: dict[str, Callable[[], nn.Module]] = {
                        "graphormer": lambda: GraphTransformer(gt_config(cfg))}
                    if split in cfg.ablation_splits:
                        for a in cfg.ablations:
                            if a != "set" and cfg.ablation_tasks and task not in \
                                    cfg.ablation_tasks:
                                continue
                            variants[a] = (lambda a=a: GraphTransformer(
                                gt_config(cfg, **ABLATIONS[a])))
                    if cfg.mpnn:
                        variants["mpnn"] = lambda: MPNN(cfg.mpnn_d_model, cfg.mpnn_layers,
                                                        cfg.dropout)
                    for method, build in variants.items():
                        t = time.perf_counter()
                        torch.manual_seed(seed)
                        model, info, mu, sd = fit_graph_model(build(), data, tr, va, cfg, seed)
                        p_te = predict(model, te_chunks, len(te)) * sd + mu
                        p_va = predict(model, va_chunks, len(va)) * sd + mu
                        add(method, p_te, p_va)
                        model_info.setdefault(f"{task}/{method}", []).append(info)
                        costs[f"{method}_s"] = (costs.get(f"{method}_s", 0.0)
                                                + time.perf_counter() - t)
                        if method != "graphormer":
                            continue
                        if s == 0:
                            parity.append((f"{TASKS[task].title}, {split}", y_te, p_te,
                                           TASKS[task].unit))
                        if split == "scaffold" and (task not in served
                                                    or info["best_val_rmse"]
                                                    < served[task].val_rmse):
                            served[task] = Served(info["best_val_rmse"], model, mu, sd, seed,
                                                  rmse(y_te, p_te), te)

        t = time.perf_counter()
        figures = _figures(cfg, served, parity, per_seed, out)
        for task, sv in served.items():
            save_predictor(out / MODEL_DIR, sv.model, task, sv.mean, sv.std, info={
                "trained_on": f"{TASKS[task].title} scaffold split (seed {sv.seed}), "
                              "training molecules only",
                "seed": sv.seed, "val_rmse": sv.val_rmse, "test_rmse": sv.test_rmse,
                "max_steps": cfg.steps, "epochs": cfg.epochs})
        costs["figures_s"] = time.perf_counter() - t

    results = {task: {split: {m: {k: mean_std([r[k] for r in runs]) for k in runs[0]}
                              for m, runs in by_method.items()}
                      for split, by_method in per_task.items()}
               for task, per_task in per_seed.items()}
    record = {
        "protocol": {"splits": "80/10/10 random and Bemis-Murcko scaffold (balanced, whole "
                               "groups), one split per seed; model selection on validation",
                     "seeds": cfg.seeds, "metric": "test RMSE in the target's unit"},
        "datasets": datasets,
        "results": results,
        "models": {m: {k: mean_std([i[k] for i in infos], values_key=None)
                       for k in ("train_s", "ms_per_step", "steps", "best_step", "parameters")}
                   for m, infos in model_info.items()},
        "served": {task: {"seed": sv.seed, "val_rmse": sv.val_rmse, "test_rmse": sv.test_rmse}
                   for task, sv in served.items()},
        "published": PUBLISHED,
        "figures_written": figures,
        "costs": {**costs, "wall_s": time.perf_counter() - start},
    }
    record["targets"] = targets(record, cfg)
    (out / "summary.md").write_text(summary_markdown(record, cfg), encoding="utf-8")
    return record


def _mean(record: dict, task: str, split: str, method: str) -> float | None:
    """Mean test RMSE of a method, or None when it was not run."""
    try:
        return record["results"][task][split][method]["test_rmse"]["mean"]
    except KeyError:
        return None


def targets(record: dict, cfg: Config) -> dict:
    """The study's targets, each with the measured figures and whether it was met."""
    out: dict[str, Any] = {}
    for (split, task), bound in TARGETS.items():
        g = _mean(record, task, split, "graphormer")
        if g is not None:
            out[f"{split}_{task}_rmse_le_{bound}"] = {"graphormer": g, "bound": bound,
                                                      "met": g <= bound}
    beats = {}
    for task in cfg.tasks:
        split = "scaffold" if "scaffold" in cfg.splits else cfg.splits[0]
        g = _mean(record, task, split, "graphormer")
        s = _mean(record, task, split, "set")
        rf = _mean(record, task, split, "rf_morgan")
        beats[task] = {"split": split, "graphormer": g, "set": s, "rf_morgan": rf,
                       "met": bool(g is not None and s is not None and rf is not None
                                   and g < s and g < rf)}
    out["beats_set_and_rf_on_two_of_three"] = {
        "met": sum(v["met"] for v in beats.values()) >= 2, "cases": beats}
    out["wall_s"] = record["costs"]["wall_s"]
    return out


METHOD_ORDER = ("graphormer", *ABLATIONS, "mpnn", "rf_morgan_desc", "rf_morgan", "mean")


def _fmt(cell: dict | None) -> str:
    """``mean ± std`` of a summarised score."""
    if cell is None:
        return "–"
    if len(cell.get("values", [])) > 1:
        return f"{cell['mean']:.3f} ± {cell['std']:.3f}"
    return f"{cell['mean']:.3f}"


def summary_markdown(record: dict, cfg: Config) -> str:
    """Markdown tables: test RMSE of every method per data set and split; published figures."""
    cols = [(t, s) for t in cfg.tasks for s in cfg.splits]
    lines = ["# molecules.moleculenet", "",
             f"Test RMSE, mean ± std over {cfg.seeds} seed(s) (one split per seed; model "
             "selection on validation).", "",
             "| method | " + " | ".join(f"{TASKS[t].title} {s}" for t, s in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for m in METHOD_ORDER:
        cells = [_fmt(record["results"][t][s].get(m, {}).get("test_rmse")) for t, s in cols]
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Published (scaffold: 5-fold re-runs in the PharmHGT paper):", "",
              "| split | data set | model | RMSE |", "|---|---|---|---|"]
    for split, per in PUBLISHED.items():
        for task, models in per.items():
            for name, v in models.items():
                lines.append(f"| {split} | {TASKS[task].title} | {name} | {v} |")
    lines += ["", "Targets:", ""]
    for k, v in record["targets"].items():
        if isinstance(v, dict):
            lines.append(f"- {k}: {'met' if v['met'] else 'missed'}")
    lines.append(f"- wall time: {record['costs']['wall_s']:.0f} s")
    return "\n".join(lines) + "\n"


def _figures(cfg: Config, served: dict[str, Served], parity: list, per_seed: dict, out: Path
             ) -> list[str]:
    """Parity plots, attention on example molecules, distance biases and the ablation chart."""
    from scratchformer.models.molecule_predictor import MoleculePredictor

    written = [plot_parity(parity, out / "parity.png", ncols=len(cfg.splits)).name]
    if served:
        biases = {TASKS[t].title: sv.model.spatial_bias.weight.detach().numpy()
                  for t, sv in served.items()}
        written.append(plot_distance_bias(biases, cfg.max_distance,
                                          out / "distance_bias.png").name)
        task = next(iter(served))
        sv = served[task]
        data_smiles = load_moleculenet(task).smiles
        pred = MoleculePredictor(sv.model, task, sv.mean, sv.std, {})
        picks = [i for i in sv.test_idx if 8 <= len(data_smiles[i]) <= 40]
        items = []
        for i in picks[:cfg.explain_molecules]:
            smi = data_smiles[i]
            items.append((smi, pred.readout_attention(smi),
                          f"{smi}\npred {pred.predict(smi):.2f} {TASKS[task].unit}"))
        if items:
            written.append(plot_attention_examples(items, out / "attention_examples.png").name)
    abl = [m for m in ("graphormer", *cfg.ablations, "mpnn")]
    split = cfg.ablation_splits[0] if cfg.ablation_splits else None
    if split in cfg.splits and cfg.ablations:
        fig, ax = new_figure(2.2 + 1.6 * len(cfg.tasks), 3.4)
        width = 0.8 / len(abl)
        for k, m in enumerate(abl):
            vals = [per_seed[t][split].get(m) for t in cfg.tasks]
            means = [np.mean([r["test_rmse"] for r in v]) if v else np.nan for v in vals]
            stds = [np.std([r["test_rmse"] for r in v], ddof=1) if v and len(v) > 1 else 0.0
                    for v in vals]
            ax.bar(np.arange(len(cfg.tasks)) + k * width, means, width, yerr=stds, label=m)
        ax.set_xticks(np.arange(len(cfg.tasks)) + 0.4 - width / 2,
                      [TASKS[t].title for t in cfg.tasks])
        ax.set_ylabel(f"test RMSE ({split} split)")
        ax.legend(fontsize=6, ncol=2)
        written.append(save_figure(fig, out / "ablations.png", dpi=90).name)
    return written


__all__ = ["ABLATIONS", "FULL", "PUBLISHED", "Config", "TaskData", "fit_graph_model",
           "gt_config", "load_task", "predict", "rmse", "run", "split_indices",
           "summary_markdown", "targets"]

