"""Cited numbers: the marker syntax, its check and fix, and the repository's own prose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scratchformer.cite import (
    CiteError,
    check,
    citations_in,
    default_paths,
    find_citations,
    fix,
    main,
    render,
    resolve,
)

REPO = Path(__file__).resolve().parents[1]
RECORD = {
    "study": "toy.study",
    "metrics": {
        "loss": 0.18576,
        "tiny": 8.556e-05,
        "count": 109448,
        "share": 0.3287,
        "training": {"lr_0.01": {"gelu": {"loss": [7.3955, 1.85, 0.1858]}}},
        "sweep": [{"rank": 31}, {"rank": 148}],
        "flag": True,
    },
}


def _cite(expr: str, spec: str) -> str:
    """A marker citing ``expr`` of the toy record with format ``spec``."""
    return f"<!-- cite: toy.study {expr} {spec} -->"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder holding one published record, ``toy.study``."""
    folder = tmp_path / "results"
    (folder / "toy.study").mkdir(parents=True)
    (folder / "toy.study" / "metrics.json").write_text(json.dumps(RECORD))
    return folder


# --- parsing ------------------------------------------------------------------------------------


def test_parser_finds_each_number_right_before_its_marker() -> None:
    """Plain, TeX, thousands, unicode-minus and per-cent numbers, each with its marker and line."""
    text = (
        f"MSE 0.186{_cite('metrics.loss', '.3f')} and\n"
        f"at most $8.6\\times 10^{{-5}}${_cite('metrics.tiny', '.1e')}; "
        f"T = 109,448{_cite('metrics.count', ',d')}, −0.29{_cite('metrics.loss', '.2f')} "
        f"and **33%{_cite('metrics.share', '.0%')}**.\n"
    )
    found = find_citations(text, "doc.md")
    assert [(c.number, c.style, c.where) for c in found] == [
        ("0.186", "plain", "doc.md:1"),
        ("8.6\\times 10^{-5}", "tex", "doc.md:2"),
        ("109,448", "plain", "doc.md:2"),
        ("−0.29", "plain", "doc.md:2"),
        ("33%", "plain", "doc.md:2"),
    ]
    assert found[0].study == "toy.study" and found[0].expr == "metrics.loss"
    assert found[0].spec == ".3f" and text[found[0].start : found[0].end] == "0.186"


def test_markers_in_code_are_examples_not_citations() -> None:
    """Code spans and fenced blocks can show the syntax without being checked."""
    text = (
        f"Inline `0.5{_cite('metrics.loss', '.1f')}` is an example.\n\n"
        f"```\n0.5{_cite('metrics.loss', '.1f')}\n```\n"
        f"But 0.19{_cite('metrics.loss', '.2f')} is cited.\n"
    )
    found = find_citations(text, "doc.md")
    assert [(c.number, c.where) for c in found] == [("0.19", "doc.md:6")]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"the loss {_cite('metrics.loss', '.3f')}", "no number right before"),
        (f"x1.5{_cite('metrics.loss', '.1f')}", "no number right before"),
        ("0.5<!-- cite: toy.study metrics.loss -->", "a marker needs 'STUDY PATH FORMAT'"),
    ],
)
def test_parser_rejects_markers_without_a_number_or_a_format(text: str, problem: str) -> None:
    """A marker must follow a number with no space between, and name study, path and format."""
    with pytest.raises(CiteError, match=f"doc.md:1: {problem}"):
        find_citations(text, "doc.md")


# --- values and formats -------------------------------------------------------------------------


def test_resolve_follows_dotted_keys_list_indices_quotients_and_reducers(results: Path) -> None:
    """Keys with dots, negative indices, PATH/PATH and :max/:mean resolve; bad paths say why."""
    assert resolve("toy.study", "metrics.training.lr_0.01.gelu.loss.-1", results) == 0.1858
    assert resolve("toy.study", "metrics.sweep.1.rank", results) == 148
    assert resolve("toy.study", "metrics.sweep.1.rank/metrics.sweep.0.rank", results) == 148 / 31
    assert resolve("toy.study", "metrics.training.lr_0.01.gelu.loss:max", results) == 7.3955
    assert resolve("toy.study", "metrics.training.lr_0.01.gelu.loss:mean", results) == (
        pytest.approx((7.3955 + 1.85 + 0.1858) / 3))
    for expr, problem in [
        ("metrics.nope", "no key 'nope'"),
        ("metrics.sweep.5.rank", "does not index a list of 2"),
        ("metrics.loss.deeper", "is a leaf"),
        ("metrics.flag", "not a number"),
        ("metrics.sweep", "not a number"),
        ("metrics.loss:median", "unknown reducer"),
        ("metrics.loss:max", "needs a non-empty list"),
    ]:
        with pytest.raises(CiteError, match=problem):
            resolve("toy.study", expr, results)
    with pytest.raises(CiteError, match="no published record"):
        resolve("other.study", "metrics.loss", results)


@pytest.mark.parametrize(
    ("value", "spec", "style", "text"),
    [
        (0.18576, ".3f", "plain", "0.186"),
        (8.556e-05, ".1e", "plain", "8.6e-5"),  # the shortest exponent, not Python's 8.6e-05
        (8.556e-05, ".1e", "tex", "8.6\\times10^{-5}"),
        (2.5e3, ".1e", "plain", "2.5e3"),
        (109448, ",d", "plain", "109,448"),
        (109448, ",d", "tex", "109{,}448"),
        (58.0, "d", "plain", "58"),  # integral floats take integer specs
        (0.3287, ".1%", "plain", "32.9%"),
        (0.3287, ".1%", "tex", "32.9\\%"),
        (0.3287, "%.1f", "plain", "32.9"),  # the % scale: x100, no sign
        (-0.2921, ".2f", "plain", "-0.29"),
    ],
)
def test_render(value: float, spec: str, style: str, text: str) -> None:
    """Python format specs, the % scale, the shortest exponent and the TeX form."""
    assert render(value, spec, style) == text


def test_render_refuses_specs_that_do_not_fit_the_value() -> None:
    """A spec that cannot format the value, or a non-finite value, is an error, not a guess."""
    with pytest.raises(CiteError, match="does not apply"):
        render(0.5, "d")
    with pytest.raises(CiteError, match="cannot quote"):
        render(float("nan"), ".3f")


# --- check and fix ------------------------------------------------------------------------------


def test_check_reports_a_drifted_number_with_the_record_value(tmp_path: Path, results: Path
                                                              ) -> None:
    """A number that drifted from its record is reported with the value the record gives."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Notes\n\nMSE 0.264{_cite('metrics.training.lr_0.01.gelu.loss.-1', '.3f')}"
                   f", peak 7.4{_cite('metrics.training.lr_0.01.gelu.loss:max', '.1f')}.\n")
    [bad] = check([doc], results)
    assert bad.expected == "0.186" and bad.citation.number == "0.264"
    assert str(bad).startswith(f"{doc}:3: '0.264' should be '0.186'")


def test_check_reports_a_missing_key_with_file_and_line(tmp_path: Path, results: Path) -> None:
    """A renamed key, or a marker with no number, is reported as file:line with the reason."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"line one\nline two\nthe value 0.5{_cite('metrics.renamed', '.1f')}\n")
    [bad] = check([doc], results)
    assert bad.expected is None
    assert str(bad) == (f"{doc}:3: '0.5' cites 'toy.study metrics.renamed .1f': "
                        "no key 'renamed' in 'metrics.renamed'")
    doc.write_text(f"x\n\nno number {_cite('metrics.loss', '.1f')}\n")
    assert [str(m) for m in check([doc], results)] == [
        f"{doc}:3: no number right before '{_cite('metrics.loss', '.1f')}'"]


def _notebook(path: Path, markdown: str) -> None:
    """A three-cell notebook: a title, a code cell with an output, then ``markdown``."""
    cells = [
        {"cell_type": "markdown", "id": "a1", "metadata": {}, "source": ["# Title\n"]},
        {"cell_type": "code", "execution_count": 1, "id": "b2", "metadata": {},
         "outputs": [{"name": "stdout", "output_type": "stream", "text": ["0.264\n"]}],
         "source": ["print(0.264)  # 0.264<!-- cite: toy.study metrics.loss .3f -->"]},
        {"cell_type": "markdown", "id": "c3", "metadata": {},
         "source": markdown.splitlines(keepends=True)},
    ]
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def test_notebooks_are_checked_in_markdown_cells_only(tmp_path: Path, results: Path) -> None:
    """Markdown cells are checked and located by cell and line; code cells are not prose."""
    nb = tmp_path / "n.ipynb"
    _notebook(nb, f"Text.\nThe loss is 0.264{_cite('metrics.loss', '.3f')}.")
    [bad] = check([nb], results)
    assert str(bad).startswith(f"{nb}:cell2:2: '0.264' should be '0.186'")


def test_fix_rewrites_numbers_in_their_own_form(tmp_path: Path, results: Path) -> None:
    """--fix rewrites plain, TeX, thousands, per-cent and ratio numbers; a missing key stays."""
    ratio = _cite("metrics.sweep.1.rank/metrics.sweep.0.rank", ".1f")
    doc = tmp_path / "doc.md"
    doc.write_text(
        f"MSE 0.264{_cite('metrics.loss', '.3f')}, error $9.9\\times10^{{-4}}$"
        f"{_cite('metrics.tiny', '.1e')}, T = 1,000{_cite('metrics.count', ',d')}, "
        f"share 40%{_cite('metrics.share', '.0%')}, ratio 2{ratio}"
        f"×, missing 1{_cite('metrics.gone', '.0f')}.\n")
    left = fix([doc], results)
    assert [m.citation.number for m in left] == ["1"]  # a missing key cannot be fixed
    assert doc.read_text() == (
        f"MSE 0.186{_cite('metrics.loss', '.3f')}, error $8.6\\times10^{{-5}}$"
        f"{_cite('metrics.tiny', '.1e')}, T = 109,448{_cite('metrics.count', ',d')}, "
        f"share 33%{_cite('metrics.share', '.0%')}, ratio 4.8{ratio}"
        f"×, missing 1{_cite('metrics.gone', '.0f')}.\n")
    assert [m.citation.number for m in check([doc], results)] == ["1"]


def test_fix_edits_notebook_markdown_and_keeps_code_and_outputs(tmp_path: Path, results: Path
                                                               ) -> None:
    """--fix on a notebook changes the Markdown cell only, keeping its line structure."""
    nb = tmp_path / "n.ipynb"
    _notebook(nb, f"The loss is 0.264{_cite('metrics.loss', '.3f')}.\nNext line.\n")
    before = json.loads(nb.read_text())
    assert fix([nb], results) == []
    after = json.loads(nb.read_text())
    assert after["cells"][:2] == before["cells"][:2]
    assert after["cells"][2]["source"] == [f"The loss is 0.186{_cite('metrics.loss', '.3f')}.\n",
                                           "Next line.\n"]
    assert check([nb], results) == []


def test_command_line_check_fix_and_list(tmp_path: Path, results: Path, capsys) -> None:
    """The command line exits 1 on a wrong number, fixes it, then passes and lists it."""
    doc = tmp_path / "doc.md"
    doc.write_text(f"MSE 0.264{_cite('metrics.loss', '.3f')}\n")
    args = ["--results", str(results), str(doc)]
    assert main(["--check", *args]) == 1
    assert f"{doc}:1: '0.264' should be '0.186'" in capsys.readouterr().err
    assert main(["--fix", *args]) == 0
    assert main(args) == 0
    assert main(["--list", *args]) == 0
    assert f"{doc}:1: 0.186 <- toy.study metrics.loss .3f" in capsys.readouterr().out


# --- the repository's prose ---------------------------------------------------------------------


def test_default_paths_cover_docs_readme_and_notebooks() -> None:
    """The check covers the derivations, the README and the notebooks."""
    paths = {p.relative_to(REPO).as_posix() for p in default_paths(REPO)}
    assert "README.md" in paths and "docs/derivations/gelu.md" in paths
    assert "notebooks/01_core_components.ipynb" in paths


def test_cited_numbers_match_the_published_results() -> None:
    """Every number the docs, the README and the notebooks cite equals its published record."""
    found, bad = citations_in(default_paths(REPO), REPO / "docs" / "results")
    assert not bad, "\n".join(map(str, bad))
    cited = {c.where.split(":")[0] for c in found}
    for doc in ("gelu.md", "positional-encoding.md", "01_core_components.ipynb"):
        assert any(path.endswith(doc) for path in cited), f"{doc} cites nothing"
