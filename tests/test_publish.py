"""`publish`: copies small figures and metrics of full-profile runs and writes an index."""

from __future__ import annotations

import json

import pytest

from scratchformer.publish import MAX_BYTES, publish


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
