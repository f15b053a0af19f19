"""SNLI loader: plain, gzipped and zipped files, dropped rows, errors naming file and line."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from scratchformer.data.errors import ChecksumError, DataError, DataUnavailableError
from scratchformer.data.snli import LABELS, load_snli, read_snli_file


def _row(label: str, premise: str = "A dog runs.", hypothesis: str = "An animal moves.") -> str:
    return json.dumps({"gold_label": label, "sentence1": premise, "sentence2": hypothesis,
                       "pairID": "x"})


ROWS = [_row("entailment"), _row("-"), _row("neutral", "Two men.", "Brothers."),
        _row("contradiction", "A cat sleeps.", "A cat runs."), _row("-")]
TEXT = "\n".join(ROWS) + "\n"


def _write(tmp_path: Path, kind: str, split: str = "dev", text: str = TEXT) -> Path:
    if kind == "plain":
        path = tmp_path / f"snli_1.0_{split}.jsonl"
        path.write_text(text, encoding="utf-8")
    elif kind == "gz":
        path = tmp_path / f"snli_1.0_{split}.jsonl.gz"
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path = tmp_path / "snli_1.0.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"snli_1.0/snli_1.0_{split}.jsonl", text)
    return path


@pytest.mark.parametrize("kind", ["plain", "gz", "zip"])
def test_reads_every_format_and_drops_rows_without_gold_label(tmp_path, kind):
    data = read_snli_file(_write(tmp_path, kind), "dev")
    assert [p.label for p in data.pairs] == ["entailment", "neutral", "contradiction"]
    assert data.pairs[2].premise == "A cat sleeps." and data.pairs[2].hypothesis == "A cat runs."
    assert (data.lines, data.dropped_no_gold, len(data)) == (5, 2, 3)
    assert data.label_counts == {"entailment": 1, "neutral": 1, "contradiction": 1}
    assert [p.label_id for p in data.pairs] == [0, 1, 2] and LABELS[1] == "neutral"
    assert data.summary()["dropped_no_gold"] == 2


@pytest.mark.parametrize("kind", ["plain", "gz", "zip"])
def test_malformed_json_names_file_and_line(tmp_path, kind):
    text = "\n".join([ROWS[0], ROWS[1], '{"gold_label": "neutral", "sentence1": '])
    path = _write(tmp_path, kind, text=text)
    with pytest.raises(DataError, match=r"line 3: malformed JSON") as err:
        read_snli_file(path, "dev")
    assert path.name in str(err.value)


def test_unknown_label_names_file_line_and_label(tmp_path):
    text = "\n".join([ROWS[0], _row("maybe")])
    path = _write(tmp_path, "gz", text=text)
    with pytest.raises(DataError, match=r"snli_1.0_dev.jsonl.gz, line 2: unknown gold_label "
                                        r"'maybe'"):
        read_snli_file(path, "dev")


def test_missing_field_and_non_object_lines_raise(tmp_path):
    path = _write(tmp_path, "plain", text=ROWS[0] + '\n{"gold_label": "neutral"}\n')
    with pytest.raises(DataError, match=r"line 2: missing field\(s\) \['sentence1', "):
        read_snli_file(path, "dev")
    path = _write(tmp_path, "plain", text="[1, 2]\n")
    with pytest.raises(DataError, match=r"line 1: expected a JSON object"):
        read_snli_file(path, "dev")


def test_missing_split_in_zip_and_missing_file(tmp_path):
    path = _write(tmp_path, "zip", split="dev")
    with pytest.raises(DataUnavailableError, match=r"snli_1.0.zip has no member "
                                                   r"'snli_1.0/snli_1.0_test.jsonl'"):
        read_snli_file(path, "test")
    with pytest.raises(DataUnavailableError, match="does not exist"):
        read_snli_file(tmp_path / "snli_1.0_train.jsonl", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        read_snli_file(path, "validation")


def test_load_snli_finds_a_plain_file_in_the_mirror(tmp_path, data_env, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "snli_1.0").mkdir(parents=True)
    _write(mirror / "snli_1.0", "plain", split="train")
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(mirror))
    data = load_snli("train", verify=False, offline=True)
    assert len(data) == 3 and data.source.endswith("snli_1.0_train.jsonl")
    # With the content check on, 5 lines is neither the official nor the mirror's train set.
    with pytest.raises(ChecksumError, match="5 lines, expected the official 550,152"):
        load_snli("train", offline=True)


def test_load_snli_reads_the_zip_from_the_cache(tmp_path, data_env):
    (data_env / "snli_1.0").mkdir(parents=True)
    _write(data_env / "snli_1.0", "zip", split="test")
    data = load_snli("test", verify=False, offline=True, progress=False)
    assert len(data) == 3 and "snli_1.0.zip!" in data.source
    with pytest.raises(ChecksumError, match="expected the official"):
        load_snli("test", offline=True, progress=False)  # not the official test bytes
    with pytest.raises(ChecksumError, match="zip_sha256"):
        load_snli("test", verify=False, offline=True, zip_sha256="0" * 64, progress=False)


def test_load_snli_missing_split_says_where_it_looked(data_env):
    with pytest.raises(DataUnavailableError, match=r"SNLI split 'dev' not found") as err:
        load_snli("dev", offline=True, progress=False)
    assert "snli_1.0_dev.jsonl" in str(err.value) and "snli_1.0.zip" in str(err.value)


def test_mirror_dev_and_test_sizes(shared_data, data_env, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    dev, test = load_snli("dev", offline=True), load_snli("test", offline=True)
    assert (len(dev), dev.dropped_no_gold) == (9_842, 158)
    assert (len(test), test.dropped_no_gold) == (9_824, 176)
    assert dev.label_counts == {"entailment": 3_329, "neutral": 3_235, "contradiction": 3_278}
    train = load_snli("train", offline=True)
    assert (train.lines, len(train), train.dropped_no_gold) == (27_874, 27_868, 6)


@pytest.mark.parametrize(("text", "message"), [
    ("", r"no labelled pairs \(0 line\(s\), 0 without a gold label\)"),
    (_row("-") + "\n" + _row("-") + "\n", r"no labelled pairs \(2 line\(s\), 2 without"),
])
@pytest.mark.parametrize("kind", ["plain", "gz", "zip"])
def test_a_file_without_labelled_pairs_is_a_data_error(tmp_path, kind, text, message):
    path = _write(tmp_path, kind, text=text)
    with pytest.raises(DataError, match=message) as err:
        read_snli_file(path, "dev")
    assert path.name in str(err.value)


def test_bad_bytes_and_deep_nesting_name_the_line(tmp_path):
    path = tmp_path / "snli_1.0_dev.jsonl"
    path.write_bytes(ROWS[0].encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"line 2: not UTF-8"):
        read_snli_file(path, "dev")
    path.write_text(ROWS[0] + "\n" + "[" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"line 2: JSON nested too deeply"):
        read_snli_file(path, "dev")


@pytest.mark.parametrize("kind", ["gz", "zip"])
def test_corrupt_archives_are_data_errors(tmp_path, kind):
    path = _write(tmp_path, kind)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 24):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(DataError):
        read_snli_file(path, "dev")
