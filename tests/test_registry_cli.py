"""The study registry, config overrides, runner records, CLI errors and the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from scratchformer import cli
from scratchformer.experiments import registry
from scratchformer.experiments.registry import Study, StudyError, parse_value
from scratchformer.experiments.runner import load_record, run_study
from scratchformer.report import build_report


@dataclass
class ToyConfig:
    """Settings of a toy study used only by these tests."""

    steps: int = 3
    rate: float = 0.5
    name: str = "toy"
    verbose: bool = False
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None
    seed: int = 0


def toy_run(cfg: ToyConfig, out: Path) -> dict:
    """Toy study: writes one figure and returns the sum of a seeded draw."""
    import torch

    from scratchformer.viz.figures import new_figure, save_figure

    fig, ax = new_figure()
    ax.plot([0, 1], [0, cfg.rate])
    save_figure(fig, out / "line.png")
    return {"value": float(torch.rand(cfg.steps).sum()), "sizes": list(cfg.sizes)}


TOY = Study("toy.study", ToyConfig, toy_run, "Toy study.", {"steps": 10})


def test_every_registered_study_has_quick_and_full_configs():
    all_studies = registry.studies()
    assert {"positional.encoding", "attention.sdpa_match", "feedforward.gradient_flow",
            "positional.ablation"} <= set(all_studies)
    for study in all_studies.values():
        quick, full = study.config("quick"), study.config("full")
        assert hasattr(quick, "seed"), study.name
        assert type(full) is type(quick)
        assert study.description, f"{study.name} needs a one-line description"


def test_profiles_and_overrides_parse_to_field_types():
    assert TOY.config("full").steps == 10
    cfg = TOY.config("quick", {"steps": "7", "rate": "1e-3", "verbose": "yes",
                               "sizes": "4,5,6", "limit": "none", "name": "x"})
    assert (cfg.steps, cfg.rate, cfg.verbose, cfg.sizes, cfg.limit, cfg.name) == (
        7, 1e-3, True, (4, 5, 6), None, "x")
    assert TOY.config("quick", {"limit": "12"}).limit == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"nope": "1"}, "no setting 'nope'"), ({"steps": "three"}, "expected an integer"),
     ({"rate": "fast"}, "expected a number"), ({"verbose": "maybe"}, "true/false")],
)
def test_bad_overrides_raise_study_error(overrides, message):
    with pytest.raises(StudyError, match=message):
        TOY.config("quick", overrides)


def test_unknown_profile_raises():
    with pytest.raises(StudyError, match="unknown profile"):
        TOY.config("medium")


def test_parse_value_literal():
    from typing import Literal

    assert parse_value("a", Literal["a", "b"]) == "a"
    with pytest.raises(StudyError, match="one of"):
        parse_value("c", Literal["a", "b"])


def test_run_study_writes_record_and_is_seeded(tmp_path):
    rec1 = run_study(TOY, TOY.config(), tmp_path / "a")
    rec2 = run_study(TOY, TOY.config(), tmp_path / "b")
    assert rec1["metrics"]["value"] == rec2["metrics"]["value"]
    stored = load_record("toy.study", tmp_path / "a")
    assert stored["config"]["steps"] == 3 and stored["seed"] == 0
    assert stored["figures"] == ["line.png"]
    assert {"torch", "python", "scratchformer"} <= set(stored["versions"])
    assert stored["wall_time_s"] >= 0
    with pytest.raises(FileNotFoundError, match=r"scratchformer run missing\.study"):
        load_record("missing.study", tmp_path / "a")


def test_report_builds_markdown_and_self_contained_html(tmp_path):
    run_study(TOY, TOY.config(), tmp_path)
    md, html = build_report(tmp_path)
    assert "toy.study" in md.read_text() and "line.png" in md.read_text()
    assert "data:image/png;base64," in html.read_text()
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "empty")


def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    assert "positional.encoding" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["run", "no.such.study"], ["run", "positional.encoding", "--set", "bogus=1"],
     ["run", "positional.encoding", "--set", "dim=abc"],
     ["run", "positional.encoding", "--set", "novalue"],
     ["report", "--results", "/nonexistent/results"]],
)
def test_cli_user_errors_exit_2_with_one_line(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchformer: error:") and "\n" not in err


def test_cli_run_writes_metrics(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["run", "positional.encoding", "--out", str(out), "--set", "num_positions=20",
            "--set", "dim=16"]
    assert cli.main(argv) == 0
    rec = json.loads((out / "positional.encoding" / "metrics.json").read_text())
    assert rec["config"]["dim"] == 16 and rec["profile"] == "quick"


@pytest.mark.parametrize("setting", ["steps=-1", "lr=nan", "threads=-2", "seed=x"])
def test_run_all_with_a_bad_value_fails_before_any_study_runs(setting, tmp_path, capsys,
                                                              monkeypatch):
    from scratchformer.experiments import runner

    ran: list[str] = []
    monkeypatch.setattr(runner, "run_study", lambda study, *a, **k: ran.append(study.name))
    out = tmp_path / "res"
    assert cli.main(["run", "all", "--set", setting, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchformer: error:") and "\n" not in err
    assert setting.split("=")[0] in err
    assert ran == [] and not out.exists()


def test_every_catalog_entry_registers_its_study():
    for name, (module, description) in registry.CATALOG.items():
        study = registry.get(name)
        assert study.description == description and study.run.__module__.endswith(module)


def test_list_and_argument_errors_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from scratchformer import cli; rc = cli.main(['list']); "
            "rc2 = cli.main(['run', 'nope']); "
            "assert (rc, rc2) == (0, 2), (rc, rc2); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
