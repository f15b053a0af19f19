r"""A Graphormer-style transformer over the atoms of a molecule.

Tokens are a virtual graph token followed by the heavy atoms. The structure enters through
three encodings (Ying et al., 2021, "Do Transformers Really Perform Bad for Graph
Representation?"), each switchable for ablations:

* **centrality**: an embedding of each atom's degree added to its atom embedding;
* **spatial**: a learned bias per head for every shortest-path distance ``0..max_distance``
  (longer ones share the last value; atoms in different fragments get their own value), and a
  learned bias per head between the virtual token and every atom;
* **edge**: for atoms ``i, j`` the mean over the first ``max_hops`` bonds of a shortest path
  of ``<bond embedding, w_k^h>`` (``k`` the bond's position on the path, ``h`` the head).

Their sum is an additive float mask handed to the library's attention (every
`TransformerBlock`), ``softmax(QKᵀ/√d + bias) V``; padding keys get ``-inf``. ``attention =
"bonded"`` instead masks every atom's attention to itself and its bonded neighbours (GAT-like;
the virtual token still sees every atom). The prediction is read from the virtual token (or,
without it, from the mean of the atoms).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scratchformer.data.molecular_graph import GraphBatch, feature_sizes
from scratchformer.nn.block import BlockConfig, TransformerBlock
from scratchformer.nn.norm import LayerNorm
from scratchformer.validation import check_bool, check_choice, check_int, check_probability

__all__ = ["ATTENTION_MODES", "CategoricalEmbedding", "GraphTransformer",
           "GraphTransformerConfig"]

ATTENTION_MODES = ("full", "bonded")


@dataclass(frozen=True)
class GraphTransformerConfig:
    """Sizes and structural switches of a `GraphTransformer`, checked when built."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 3
    d_hidden: int | None = None  # FFN width; default 2 * d_model
    dropout: float = 0.1
    max_distance: int = 10
    max_hops: int = 5
    max_degree: int = 6
    d_edge: int = 16
    degree: bool = True
    spatial: bool = True
    edge: bool = True
    virtual_token: bool = True
    attention: str = "full"
    atom_sizes: tuple[int, ...] = ()  # slots per atom feature; () = the featuriser's
    bond_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "max_distance", "max_hops",
                     "max_degree", "d_edge"):
            check_int(name, getattr(self, name), 1)
        if self.d_hidden is not None:
            check_int("d_hidden", self.d_hidden, 1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by "
                             f"n_heads={self.n_heads}")
        check_probability("dropout", self.dropout)
        for name in ("degree", "spatial", "edge", "virtual_token"):
            check_bool(name, getattr(self, name))
        check_choice("attention", self.attention, ATTENTION_MODES)
        if not self.atom_sizes or not self.bond_sizes:
            atoms, bonds = feature_sizes()
            object.__setattr__(self, "atom_sizes", tuple(self.atom_sizes or atoms))
            object.__setattr__(self, "bond_sizes", tuple(self.bond_sizes or bonds))
        object.__setattr__(self, "atom_sizes", tuple(int(s) for s in self.atom_sizes))
        object.__setattr__(self, "bond_sizes", tuple(int(s) for s in self.bond_sizes))

    def to_dict(self) -> dict:
        """The config as plain JSON values."""
        d = dataclasses.asdict(self)
        d["atom_sizes"], d["bond_sizes"] = list(self.atom_sizes), list(self.bond_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GraphTransformerConfig:
        """The config stored by `to_dict` (unknown keys refused)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) - names:
            raise ValueError(f"graph transformer config has unknown keys "
                             f"{sorted(set(d) - names) if isinstance(d, dict) else d!r}")
        d = dict(d)
        for k in ("atom_sizes", "bond_sizes"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class CategoricalEmbedding(nn.Module):
    """Sum of one embedding per categorical feature: a linear map of the concatenated one-hot."""

    def __init__(self, sizes: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0),
                             persistent=False)
        self.table = nn.Embedding(int(sum(sizes)), dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        """(..., k) category indices -> (..., dim)."""
        return self.table(idx + self.offsets).sum(-2)


class GraphTransformer(nn.Module):
    """Graph -> one scalar per molecule (see the module docstring)."""

    def __init__(self, config: GraphTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, GraphTransformerConfig):
            raise TypeError(f"config must be a GraphTransformerConfig, got "
                            f"{type(config).__name__}")
        c = self.config = config
        H = c.n_heads
        self.atom_emb = CategoricalEmbedding(c.atom_sizes, c.d_model)
        self.degree_emb = nn.Embedding(c.max_degree + 1, c.d_model) if c.degree else None
        if self.degree_emb is not None:  # the atoms' scale: at N(0, 1) it would drown them
            nn.init.normal_(self.degree_emb.weight, std=0.02)
        self.graph_token = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.virtual_token else None
        if c.spatial:  # distances 0..max_distance, then "different fragment"
            self.spatial_bias = nn.Embedding(c.max_distance + 2, H)
            nn.init.zeros_(self.spatial_bias.weight)
            self.token_bias = nn.Parameter(torch.zeros(H)) if c.virtual_token else None
        if c.edge:
            self.bond_emb = CategoricalEmbedding(c.bond_sizes, c.d_edge)
            self.edge_weight = nn.Parameter(torch.randn(c.max_hops, c.d_edge, H) * 0.02)
        block = BlockConfig(c.d_model, c.n_heads, c.d_hidden or 2 * c.d_model,
                            dropout=c.dropout, norm_position="pre")
        self.blocks = nn.ModuleList(TransformerBlock(block) for _ in range(c.n_layers))
        self.norm = LayerNorm(c.d_model)
        self.head = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.GELU(),
                                  nn.Linear(c.d_model, 1))

    @property
    def offset(self) -> int:
        """Token position of the first atom (1 with a virtual token, else 0)."""
        return 1 if self.config.virtual_token else 0

    def edge_encoding(self, g: GraphBatch) -> Tensor:
        """(B, H, N, N): per head, the mean over path positions of ``<bond, w_position>``."""
        B, N = g.mask.shape
        K = min(self.config.max_hops, g.paths.shape[-1])
        H = self.config.n_heads
        paths = g.paths[..., :K]
        valid = paths >= 0
        if g.bonds.shape[0] == 0:
            return g.mask.new_zeros((B, H, N, N), dtype=self.edge_weight.dtype)
        e = self.bond_emb(g.bonds)  # (E, d_edge)
        per_hop = torch.einsum("ed,kdh->ekh", e, self.edge_weight[:K])  # (E, K, H)
        # One table row per (bond, position) and a zero row for "no bond": an embedding lookup
        # (whose backward is a cheap index-add) gathers every pair's path.
        table = torch.cat([per_hop.reshape(-1, H), per_hop.new_zeros(1, H)])
        hop = torch.arange(K, device=paths.device)
        idx = torch.where(valid, paths * K + hop, table.shape[0] - 1)
        total = nn.functional.embedding(idx, table).sum(3)  # (B, N, N, H)
        mean = total / valid.sum(3).clamp(min=1)[..., None]
        return mean.permute(0, 3, 1, 2)

    def attention_bias(self, g: GraphBatch) -> Tensor:
        """The additive mask (B, H, L, L) every layer adds to its scaled scores."""
        c = self.config
        B, N = g.mask.shape
        o = self.offset
        L = N + o
        dtype = self.atom_emb.table.weight.dtype
        bias = torch.zeros(B, c.n_heads, L, L, dtype=dtype, device=g.mask.device)
        if c.spatial:
            d = g.dist.clamp(max=c.max_distance)
            d = torch.where(g.dist < 0, c.max_distance + 1, d)
            bias[:, :, o:, o:] = bias[:, :, o:, o:] + self.spatial_bias(d).permute(0, 3, 1, 2)
            if o:
                t = self.token_bias.view(1, -1, 1)
                bias[:, :, 0, 1:] = bias[:, :, 0, 1:] + t
                bias[:, :, 1:, 0] = bias[:, :, 1:, 0] + t
        if c.edge:
            bias[:, :, o:, o:] = bias[:, :, o:, o:] + self.edge_encoding(g)
        allowed = self.allowed(g)
        return bias.masked_fill(~allowed[:, None], float("-inf"))

    def allowed(self, g: GraphBatch) -> Tensor:
        """(B, L, L) bool: which key each query may attend to (padding keys never)."""
        B, N = g.mask.shape
        o = self.offset
        keys = torch.ones(B, N + o, dtype=torch.bool, device=g.mask.device)
        keys[:, o:] = g.mask
        allowed = keys[:, None, :].expand(B, N + o, N + o).clone()
        if self.config.attention == "bonded":
            eye = torch.eye(N, dtype=torch.bool, device=g.mask.device)
            allowed[:, o:, o:] &= g.adjacency | eye
            if o:
                allowed[:, 1:, 0] = False  # atoms see only their neighbours and themselves
        return allowed

    def embed(self, g: GraphBatch) -> Tensor:
        """Input tokens (B, L, d_model): the virtual token, then atoms (+ degree embedding)."""
        x = self.atom_emb(g.atoms)
        if self.degree_emb is not None:
            x = x + self.degree_emb(g.degree.clamp(max=self.config.max_degree))
        x = x * g.mask[..., None]
        if self.graph_token is not None:
            x = torch.cat([self.graph_token.expand(x.shape[0], 1, -1), x], dim=1)
        return x

    def encode(self, g: GraphBatch, need_weights: bool = False
               ) -> tuple[Tensor, list[Tensor]]:
        """Final token states (B, L, d_model) and, with ``need_weights``, each layer's
        attention weights (B, H, L, L)."""
        x = self.embed(g)
        bias = self.attention_bias(g)
        maps = []
        for block in self.blocks:
            if need_weights:
                x, w = block(x, attn_mask=bias, need_weights=True)
                maps.append(w)
            else:
                x = block(x, attn_mask=bias)
        return self.norm(x), maps

    def readout(self, h: Tensor, g: GraphBatch) -> Tensor:
        """The graph vector (B, d_model): the virtual token, or the mean of the atoms."""
        if self.config.virtual_token:
            return h[:, 0]
        m = g.mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)

    def forward(self, g: GraphBatch) -> Tensor:
        """One prediction per graph, (B,)."""
        h, _ = self.encode(g)
        return self.head(self.readout(h, g)).squeeze(-1)

    def num_parameters(self) -> int:
        """Number of trainable numbers."""
        return sum(p.numel() for p in self.parameters())
