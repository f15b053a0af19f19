"""The notebooks re-execute to the outputs they are stored with; `compare` finds what changed."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

from scratchformer.notebooks import (
    compare,
    doc_section,
    markdown_table,
    mask_volatile,
    published_figures,
    published_record,
    results_dir,
)

nbformat = pytest.importorskip("nbformat")
from nbformat.v4 import (  # noqa: E402
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NEEDS_MODULES = {"02_gpt_next_token": ("transformers",)}
NEEDS_DATA = {"02_gpt_next_token"}  # trains a small BPE on Tiny Shakespeare


# --- the stored notebooks ---------------------------------------------------------------------


def test_every_notebook_is_stored_executed_and_small() -> None:
    """Each notebook holds the outputs of a complete, error-free run and stays a few MB."""
    assert [p.name for p in NOTEBOOKS] == [
        "01_core_components.ipynb", "02_gpt_next_token.ipynb", "03_deepseek_style.ipynb",
        "04_applications.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), f"{path.name}: run `make notebooks`"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"]
        assert path.stat().st_size < 4_000_000, path.name


def test_notebooks_read_published_results_and_run_no_study() -> None:
    """Numbers come from docs/results; no notebook runs a study or reads the ignored results/."""
    for path in NOTEBOOKS:
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                           if c.cell_type == "code")
        assert "published_record(" in source, path.name
        source = source.replace('["results"]', "[key]")  # a metrics key, not the folder
        for forbidden in ("ensure_record", "run_study", 'profile="quick"', '"results"'):
            assert forbidden not in source, f"{path.name} uses {forbidden}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_match_a_fresh_run(path: Path, request: pytest.FixtureRequest,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Executing the notebook reproduces its stored outputs (`make notebooks` refreshes them)."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    for module in NEEDS_MODULES.get(path.stem, ()):
        pytest.importorskip(module)
    if path.stem in NEEDS_DATA:
        monkeypatch.setenv("SCRATCHFORMER_DATA", str(request.getfixturevalue("shared_data")))
        monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "1")
    from scratchformer.notebooks import execute

    stored = nbformat.read(path, as_version=4)
    differences = compare(stored, execute(path))
    assert differences == [], "stale outputs; run `make notebooks`:\n" + "\n".join(differences)


# --- compare ----------------------------------------------------------------------------------


def _png(pixels: np.ndarray, software: str = "test") -> str:
    """``pixels`` (H, W, 3 floats in [0, 1]) as a base64 PNG, tagged with ``software``."""
    import matplotlib.image as mpimg

    buffer = io.BytesIO()
    mpimg.imsave(buffer, pixels, format="png", metadata={"Software": software})
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook(text: str = "loss = 0.264\n", image: str | None = None,
              result: str = "0.264") -> nbformat.NotebookNode:
    """A notebook with a Markdown cell, then a code cell printing ``text`` and showing
    ``result`` and, when given, ``image``."""
    outputs = [new_output("stream", name="stdout", text=text),
               new_output("execute_result", data={"text/plain": result}, execution_count=1)]
    if image is not None:
        data = {"image/png": image, "text/plain": "<IPython.core.display.Image object>"}
        outputs.append(new_output("display_data", data=data))
    cell = new_code_cell("print('loss')", outputs=outputs, execution_count=1)
    return new_notebook(cells=[new_markdown_cell("# title"), cell])


def _figure(seed: int = 0) -> np.ndarray:
    """A 40×60 RGB image of random colours."""
    return np.random.default_rng(seed).random((40, 60, 3))


def test_identical_outputs_have_no_difference() -> None:
    """A notebook compared with itself, image included, shows no difference."""
    nb = _notebook(image=_png(_figure()))
    assert compare(nb, _notebook(image=_png(_figure()))) == []


def test_a_changed_number_is_reported() -> None:
    """A number that moved, in printed text or in a result, is a difference naming the cell."""
    found = compare(_notebook("loss = 0.264\n"), _notebook("loss = 0.265\n"))
    assert len(found) == 1 and "cell 1" in found[0] and "0.265" in found[0]
    assert len(compare(_notebook(result="0.264"), _notebook(result="0.27"))) == 1


def test_a_changed_timing_address_or_date_is_not_reported() -> None:
    """Timings, memory addresses and dates change from run to run and are masked."""
    stored = _notebook("took 1.2 s (35 ms/iter, 12.5 it/s) at 0x7f3a2b10, 2026-11-27T09:14:00\n")
    fresh = _notebook("took 3.41 s (7 ms/iter, 3.0 it/s) at 0x55d0e1c0, 2027-01-02T23:59:59\n")
    assert compare(stored, fresh) == []
    assert mask_volatile("12 steps of 4 heads") == "12 steps of 4 heads"


def test_a_changed_image_is_reported() -> None:
    """A different figure is a difference; so is a figure of another size."""
    found = compare(_notebook(image=_png(_figure(0))), _notebook(image=_png(_figure(1))))
    assert len(found) == 1 and "image pixels differ" in found[0]
    found = compare(_notebook(image=_png(_figure())), _notebook(image=_png(_figure()[:, :50])))
    assert len(found) == 1 and "image size" in found[0]


def test_an_identical_image_encoded_differently_is_not_reported() -> None:
    """Equal pixels in other PNG bytes, or rendering noise in a few pixels, are no difference."""
    pixels = _figure()
    stored, fresh = _png(pixels, "renderer 1"), _png(pixels, "renderer 2")
    assert stored != fresh
    assert compare(_notebook(image=stored), _notebook(image=fresh)) == []
    noisy = pixels.copy()
    noisy[0, 0] = 1.0 - noisy[0, 0]
    assert compare(_notebook(image=stored), _notebook(image=_png(noisy))) == []


def test_a_missing_image_or_an_error_is_reported() -> None:
    """Outputs must match in number and kind, and an error output is always a difference."""
    found = compare(_notebook(image=_png(_figure())), _notebook())
    assert len(found) == 1 and "3 outputs stored" in found[0]
    failed = _notebook()
    failed.cells[1].outputs.append(new_output("error", ename="AssertionError", evalue="",
                                              traceback=[]))
    assert any("AssertionError" in d for d in compare(failed, failed))


# --- reading the published results ------------------------------------------------------------


def test_published_record_reads_docs_results_and_explains_a_missing_study(
        tmp_path: Path) -> None:
    """Records come from docs/results; an unknown study names the folder and the fix."""
    assert results_dir() == REPO / "docs" / "results"
    record = published_record("positional.encoding")
    assert record["profile"] == "full"
    assert published_figures(record) == record["figures"]
    (tmp_path / "toy").mkdir()
    toy = {"study": "toy", "figures": ["a.png"]}
    (tmp_path / "toy" / "metrics.json").write_text(json.dumps(toy))
    assert published_figures(published_record("toy", tmp_path), tmp_path) == []
    with pytest.raises(FileNotFoundError, match=r"no published record for study 'nope'.*toy"):
        published_record("nope", tmp_path)


def test_doc_section_and_markdown_table() -> None:
    """A section ends at the next heading as high and loses its image links."""
    section = doc_section("docs/benchmarks.md", "Block-sparse attention")
    assert section.startswith("## Block-sparse attention") and "![" not in section
    assert "\n## " not in section
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
