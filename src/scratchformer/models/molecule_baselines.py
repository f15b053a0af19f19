"""Baselines for molecular property regression: the mean, random forests on fingerprints, and a
message-passing network.

* `mean_predictor`: the training targets' mean for every molecule.
* `morgan_fingerprints` (radius 2, 2,048 bits) and `rdkit_descriptors` (RDKit's 2-D
  descriptor list) as inputs to scikit-learn's random forest (`fit_forest`).
* `MPNN`: a GIN-style message-passing network with bond features, a few dozen lines of torch:
  ``h_i <- h_i + MLP(h_i + sum_j ReLU(h_j + bond_ij))``, read out by the sum and mean of the
  atom states.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from scratchformer.data.molecular_graph import GraphBatch, feature_sizes, parse_smiles
from scratchformer.models.graph_transformer import CategoricalEmbedding
from scratchformer.validation import check_int

__all__ = ["MPNN", "fit_forest", "mean_predictor", "morgan_fingerprints", "rdkit_descriptors"]


def mean_predictor(train_targets: np.ndarray, n: int) -> np.ndarray:
    """``n`` copies of the mean of ``train_targets``."""
    return np.full(n, float(np.mean(train_targets)))


def morgan_fingerprints(smiles: Sequence[str], radius: int = 2, n_bits: int = 2048
                        ) -> np.ndarray:
    """Morgan (ECFP-like) bit vectors (n, n_bits) as float32."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=check_int("radius", radius),
                                                    fpSize=check_int("n_bits", n_bits, 1))
    out = np.zeros((len(smiles), n_bits), dtype=np.float32)
    for i, s in enumerate(smiles):
        mol = parse_smiles(s)
        if mol is None:
            raise ValueError(f"SMILES {s!r} could not be parsed by RDKit")
        out[i] = gen.GetFingerprintAsNumPy(mol)
    return out


def rdkit_descriptors(smiles: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """RDKit's 2-D descriptors (n, d) float32 and their names; non-finite values become 0 and
    values are clipped to +-1e10 (a few descriptors overflow on large molecules)."""
    from rdkit.Chem import Descriptors

    names = [n for n, _ in Descriptors.descList]
    out = np.zeros((len(smiles), len(names)), dtype=np.float64)
    for i, s in enumerate(smiles):
        mol = parse_smiles(s)
        if mol is None:
            raise ValueError(f"SMILES {s!r} could not be parsed by RDKit")
        for j, (_, fn) in enumerate(Descriptors.descList):
            try:
                out[i, j] = fn(mol)
            except (ValueError, ZeroDivisionError, RuntimeError):
                out[i, j] = np.nan
    out = np.clip(np.nan_to_num(out, nan=0.0, posinf=1e10, neginf=-1e10), -1e10, 1e10)
    return out.astype(np.float32), names


def fit_forest(x: np.ndarray, y: np.ndarray, seed: int, n_trees: int = 100,
               max_features: float | str = "sqrt"):
    """A scikit-learn random forest regressor fitted to (x, y), one job."""
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=check_int("n_trees", n_trees, 1),
                                 max_features=max_features, n_jobs=1,
                                 random_state=seed).fit(x, y)


class MPNN(nn.Module):
    """GIN-style message passing with bond features; sum + mean read-out; (B,) predictions."""

    def __init__(self, d_model: int = 64, n_layers: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        atom_sizes, bond_sizes = feature_sizes()
        self.atom_emb = CategoricalEmbedding(atom_sizes, d_model)
        self.bond_emb = nn.ModuleList(CategoricalEmbedding(bond_sizes, d_model)
                                      for _ in range(n_layers))
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Dropout(dropout),
                          nn.Linear(2 * d_model, d_model)) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.head = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.ReLU(),
                                  nn.Linear(d_model, 1))

    def forward(self, g: GraphBatch) -> Tensor:
        """One prediction per graph of the padded batch ``g``."""
        B, N = g.mask.shape
        mask = g.mask.reshape(-1, 1).to(torch.float32)
        h = self.atom_emb(g.atoms).reshape(B * N, -1) * mask
        for bond_emb, update, norm in zip(self.bond_emb, self.updates, self.norms, strict=True):
            msg = torch.relu(h[g.edge_src] + bond_emb(g.bonds)[g.edge_bond])
            agg = torch.zeros_like(h).index_add_(0, g.edge_dst, msg)
            h = (h + update(norm(h + agg))) * mask
        h = h.reshape(B, N, -1)
        total = h.sum(1)
        mean = total / g.mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(torch.cat([total / 10.0, mean], -1)).squeeze(-1)
