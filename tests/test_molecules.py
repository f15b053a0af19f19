"""Molecular graphs, the graph transformer, its baselines, the molecule CLI and the study."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchformer import cli
from scratchformer.data.molecular_graph import (
    ATOM_FEATURES,
    collate,
    feature_sizes,
    featurise,
    one_hot,
    parse_smiles,
    random_split,
    scaffold,
    scaffold_split,
)
from scratchformer.data.moleculenet import MoleculeFormatError, load_moleculenet
from scratchformer.experiments.registry import get
from scratchformer.models.graph_transformer import GraphTransformer, GraphTransformerConfig
from scratchformer.models.molecule_baselines import MPNN, morgan_fingerprints
from scratchformer.models.molecule_predictor import load_predictor, save_predictor

pytest.importorskip("rdkit")

MIRROR = os.environ.get("SCRATCHFORMER_DATA")
needs_mirror = pytest.mark.skipif(
    not MIRROR or not (Path(MIRROR) / "molecules" / "delaney-processed.csv").is_file(),
    reason="needs the data mirror (SCRATCHFORMER_DATA) with molecules/")

SMALL = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCN(CC)CC", "OC(=O)c1ccccc1C(=O)O",
         "[Na+].[Cl-]", "C"]


def tiny_model(seed: int = 0, **switches) -> GraphTransformer:
    """An untrained two-layer graph transformer small enough for unit tests."""
    torch.manual_seed(seed)
    cfg = GraphTransformerConfig(d_model=16, n_heads=2, n_layers=2, dropout=0.0, **switches)
    return GraphTransformer(cfg).eval()


def write_csv(path: Path, rows: list[str], header: str = "smiles,expt") -> Path:
    """A molecule CSV of ``header`` and ``rows``."""
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# --- featurisation ----------------------------------------------------------------------------


def test_benzene_atoms_are_aromatic_ring_sp2_carbons_with_one_h() -> None:
    g = featurise("c1ccccc1")
    names = list(ATOM_FEATURES)
    a = g.atoms
    assert g.n_atoms == 6 and len(g.bonds) == 6
    assert (a[:, names.index("atomic_number")] == 5).all()  # index of Z=6 in 1..100
    assert (a[:, names.index("aromatic")] == 1).all()
    assert (a[:, names.index("in_ring")] == 1).all()
    assert (a[:, names.index("num_hs")] == 1).all()
    assert (a[:, names.index("degree")] == 2).all()
    assert (a[:, names.index("hybridisation")] == 1).all()  # SP2
    assert (g.bonds[:, 0] == 3).all()  # aromatic bond type
    assert (g.bonds[:, 2] == 1).all()  # in ring
    assert g.dist.max() == 3  # the para atom
    assert sorted(g.dist[0].tolist()) == [0, 1, 1, 2, 2, 3]


def test_chain_distances_and_paths() -> None:
    g = featurise("CCCCO", max_hops=3)
    assert g.dist.tolist() == [[abs(i - j) for j in range(5)] for i in range(5)]
    assert g.paths[0, 4].tolist() == [0, 1, 2]  # the first three bonds from atom 0 to 4
    assert g.paths[4, 0].tolist() == [3, 2, 1]
    assert (g.paths[2, 2] == -1).all()
    assert g.degree.tolist() == [1, 2, 2, 2, 1]


def test_disconnected_fragments_are_unreachable() -> None:
    g = featurise("[Na+].[Cl-]")
    assert g.dist.tolist() == [[0, -1], [-1, 0]]
    assert (g.paths == -1).all()
    charge = list(ATOM_FEATURES).index("formal_charge")
    assert g.atoms[:, charge].tolist() == [3, 1]  # +1 and -1 in (-2, -1, 0, 1, 2)


def test_unknown_values_use_the_other_slot_and_one_hot_is_exact() -> None:
    g = featurise("[Fe+3]")  # charge +3 is outside -2..2
    charge = list(ATOM_FEATURES).index("formal_charge")
    atom_sizes, _ = feature_sizes()
    assert g.atoms[0, charge] == atom_sizes[charge] - 1
    oh = one_hot(featurise("CCO").atoms, atom_sizes)
    assert oh.shape == (3, sum(atom_sizes))
    assert (oh.sum(1) == len(atom_sizes)).all()


def test_unparseable_smiles() -> None:
    assert parse_smiles("C1CC") is None and parse_smiles("") is None
    with pytest.raises(ValueError, match="could not be parsed"):
        featurise("not a molecule")


def test_loader_skips_and_counts_unparseable_smiles(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", ["CCO,-1.0", "C1CC,2.0", "c1ccccc1,0.5", "xyz,1"])
    ds = load_moleculenet("freesolv", path)
    assert ds.smiles == ["CCO", "c1ccccc1"] and ds.targets.tolist() == [-1.0, 0.5]
    assert ds.summary()["skipped_unparseable"] == 2
    assert [line for line, _ in ds.skipped] == [3, 5]


def test_loader_refuses_a_missing_column_or_bad_target(tmp_path: Path) -> None:
    with pytest.raises(MoleculeFormatError, match="missing column"):
        load_moleculenet("freesolv", write_csv(tmp_path / "a.csv", ["CCO"], "smiles"))
    with pytest.raises(MoleculeFormatError, match=r"line 2.*not a number"):
        load_moleculenet("freesolv", write_csv(tmp_path / "b.csv", ["CCO,abc"]))


@needs_mirror
def test_mirror_sets_load_whole() -> None:
    for task, n in (("esol", 1128), ("freesolv", 642)):
        ds = load_moleculenet(task)
        assert len(ds) + len(ds.skipped) == n


# --- splits -----------------------------------------------------------------------------------


def test_scaffold_split_keeps_groups_whole_and_is_disjoint() -> None:
    smiles = (["c1ccccc1" + s for s in ("C", "O", "N", "CC", "Cl", "F", "Br", "CO")]
              + ["C1CCCCC1" + s for s in ("C", "O", "N", "CC")]
              + ["c1ccncc1" + s for s in ("C", "O", "N")]
              + ["CCO", "CCCN", "CC(C)O", "OCCO", "CCCC"])
    scaffolds = [scaffold(s) for s in smiles]
    for seed in range(3):
        tr, va, te = scaffold_split(scaffolds, seed)
        assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(len(smiles)))
        owner = {}
        for name, part in (("train", tr), ("val", va), ("test", te)):
            for i in part:
                assert owner.setdefault(scaffolds[i], name) == name


def test_random_split_sizes_and_seeds() -> None:
    tr, va, te = random_split(100, 0)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(100))
    assert not np.array_equal(random_split(100, 1)[0], tr)


# --- the graph transformer --------------------------------------------------------------------


def test_padding_does_not_change_a_graph_s_output() -> None:
    model = tiny_model()
    graphs = [featurise(s) for s in SMALL]
    with torch.no_grad():
        batched = model(collate(graphs))
        alone = torch.cat([model(collate([g])) for g in graphs])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)


def test_readout_is_invariant_to_atom_order() -> None:
    from rdkit import Chem

    mol = parse_smiles("CC(=O)Nc1ccc(O)cc1")
    order = list(np.random.default_rng(0).permutation(mol.GetNumAtoms()))
    shuffled = Chem.RenumberAtoms(mol, [int(i) for i in order])
    for switches in ({}, {"virtual_token": False}, {"attention": "bonded"}):
        model = tiny_model(**switches)
        with torch.no_grad():
            a = model(collate([featurise(mol)]))
            b = model(collate([featurise(shuffled)]))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_distance_bias_changes_attention() -> None:
    g = collate([featurise("CC(=O)Nc1ccc(O)cc1")])
    model = tiny_model()
    with torch.no_grad():
        _, maps0 = model.encode(g, need_weights=True)
        model.spatial_bias.weight.copy_(-torch.arange(12.0)[:, None].expand(12, 2))
        _, maps1 = model.encode(g, need_weights=True)
    assert not torch.allclose(maps0[0], maps1[0])
    # a bias decreasing with distance moves each atom's attention towards its near atoms
    dist = g.dist[0]
    near = (dist <= 1) & (dist >= 0)
    w0 = maps0[0][0, :, 1:, 1:]
    w1 = maps1[0][0, :, 1:, 1:]
    assert (w1 * near).sum() > (w0 * near).sum()
    plain = tiny_model(spatial=False, edge=False, degree=False)
    with torch.no_grad():
        plain.load_state_dict(model.state_dict(), strict=False)
        out_plain = plain(g)
        assert not torch.allclose(out_plain, model(g))


def test_bonded_mask_gives_zero_weight_to_non_neighbours() -> None:
    g = collate([featurise("CC(=O)Nc1ccc(O)cc1"), featurise("CCO")])
    model = tiny_model(attention="bonded", spatial=False, edge=False, degree=False)
    with torch.no_grad():
        _, maps = model.encode(g, need_weights=True)
    allowed = (g.adjacency | torch.eye(g.mask.shape[1], dtype=torch.bool)) & g.mask[:, None, :]
    for w in maps:
        atoms = w[:, :, 1:, 1:]  # atom queries to atom keys
        assert (atoms.masked_select(~allowed[:, None].expand_as(atoms)) == 0).all()
        assert (w[:, :, 1:, 0] == 0).all()  # atoms do not see the read-out token
        real = g.mask[:, None, :].expand(-1, w.shape[1], -1)
        assert (w[:, :, 0, 1:][real] > 0).all()  # the read-out token sees every atom


def test_edge_encoding_averages_bonds_along_the_path() -> None:
    model = tiny_model()
    g = collate([featurise("CCCCO")])
    with torch.no_grad():
        enc = model.edge_encoding(g)[0]  # (H, N, N)
        e = model.bond_emb(g.bonds)
        w = model.edge_weight
        expect = (e[0] @ w[0] + e[1] @ w[1] + e[2] @ w[2]) / 3
    torch.testing.assert_close(enc[:, 0, 3], expect)
    assert (enc[:, 2, 2] == 0).all()


def test_graph_transformer_and_mpnn_learn_a_simple_target() -> None:
    torch.manual_seed(0)
    smiles = ["C" * n for n in range(1, 9)] + ["O" + "C" * n for n in range(1, 9)]
    y = torch.tensor([float(len(s)) for s in smiles])
    y = (y - y.mean()) / y.std()
    g = collate([featurise(s) for s in smiles])
    for model in (tiny_model(), MPNN(16, 2)):
        model.train()
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        first = None
        for _ in range(150):
            loss = torch.nn.functional.mse_loss(model(g), y)
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.2 * first


def test_predictor_round_trip(tmp_path: Path) -> None:
    model = tiny_model()
    save_predictor(tmp_path / "m", model, "esol", -3.0, 2.0, info={"seed": 0})
    pred = load_predictor(tmp_path / "m", "esol")
    with torch.no_grad():
        expect = float(model(collate([featurise("CCO")]))[0]) * 2.0 - 3.0
    assert pred.predict("CCO") == pytest.approx(expect, rel=1e-6)
    w = pred.readout_attention("CCO")
    assert w.shape == (3,) and (w > 0).all() and w.sum() < 1  # its own weight is left out
    with pytest.raises(FileNotFoundError, match="no esol molecule model"):
        load_predictor(tmp_path / "missing", "esol")
    with pytest.raises(FileNotFoundError, match="no lipo molecule model"):
        load_predictor(tmp_path / "m", "lipo")


def test_fingerprints_are_bits() -> None:
    fp = morgan_fingerprints(["CCO", "c1ccccc1"])
    assert fp.shape == (2, 2048) and set(np.unique(fp)) <= {0.0, 1.0}
    assert fp[0].sum() > 0 and not np.array_equal(fp[0], fp[1])


# --- CLI --------------------------------------------------------------------------------------


def _saved(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    save_predictor(folder, tiny_model(), "esol", -3.0, 2.0)
    return folder


def test_cli_predict_prints_value_and_unit_and_draws(tmp_path: Path, capsys) -> None:
    folder = _saved(tmp_path)
    png = tmp_path / "x.png"
    rc = cli.main(["molecule", "predict", "CCO", "--checkpoint", str(folder),
                   "--explain", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "log10(mol/L)" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_smiles_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    folder = _saved(tmp_path)
    rc = cli.main(["molecule", "predict", "C1CC", "--checkpoint", str(folder)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "could not be parsed" in err


def test_cli_missing_checkpoint_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    rc = cli.main(["molecule", "predict", "CCO", "--checkpoint", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no esol molecule model" in err


# --- the study --------------------------------------------------------------------------------


@needs_mirror
def test_quick_study_runs_end_to_end(tmp_path: Path) -> None:
    study = get("molecules.moleculenet")
    cfg = study.config("quick", {"tasks": "esol,freesolv",
                                 "ablations": "set,bonded", "steps": "6", "warmup_steps": "1",
                                 "eval_every": "3", "rf_trees": "5", "descriptors": "false"})
    metrics = study.run(cfg, tmp_path)
    res = metrics["results"]["esol"]["scaffold"]
    assert {"graphormer", "set", "bonded", "mpnn", "rf_morgan", "mean"} <= set(res)
    assert np.isfinite(res["graphormer"]["test_rmse"]["mean"])
    assert "set" not in metrics["results"]["esol"]["random"]
    assert set(metrics["targets"]) >= {"scaffold_esol_rmse_le_0.9",
                                       "beats_set_and_rf_on_two_of_three"}
    for name in ("parity.png", "distance_bias.png", "attention_examples.png", "ablations.png",
                 "summary.md"):
        assert (tmp_path / name).is_file()
    config = json.loads((tmp_path / "model" / "esol.json").read_text())
    assert config["task"] == "esol"
    freesolv = load_predictor(tmp_path / "model", "freesolv")
    assert freesolv.predict("CCO") == pytest.approx(freesolv.predict("OCC"), rel=1e-5)


def test_degree_embedding_starts_at_the_atom_embeddings_scale():
    """At N(0, 1) the degree rows would be ~50× the atom rows (std 0.02) and drown them."""
    torch.manual_seed(0)
    model = GraphTransformer(GraphTransformerConfig(d_model=64, n_heads=4, n_layers=1))
    atom = float(model.atom_emb.table.weight.detach().std())
    degree = float(model.degree_emb.weight.detach().std())
    assert 0.5 < degree / atom < 2.0
