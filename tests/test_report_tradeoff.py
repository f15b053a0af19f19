"""The report's speed-vs-accuracy section: Pareto fronts, checks, analysis and the built report."""

from __future__ import annotations

import json

import pytest

from scratchformer.report import build_report
from scratchformer.report.tradeoff import Tradeoff, analysis, collect, pareto_front

POINTS = [
    {"variant": "dense", "speed": 100.0, "quality": 1.50},
    {"variant": "sparse", "speed": 180.0, "quality": 1.55},
    {"variant": "slow-bad", "speed": 90.0, "quality": 1.60},   # dominated by dense
    {"variant": "moe", "speed": 100.0, "quality": 1.45},        # dominates dense (same speed)
]


def test_pareto_front_lower_is_better():
    assert pareto_front(POINTS, higher_is_better=False) == ["sparse", "moe"]


def test_pareto_front_higher_is_better_flips_the_quality_axis():
    # 'sparse' is the fastest; 'slow-bad' now has the best quality, so nothing dominates it.
    assert pareto_front(POINTS, higher_is_better=True) == ["sparse", "slow-bad"]


def test_identical_points_do_not_dominate_each_other():
    pts = [{"variant": "a", "speed": 1.0, "quality": 1.0},
           {"variant": "b", "speed": 1.0, "quality": 1.0}]
    assert pareto_front(pts, higher_is_better=True) == ["a", "b"]


def test_analysis_cites_ratios_and_deltas_against_the_baseline():
    t = Tradeoff("s", "val loss", False, "tokens/s", "dense", POINTS)
    text = "\n".join(analysis(t))
    assert "**sparse** runs at 1.80× the speed of dense" in text
    assert "+0.05" in text and "worse" in text
    assert "**moe**" in text and "-0.05" in text and "better" in text
    assert "Best val loss: **moe**" in text


def test_collect_rejects_non_finite_points():
    rec = {"study": "s", "metrics": {"tradeoff": {"points": [
        {"variant": "x", "speed": float("nan"), "quality": 1.0}]}}}
    with pytest.raises(ValueError, match="non-finite speed"):
        collect([rec])
    with pytest.raises(ValueError, match="needs variant"):
        collect([{"study": "s", "metrics": {"tradeoff": {"points": [{"speed": 1.0}]}}}])


def test_report_has_speed_vs_accuracy_section(tmp_path):
    rec = {"study": "demo.tradeoff", "profile": "quick", "wall_time_s": 1.0,
           "finished_at": "now", "description": "d", "figures": [],
           "metrics": {"tradeoff": {"quality_name": "val loss", "higher_is_better": False,
                                    "speed_name": "tokens/s", "baseline": "dense",
                                    "points": POINTS}}}
    (tmp_path / "demo.tradeoff").mkdir()
    (tmp_path / "demo.tradeoff" / "metrics.json").write_text(json.dumps(rec))
    md, html = build_report(tmp_path)
    text = md.read_text()
    assert "## Speed vs accuracy" in text and "| sparse | 180 | 1.55 | yes |" in text
    assert (tmp_path / "tradeoff.png").stat().st_size > 1000
    assert "data:image/png;base64" in html.read_text()


def test_numbers_are_formatted_for_reading():
    from scratchformer.report.tradeoff import fmt

    assert fmt(57520.3) == "57,520" and fmt(2.86234) == "2.862" and fmt(-1500.0) == "-1,500"
