"""Molecules as graphs: RDKit featurisation, shortest paths, batches and data splits.

A molecule is hydrogen-suppressed: its heavy atoms are the nodes, its bonds the edges. Atoms and
bonds are described, as chemprop does, by categorical features, each with an "other" slot for
values outside its list (a one-hot of the concatenation is `one_hot`; the models embed each
feature and sum, which is the same linear map):

* atom: atomic number (1-100), degree (0-5), formal charge (-2..2), chirality tag, number of
  hydrogens (0-4), hybridisation (sp..sp3d2), aromatic, in a ring;
* bond: type (single, double, triple, aromatic), conjugated, in a ring, stereo.

For the graph transformer each graph also carries all-pairs shortest-path distances (-1 for
atoms in different fragments) and, for every pair, the first ``max_hops`` bonds of one shortest
path from the first atom to the second (Graphormer's edge encoding). Splits are random or by
Bemis-Murcko scaffold (whole scaffold groups go to one split, larger groups first, chemprop's
"balanced" scheme).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scratchformer.validation import check_int

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "GraphBatch",
    "MolGraph",
    "collate",
    "feature_sizes",
    "featurise",
    "one_hot",
    "parse_smiles",
    "random_split",
    "scaffold",
    "scaffold_split",
]


def _rdkit():
    """RDKit's Chem module with its parse warnings silenced (failures are counted instead)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem


def parse_smiles(smiles: str):
    """The RDKit molecule of ``smiles`` (hydrogens implicit), or None if it does not parse or
    has no atoms."""
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    mol = _rdkit().MolFromSmiles(smiles.strip())
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def _atom_choices() -> list[tuple[str, list]]:
    """Each atom feature's name and known values (an index past the list is "other")."""
    Chem = _rdkit()
    hyb = Chem.rdchem.HybridizationType
    chiral = Chem.rdchem.ChiralType
    return [
        ("atomic_number", list(range(1, 101))),
        ("degree", [0, 1, 2, 3, 4, 5]),
        ("formal_charge", [-2, -1, 0, 1, 2]),
        ("chirality", [chiral.CHI_UNSPECIFIED, chiral.CHI_TETRAHEDRAL_CW,
                       chiral.CHI_TETRAHEDRAL_CCW, chiral.CHI_OTHER]),
        ("num_hs", [0, 1, 2, 3, 4]),
        ("hybridisation", [hyb.SP, hyb.SP2, hyb.SP3, hyb.SP3D, hyb.SP3D2]),
        ("aromatic", [False, True]),
        ("in_ring", [False, True]),
    ]


def _bond_choices() -> list[tuple[str, list]]:
    """Each bond feature's name and known values (an index past the list is "other")."""
    Chem = _rdkit()
    bt, st = Chem.rdchem.BondType, Chem.rdchem.BondStereo
    return [
        ("type", [bt.SINGLE, bt.DOUBLE, bt.TRIPLE, bt.AROMATIC]),
        ("conjugated", [False, True]),
        ("in_ring", [False, True]),
        ("stereo", [st.STEREONONE, st.STEREOANY, st.STEREOZ, st.STEREOE, st.STEREOCIS,
                    st.STEREOTRANS]),
    ]


ATOM_FEATURES = ("atomic_number", "degree", "formal_charge", "chirality", "num_hs",
                 "hybridisation", "aromatic", "in_ring")
BOND_FEATURES = ("type", "conjugated", "in_ring", "stereo")


def feature_sizes() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Number of slots (known values + "other") of each atom and each bond feature."""
    return (tuple(len(c) + 1 for _, c in _atom_choices()),
            tuple(len(c) + 1 for _, c in _bond_choices()))


def _index(value: object, choices: list) -> int:
    """Position of ``value`` in ``choices``, or ``len(choices)`` (the "other" slot)."""
    try:
        return choices.index(value)
    except ValueError:
        return len(choices)


def one_hot(indices: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Concatenated one-hot vectors (rows, sum(sizes)) of categorical ``indices`` (rows, k)."""
    indices = np.asarray(indices)
    out = np.zeros((indices.shape[0], int(sum(sizes))), dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    if indices.size:
        out[np.arange(indices.shape[0])[:, None], offsets + indices] = 1.0
    return out


@dataclass
class MolGraph:
    """One hydrogen-suppressed molecular graph with its shortest-path structure."""

    atoms: np.ndarray  # (n, 8) int64 categorical atom features
    bonds: np.ndarray  # (m, 4) int64 categorical bond features
    edges: np.ndarray  # (m, 2) int64 atom pairs of the bonds
    dist: np.ndarray  # (n, n) int64 shortest-path length in bonds; -1 between fragments
    paths: np.ndarray  # (n, n, max_hops) int64 bond ids along a shortest path i -> j; -1 = none

    @property
    def n_atoms(self) -> int:
        """Number of heavy atoms."""
        return int(self.atoms.shape[0])

    @property
    def degree(self) -> np.ndarray:
        """Number of bonded heavy-atom neighbours of each atom."""
        deg = np.zeros(self.n_atoms, dtype=np.int64)
        np.add.at(deg, self.edges.reshape(-1), 1)
        return deg


def featurise(mol_or_smiles: object, max_hops: int = 5) -> MolGraph:
    """The `MolGraph` of an RDKit molecule or a SMILES string (ValueError if unparseable)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    max_hops = check_int("max_hops", max_hops, 1)
    mol = parse_smiles(mol_or_smiles) if isinstance(mol_or_smiles, str) else mol_or_smiles
    if mol is None:
        raise ValueError(f"SMILES {mol_or_smiles!r} could not be parsed by RDKit")
    achoices, bchoices = _atom_choices(), _bond_choices()
    getters = (lambda a: a.GetAtomicNum(), lambda a: a.GetDegree(),
               lambda a: a.GetFormalCharge(), lambda a: a.GetChiralTag(),
               lambda a: a.GetTotalNumHs(), lambda a: a.GetHybridization(),
               lambda a: a.GetIsAromatic(), lambda a: a.IsInRing())
    atoms = np.array([[_index(g(a), c) for g, (_, c) in zip(getters, achoices, strict=True)]
                      for a in mol.GetAtoms()], dtype=np.int64)
    bgetters = (lambda b: b.GetBondType(), lambda b: b.GetIsConjugated(),
                lambda b: b.IsInRing(), lambda b: b.GetStereo())
    bonds = np.array([[_index(g(b), c) for g, (_, c) in zip(bgetters, bchoices, strict=True)]
                      for b in mol.GetBonds()], dtype=np.int64).reshape(-1, len(bchoices))
    edges = np.array([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds()],
                     dtype=np.int64).reshape(-1, 2)
    n, m = len(atoms), len(edges)
    bond_id = np.full((n, n), -1, dtype=np.int64)
    bond_id[edges[:, 0], edges[:, 1]] = np.arange(m)
    bond_id[edges[:, 1], edges[:, 0]] = np.arange(m)
    adj = csr_matrix((np.ones(2 * m), (np.r_[edges[:, 0], edges[:, 1]],
                                       np.r_[edges[:, 1], edges[:, 0]])), shape=(n, n))
    d, pred = shortest_path(adj, directed=False, unweighted=True, return_predecessors=True)
    reach = np.isfinite(d)
    dist = np.where(reach, d, -1).astype(np.int64)
    # Walk from i towards j: the next atom after `cur` is its predecessor on the path from j.
    I, J = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    cur = I.copy()
    paths = np.full((n, n, max_hops), -1, dtype=np.int64)
    for k in range(max_hops):
        active = reach & (cur != J)
        if not active.any():
            break
        nxt = np.where(active, pred[J, cur], cur)
        paths[..., k] = np.where(active, bond_id[cur, nxt], -1)
        cur = nxt
    return MolGraph(atoms, bonds, edges, dist, paths)


@dataclass
class GraphBatch:
    """Graphs padded to the largest in the batch (tensors on one device)."""

    atoms: Tensor  # (B, N, 8) long
    mask: Tensor  # (B, N) bool, True for real atoms
    degree: Tensor  # (B, N) long
    dist: Tensor  # (B, N, N) long, -1 unreachable or padding
    paths: Tensor  # (B, N, N, K) long, bond ids into ``bonds``; -1 none
    bonds: Tensor  # (E, 4) long, every bond of the batch
    edge_src: Tensor  # (2E,) long, directed edges as flat indices into B*N atom slots
    edge_dst: Tensor  # (2E,) long
    edge_bond: Tensor  # (2E,) long, the bond of each directed edge

    @property
    def adjacency(self) -> Tensor:
        """(B, N, N) bool: True where two atoms are bonded (distance 1)."""
        return self.dist == 1

    def to(self, device: torch.device | str) -> GraphBatch:
        """The same batch on ``device``."""
        return GraphBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def collate(graphs: Sequence[MolGraph], max_hops: int | None = None) -> GraphBatch:
    """Pad ``graphs`` into one `GraphBatch` (``max_hops`` <= the graphs' own; default all)."""
    if not graphs:
        raise ValueError("collate needs at least one graph")
    B = len(graphs)
    N = max(g.n_atoms for g in graphs)
    K = graphs[0].paths.shape[-1] if max_hops is None else max_hops
    atoms = np.zeros((B, N, graphs[0].atoms.shape[1]), dtype=np.int64)
    mask = np.zeros((B, N), dtype=bool)
    degree = np.zeros((B, N), dtype=np.int64)
    dist = np.full((B, N, N), -1, dtype=np.int64)
    paths = np.full((B, N, N, K), -1, dtype=np.int64)
    bonds, src, dst, ebond = [], [], [], []
    offset = 0
    for b, g in enumerate(graphs):
        n, m = g.n_atoms, len(g.bonds)
        atoms[b, :n] = g.atoms
        mask[b, :n] = True
        degree[b, :n] = g.degree
        dist[b, :n, :n] = g.dist
        p = g.paths[..., :K]
        paths[b, :n, :n] = np.where(p >= 0, p + offset, -1)
        bonds.append(g.bonds)
        base = b * N
        src += [base + g.edges[:, 0], base + g.edges[:, 1]]
        dst += [base + g.edges[:, 1], base + g.edges[:, 0]]
        ebond += [offset + np.arange(m)] * 2
        offset += m
    t = torch.from_numpy
    return GraphBatch(t(atoms), t(mask), t(degree), t(dist), t(paths),
                      t(np.concatenate(bonds).reshape(-1, graphs[0].bonds.shape[1])),
                      t(np.concatenate(src)), t(np.concatenate(dst)), t(np.concatenate(ebond)))


def scaffold(smiles: str) -> str:
    """The Bemis-Murcko scaffold SMILES of ``smiles`` ("" for acyclic molecules)."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = parse_smiles(smiles)
    if mol is None:
        raise ValueError(f"SMILES {smiles!r} could not be parsed by RDKit")
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def _sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """Train and validation sizes of ``n`` items split by ``fractions``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got "
                         f"{fractions}")
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    return n_train, n_val


def random_split(n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices of a random permutation of ``range(n)``."""
    n_train, n_val = _sizes(n, fractions)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]


def scaffold_split(scaffolds: Sequence[str], seed: int,
                   fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices with every scaffold group whole.

    ``scaffolds[i]`` is molecule ``i``'s Bemis-Murcko scaffold (`scaffold`). Groups larger than
    half the validation (or test) size are placed first, then the others, each in a seeded
    random order; a group goes to train while it fits, else to validation while it fits, else
    to test (chemprop's balanced scaffold split).
    """
    n = len(scaffolds)
    n_train, n_val = _sizes(n, fractions)
    n_test = n - n_train - n_val
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(scaffolds):
        groups[s].append(i)
    rng = np.random.default_rng(seed)
    sets = list(groups.values())
    big = [g for g in sets if len(g) > min(n_val, n_test) / 2]
    small = [g for g in sets if len(g) <= min(n_val, n_test) / 2]
    rng.shuffle(big)
    rng.shuffle(small)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for g in big + small:
        if len(train) + len(g) <= n_train:
            train += g
        elif len(val) + len(g) <= n_val:
            val += g
        else:
            test += g
    return np.array(train, dtype=np.int64), np.array(val, dtype=np.int64), \
        np.array(test, dtype=np.int64)
