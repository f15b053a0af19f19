"""Loaders and the CLI against malformed files (hypothesis): SNLI JSON lines, tokenizer files,
study records. Each either works or raises its one documented error type; the CLI exits 0, or
2 with one ``scratchformer: error:`` line. Never a hang, never a write outside the output folder.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz_helpers import changed_outside, time_limit, tree
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scratchformer import cli
from scratchformer.data.errors import DataError
from scratchformer.data.snli import LABELS, read_snli_file
from scratchformer.tokenizers import BPETokenizer

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=4),
    max_leaves=8,
)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """A fresh folder, also the working directory, so that stray relative writes show up."""
    with tempfile.TemporaryDirectory() as tmp:
        old = os.getcwd()
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


# ----------------------------------------------------------------------------- SNLI


def _row(draw: st.DrawFn, kind: str = "good") -> str:
    """One line: a good row, a row with a garbled field, any JSON, or any text."""
    good = {"gold_label": draw(st.sampled_from([*LABELS, "-"])), "sentence1": draw(TEXT),
            "sentence2": draw(TEXT)}
    if kind == "field":
        good[draw(st.sampled_from(sorted(good)))] = draw(JSON)
    elif kind == "drop":
        del good[draw(st.sampled_from(sorted(good)))]
    elif kind == "json":
        return json.dumps(draw(JSON))
    elif kind == "text":
        return draw(TEXT)
    return json.dumps(good)


def _pack(text: bytes, kind: str) -> bytes:
    if kind == "gz":
        return gzip.compress(text)
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("snli_1.0/snli_1.0_dev.jsonl", text)
        return buffer.getvalue()
    return text


@settings(SETTINGS, max_examples=150)
@given(data=st.data(), kind=st.sampled_from(["plain", "gz", "zip"]),
       damage=st.sampled_from(["none", "none", "flip", "cut", "bytes"]))
def test_snli_files_load_or_raise_a_data_error(data: st.DataObject, kind: str,
                                               damage: str) -> None:
    rows = [_row(data.draw) for _ in range(data.draw(st.integers(0, 6)))]
    if rows and data.draw(st.booleans()):  # one bad line among good ones
        bad = data.draw(st.sampled_from(["field", "drop", "json", "text"]))
        rows[data.draw(st.integers(0, len(rows) - 1))] = _row(data.draw, bad)
    text = "\n".join(rows).encode("utf-8") + b"\n"
    blob = bytearray(_pack(text, kind))
    if damage == "flip" and blob:
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    elif damage == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    elif damage == "bytes":
        blob = bytearray(data.draw(st.binary(max_size=200)))
    suffix = {"plain": ".jsonl", "gz": ".jsonl.gz", "zip": ".zip"}[kind]
    with sandbox() as tmp:
        path = tmp / ("snli_1.0.zip" if kind == "zip" else f"snli_1.0_dev{suffix}")
        path.write_bytes(bytes(blob))
        before = tree(tmp)
        try:
            with time_limit(10):
                split = read_snli_file(path, "dev")
        except DataError as e:
            assert str(path) in str(e)
            event("DataError")
        else:
            assert len(split) > 0 and all(p.label in LABELS for p in split.pairs)
            event("loaded")
        assert changed_outside(before, tree(tmp)) == []


# ----------------------------------------------------------------------------- tokenizers

BASE = BPETokenizer.from_merges([(97, 98), (256, 99), (32, 257)], ["<|endoftext|>"]).to_dict()
PATTERNS = st.sampled_from(["gpt2", "gpt4", r"\w+|\s+|.", r"[a-c]+", "(", "", "x{99999}",
                            r"(?<=a)b", r"\p{L}+", "(a|aa)+$"]) | st.text(
    st.sampled_from("()[]{}|+*?.^$\\abc:=!<>,0123456789sSwWdDpPL"), max_size=12)


def _tokenizer_blob(draw: st.DrawFn) -> bytes:
    """A tokenizer file: the base with one field or entry forged, or damaged bytes."""
    data = json.loads(json.dumps(BASE))
    kind = draw(st.sampled_from(["field", "pattern", "vocab", "merge", "special", "bytes",
                                 "flip"]))
    if kind == "field":
        data[draw(st.sampled_from(sorted(data)))] = draw(JSON)
    elif kind == "pattern":
        data["pattern"] = draw(PATTERNS)
    elif kind == "vocab":
        key = draw(st.sampled_from(sorted(data["vocab"])))
        if draw(st.booleans()):
            data["vocab"][key] = draw(JSON | st.text("0123456789abcdef", max_size=6))
        else:
            data["vocab"][draw(st.text(max_size=4))] = data["vocab"].pop(key)
    elif kind == "merge":
        data["merges"][draw(st.integers(0, 2))] = draw(JSON | st.lists(
            st.integers(-2, 300), min_size=2, max_size=2))
    elif kind == "special":
        data["special_tokens"] = draw(st.dictionaries(TEXT, JSON | st.integers(0, 400),
                                                      max_size=2))
    blob = json.dumps(data).encode("utf-8")
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "flip":
        blob = bytearray(blob)
        blob[draw(st.integers(0, len(blob) - 1))] ^= draw(st.integers(1, 255))
        return bytes(blob)
    return blob


@settings(SETTINGS, max_examples=200)
@given(data=st.data(), text=TEXT)
def test_tokenizer_files_load_or_raise_a_value_error(data: st.DataObject, text: str) -> None:
    blob = _tokenizer_blob(data.draw)
    with sandbox() as tmp:
        path = tmp / "tok.json"
        path.write_bytes(blob)
        before = tree(tmp)
        try:
            with time_limit(10):
                tok = BPETokenizer.load(path)
        except ValueError as e:
            assert str(path) in str(e) and "\n" not in str(e)
            event("ValueError on load")
        else:
            try:
                with time_limit(10):
                    ids = tok.encode(text, disallowed_special=())
            except ValueError as e:  # only a pattern over its time limit may refuse
                assert "catastrophic backtracking" in str(e)
                event("pattern timed out")
            else:
                assert tok.decode(ids, errors="strict") == text
                event("loaded, round trip exact")
        assert changed_outside(before, tree(tmp)) == []


# ----------------------------------------------------------------------------- the CLI


def _one_line_or_success(rc: int, err: str) -> None:
    assert rc in (0, 2)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("scratchformer: error: "), err


@settings(SETTINGS, max_examples=60,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), text=TEXT)
def test_cli_tokenizer_commands_on_malformed_files(data: st.DataObject, text: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    blob = _tokenizer_blob(data.draw)
    corpus = data.draw(st.binary(max_size=200) | TEXT.map(lambda t: t.encode("utf-8")))
    with sandbox() as tmp:
        (tmp / "tok.json").write_bytes(blob)
        (tmp / "corpus.txt").write_bytes(corpus)
        (tmp / "out").mkdir()
        before = tree(tmp)
        capsys.readouterr()
        runs = [["tokenizer", "encode", "--tokenizer", str(tmp / "tok.json"), "--text", text],
                ["tokenizer", "decode", "--tokenizer", str(tmp / "tok.json"), "97", "300"],
                ["tokenizer", "train", "--input", str(tmp / "corpus.txt"), "--vocab-size",
                 "262", "--out", str(tmp / "out" / "t.json")]]
        for argv in runs:
            with time_limit(10):
                rc = cli.main(argv)
            _one_line_or_success(rc, capsys.readouterr().err)
            event(f"{argv[1]}: exit {rc}")
        assert changed_outside(before, tree(tmp), allowed="out") == []


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
@settings(SETTINGS, max_examples=60,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(record=JSON | st.fixed_dictionaries(
    {"study": TEXT, "profile": TEXT, "wall_time_s": st.floats(), "finished_at": TEXT,
     "metrics": st.dictionaries(TEXT, JSON, max_size=3) | st.just(
         {"tradeoff": {"points": [{"variant": "a", "speed": 1.0, "quality": 2.0}]}})},
    optional={"figures": st.lists(st.sampled_from(["f.png", "../../x.png", "/etc/x.png"]),
                                  max_size=2), "description": JSON}),
    raw=st.booleans(), junk=st.binary(max_size=40))
def test_cli_report_on_malformed_records(record: object, raw: bool, junk: bytes,
                                         capsys: pytest.CaptureFixture) -> None:
    with sandbox() as tmp:
        (tmp / "res" / "s").mkdir(parents=True)
        (tmp / "res" / "s" / "metrics.json").write_bytes(
            junk if raw else json.dumps(record).encode("utf-8"))
        before = tree(tmp)
        capsys.readouterr()
        with time_limit(20):
            rc = cli.main(["report", "--results", str(tmp / "res"), "--out", str(tmp / "out")])
        _one_line_or_success(rc, capsys.readouterr().err)
        event(f"report: exit {rc}")
        assert changed_outside(before, tree(tmp), allowed="out") == []
