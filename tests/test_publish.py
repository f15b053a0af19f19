"""`publish`: copies small figures and metrics of full-profile runs and writes an index."""

from __future__ import annotations

import json

import pytest

from scratchformer.publish import MAX_BYTES, MAX_MODEL_BYTES, publish


def test_copies_small_files_skips_large_ones_and_indexes(tmp_path):
    results, dest = tmp_path / "full", tmp_path / "docs"
    study = results / "demo.study"
    study.mkdir(parents=True)
    rec = {"study": "demo.study", "profile": "full", "wall_time_s": 12.3,
           "finished_at": "2026-01-02T03:04:05+00:00", "figures": ["a.png", "big.png"]}
    (study / "metrics.json").write_text(json.dumps(rec))
    (study / "a.png").write_bytes(b"\x89PNG" + b"0" * 100)
    (study / "big.png").write_bytes(b"0" * (MAX_BYTES + 1))
    (study / "model.safetensors").write_bytes(b"0" * 10)
    copied = publish(results, dest)
    assert sorted(p.name for p in copied) == ["a.png", "metrics.json"]
    index = (dest / "README.md").read_text()
    assert "| [demo.study](demo.study/metrics.json) | full | 12 | 2026-01-02 | " in index
    assert "[a.png](demo.study/a.png)" in index and "big.png" not in index


def test_refuses_an_empty_results_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no study results"):
        publish(tmp_path, tmp_path / "docs")


def test_published_results_hold_no_absolute_paths():
    """Published records name data and outputs relative to their roots, not this machine's."""
    import json
    from pathlib import Path

    def strings(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from strings(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from strings(v)
        elif isinstance(obj, str):
            yield obj

    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    for path in root.glob("*/metrics.json"):
        record = json.loads(path.read_text())
        absolute = [s for s in strings(record.get("metrics", {})) if s.startswith("/")]
        assert not absolute, f"{path}: {absolute}"


def test_publishing_one_study_keeps_the_others_and_ships_its_model(tmp_path):
    dest = tmp_path / "docs"

    def run(folder, study, model_bytes=None):
        d = tmp_path / folder / study
        d.mkdir(parents=True)
        rec = {"study": study, "profile": "full", "wall_time_s": 1.0,
               "finished_at": "2026-01-02T03:04:05+00:00", "figures": []}
        (d / "metrics.json").write_text(json.dumps(rec))
        if model_bytes is not None:
            (d / "model").mkdir()
            (d / "model" / "model.safetensors").write_bytes(b"0" * model_bytes)
            (d / "model" / "log.jsonl").write_text("{}")
        return tmp_path / folder

    publish(run("a", "one.study", model_bytes=10), dest)
    (dest / "one.study" / "model" / "stale.json").write_text("{}")
    publish(run("b", "two.study", model_bytes=MAX_MODEL_BYTES + 1), dest)
    publish(run("c", "one.study", model_bytes=20), dest)
    index = (dest / "README.md").read_text()
    assert "[one.study]" in index and "[two.study]" in index
    assert sorted(p.name for p in (dest / "one.study" / "model").iterdir()) == [
        "model.safetensors"]
    assert (dest / "one.study" / "model" / "model.safetensors").stat().st_size == 20
    assert not (dest / "two.study" / "model").exists()
