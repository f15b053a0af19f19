"""ETT loading, the Chronos-style tokenizer and forecaster, forecast metrics, the CLI, the study."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchformer import cli
from scratchformer.analysis.forecast_metrics import (
    QUANTILES,
    mae,
    mase,
    mse,
    per_step,
    point_wql,
    sample_quantiles,
    wql,
)
from scratchformer.data.ett import CHANNELS, SeriesFormatError, load_ett, read_columns
from scratchformer.experiments.registry import StudyError, get
from scratchformer.generation import generate
from scratchformer.models.forecast import (
    MeanScaleTokenizer,
    TokenForecaster,
    draw,
    forecast_series,
    load_forecaster,
    save_forecaster,
)
from scratchformer.models.forecast_baselines import repeat_last, seasonal_naive
from scratchformer.models.forecast_nets import DLinear, PatchTST, moving_average
from scratchformer.models.gpt import GPT, GPTConfig


def tiny_forecaster(bins: int = 32, context: int = 24, chunk: int = 8, seed: int = 0
                    ) -> TokenForecaster:
    """An untrained two-layer token GPT small enough for unit tests."""
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=bins, context_len=context + chunk, n_layers=2, n_heads=2,
                        d_model=16, bias=False))
    return TokenForecaster(gpt, MeanScaleTokenizer(bins), context, chunk).eval()


def write_csv(path: Path, rows: list[list[str]], header: str = "date,OT") -> Path:
    """A CSV of ``header`` and ``rows`` (cells as given)."""
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    return path


# --- reading ----------------------------------------------------------------------------------


def test_read_columns_reads_numbers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", [[f"d{i}", str(i / 2)] for i in range(5)])
    assert read_columns(path, ["OT"]).ravel().tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]


@pytest.mark.parametrize(("rows", "header", "columns", "min_rows", "message"), [
    ([["a", "1"]], "date,HUFL", ["OT"], 1, r"line 1: missing column\(s\) OT"),
    ([["a", "1"], ["b", "x7"]], "date,OT", ["OT"], 1, r"line 3: column OT: 'x7' is not a number"),
    ([["a", "1"], ["b", "nan"]], "date,OT", ["OT"], 1, r"line 3: column OT: 'nan' is not finite"),
    ([["a", "1"], ["b"]], "date,OT", ["OT"], 1, r"line 3: column OT is missing"),
    ([["a", "1"], ["b", "2"]], "date,OT", ["OT"], 5, r"too few rows: 2 data row\(s\), at least 5"),
])
def test_bad_csv_names_file_and_line(tmp_path: Path, rows, header, columns, min_rows,
                                     message) -> None:
    path = write_csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(SeriesFormatError, match=message) as info:
        read_columns(path, columns, min_rows)
    assert str(path) in str(info.value)


def test_ett_file_missing_a_channel_is_refused(tmp_path: Path) -> None:
    header = "date," + ",".join(c for c in CHANNELS if c != "MULL")
    path = write_csv(tmp_path / "ETTh1.csv", [["d"] + ["1"] * 6], header)
    with pytest.raises(SeriesFormatError, match=r"line 1: missing column.*MULL"):
        load_ett("ETTh1", path)


@pytest.fixture
def etth1(monkeypatch: pytest.MonkeyPatch, shared_data: Path):
    """ETTh1 from the data mirror, downloads refused."""
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "1")
    return load_ett("ETTh1")


def test_ett_protocol_splits_standardisation_and_windows(etth1) -> None:
    v = etth1.values
    assert v.shape == (14400, 7)
    np.testing.assert_allclose(v[:8640].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(v[:8640].std(0), 1, atol=1e-4)
    t0 = etth1.windows("test", 96, 336)
    assert (t0[0], t0[-1], len(t0)) == (11520, 14400 - 96, 2785)  # Informer's count
    val = etth1.windows("val", 96, 336)
    assert (val[0], val[-1]) == (8640, 11520 - 96)
    train = etth1.windows("train", 96, 336)
    assert (train[0], train[-1], len(train)) == (336, 8640 - 96, 8209)
    assert len(etth1.windows("test", 24, 336, stride=24)) == 120
    # repeat-last over every test window and channel: the published "Repeat" figure (1.295)
    target = v[t0[:, None] + np.arange(96)]
    assert mse(np.repeat(v[t0 - 1][:, None], 96, 1), target) == pytest.approx(1.294, abs=2e-3)


# --- tokenizer and forecaster -----------------------------------------------------------------


def test_tokenizer_round_trip_within_half_a_bin() -> None:
    tok = MeanScaleTokenizer(256)
    x = torch.randn(50, 40) * 3 + 1
    scale = tok.scale(x)
    ids = tok.encode(x, scale)
    assert ids.dtype == torch.int64 and ids.min() >= 0 and ids.max() < 256
    err = (tok.decode(ids, scale) - x).abs()
    assert (err <= tok.width / 2 * scale + 1e-6).all()
    assert tok.scale(torch.zeros(2, 5)).eq(1).all()  # all-zero context: scale 1
    far = tok.encode(torch.tensor([[0.0, 1e6, -1e6]]), torch.ones(1, 1))
    assert far.tolist() == [[128, 255, 0]]  # out of range: clipped to the end bins


def test_greedy_forecast_matches_library_generate() -> None:
    model = tiny_forecaster()
    history = torch.randn(3, 30)
    out = model.sample(history, 8, greedy=True)
    ctx = history[:, -24:]
    scale = model.tokenizer.scale(ctx)
    ids = generate(model.gpt, model.tokenizer.encode(ctx, scale), 8, greedy=True)[:, 24:]
    torch.testing.assert_close(out[:, 0], model.tokenizer.decode(ids, scale))


def test_sampling_is_seeded_and_chunked() -> None:
    model = tiny_forecaster()
    history = torch.randn(4, 24)
    a = model.sample(history, 20, 5, generator=torch.Generator().manual_seed(1), max_rows=10)
    b = model.sample(history, 20, 5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 5, 20)  # 20 steps = chunks of 8, 8, 4
    assert not torch.equal(a[:, 0], a[:, 1])
    c = model.sample(history, 20, 5, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)
    # grouping paths into batches of max_rows does not change what each path draws per group
    assert a.shape == b.shape
    with pytest.raises(ValueError, match="history must be"):
        model.sample(torch.randn(2, 10), 4)


def test_draw_samples_the_categorical() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]])).repeat(20000, 1)
    ids = draw(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=3).float() / len(ids)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.01, rtol=0)
    assert draw(logits[:2], greedy=True).tolist() == [1, 1]


def test_forecaster_checks_sizes() -> None:
    gpt = GPT(GPTConfig(vocab_size=32, context_len=20, n_layers=1, n_heads=2, d_model=8))
    with pytest.raises(ValueError, match="context_len=20 must be >= context"):
        TokenForecaster(gpt, MeanScaleTokenizer(32), 16, 8)
    with pytest.raises(ValueError, match="vocab_size=32 must equal n_bins=64"):
        TokenForecaster(gpt, MeanScaleTokenizer(64), 12, 8)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = tiny_forecaster()
    save_forecaster(model, tmp_path / "m", extra={"bins": 32})
    loaded, extra = load_forecaster(tmp_path / "m")
    assert extra == {"bins": 32} and loaded.context == 24 and loaded.chunk == 8
    h = torch.randn(2, 24)
    torch.testing.assert_close(loaded.sample(h, 8, greedy=True), model.sample(h, 8, greedy=True))
    with pytest.raises(FileNotFoundError, match="no forecaster"):
        load_forecaster(tmp_path / "none")
    meta = tmp_path / "m" / "state.json"
    meta.write_text(meta.read_text().replace('"n_bins": 32', '"n_bins": "x"'))
    with pytest.raises(ValueError, match="bad forecaster config"):
        load_forecaster(tmp_path / "m")


# --- direct models and baselines --------------------------------------------------------------


def test_direct_models_and_baselines_shapes() -> None:
    x = torch.randn(5, 48)
    assert DLinear(48, 12)(x).shape == (5, 12)
    p = PatchTST(48, 12, patch_len=8, stride=4, d_model=8, n_heads=2, n_layers=1, d_hidden=16)
    assert p.n_patches == 12 and p(x).shape == (5, 12)
    torch.testing.assert_close(moving_average(torch.full((2, 30), 3.0), 25),
                               torch.full((2, 30), 3.0))
    h = np.arange(48.0)[None]
    assert repeat_last(h, 3).tolist() == [[47.0, 47.0, 47.0]]
    assert seasonal_naive(h, 26).ravel().tolist() == [*range(24, 48), 24, 25]


# --- metrics ----------------------------------------------------------------------------------


def test_metrics() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(4, 3, 10)) + 2, rng.normal(size=(4, 3, 10)) + 2
    assert mse(p, y) == pytest.approx(((p - y) ** 2).mean())
    assert mae(p, y) == pytest.approx(np.abs(p - y).mean())
    assert per_step(p, y).shape == (10,)
    q = np.broadcast_to(p, (len(QUANTILES), *p.shape))
    assert wql(q, y) == pytest.approx(point_wql(p, y))  # a point forecast at every level
    paths = rng.normal(size=(4, 3, 200, 10))
    assert sample_quantiles(paths).shape == (9, 4, 3, 10)
    season = np.tile(np.arange(24.0), 3)
    history = np.broadcast_to(season + np.arange(72) * 0.1, (4, 3, 72))
    target = np.broadcast_to(np.arange(24.0)[:10] + 7.2, (4, 3, 10))
    assert mase(target + 0.1, target, history) == pytest.approx(0.1 / 2.4)


# --- command line -----------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_forecaster(tiny_forecaster(), tmp_path / "model")


def test_cli_forecast_prints_and_plots(tmp_path: Path, model_dir: Path, capsys) -> None:
    rows = [[f"d{i}", f"{10 + np.sin(i / 4):.4f}"] for i in range(60)]
    csv = write_csv(tmp_path / "s.csv", rows)
    png = tmp_path / "f.png"
    argv = ["forecast", str(csv), "--horizon", "12", "--checkpoint", str(model_dir),
            "--samples", "6", "--out", str(png)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [ln.split() for ln in lines if ln and not ln.startswith("#")][1:]
    assert len(table) == 12 and [int(r[0]) for r in table] == list(range(1, 13))
    assert all(float(lo) <= float(m) <= float(hi) for _, m, lo, hi in table)
    assert png.read_bytes()[:4] == b"\x89PNG"
    fc = forecast_series(load_forecaster(model_dir)[0], torch.arange(30.0), 5, 4)
    assert fc.paths.shape == (4, 5) and fc.median.shape == (5,)


@pytest.mark.parametrize(("rows", "header", "extra", "message"), [
    ([["d", "1"]] * 40, "date,HUFL", [], "missing column"),
    ([["d", "1"]] * 10, "date,OT", [], "too few rows"),
    ([["d", "1"]] * 30 + [["d", "oops"]], "date,OT", [], "'oops' is not a number"),
    ([["d", "1"]] * 40, "date,OT", ["--horizon", "0"], "--horizon must be >= 1"),
])
def test_cli_forecast_errors_are_one_line(tmp_path: Path, model_dir: Path, capsys, rows, header,
                                          extra, message) -> None:
    csv = write_csv(tmp_path / "s.csv", rows, header)
    argv = ["forecast", str(csv), "--checkpoint", str(model_dir), "--out",
            str(tmp_path / "f.png"), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchformer: error:") and "\n" not in err and message in err


# --- the study --------------------------------------------------------------------------------


def test_config_checks() -> None:
    study = get("timeseries.ett")
    with pytest.raises(StudyError, match="select_horizon"):
        study.config("quick", {"select_horizon": "48"})
    with pytest.raises(StudyError, match="multiple of"):
        study.config("quick", {"classical_stride": "1000"})
    with pytest.raises(StudyError, match=r"bins\[0\]"):
        study.config("quick", {"bins": "1,8"})


def test_study_runs_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         shared_data: Path) -> None:
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "1")
    study = get("timeseries.ett")
    cfg = dataclasses.replace(
        study.config("quick"), horizons=(24,), select_horizon=24, bins=(16, 32), context=32,
        chunk=16, d_model=16, steps=4, warmup_steps=1, eval_every=2, val_windows=8, samples=3,
        test_stride=240, gpt_stride=1440, val_stride=1440, dlinear_steps=4, patch_steps=2,
        patch_layers=1, model_eval_stride=240, lookback=48, classical=False)
    rec = study.run(cfg, tmp_path)
    res = rec["results"]["ETTh1"]["24"]
    assert res["windows"] == {"all": 12, "gpt": 2}
    assert {"gpt", "gpt_greedy", "gpt_mean", "patchtst", "dlinear", "dlinear_ot",
            "repeat_last", "seasonal_naive"} <= set(res["methods"])
    assert set(res["methods"]["gpt"]) == {"gpt"}
    assert rec["bins"]["chosen"] in (16, 32)
    assert {"gpt_beats_naive", "multi_mse_le_0.40", "uni_mse_le_dlinear"} <= set(rec["targets"])
    model, extra = load_forecaster(tmp_path / "model")
    assert model.tokenizer.n_bins == rec["bins"]["chosen"] == extra["bins"]
    for name in ("forecast_examples.png", "error_vs_horizon.png", "token_histogram.png",
                 "attention.png", "bin_sweep.png", "summary.md"):
        assert (tmp_path / name).is_file(), name
