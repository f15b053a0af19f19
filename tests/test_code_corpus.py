"""The Python-source corpus: collection, exclusions, deduplication, the by-file split, manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scratchformer.data.code_corpus import (
    SPLITS,
    CodeFile,
    collect_files,
    dedupe,
    load_code_corpus,
    manifest_hash,
    split_files,
    split_of,
    stdlib_root,
    take_bytes,
)
from scratchformer.data.errors import DataUnavailableError

SMALL_STDLIB = ("keyword.py", "bisect.py", "colorsys.py", "this.py", "nturl2path.py",
                "stat.py", "struct.py", "opcode.py", "glob.py", "fnmatch.py")


def write(root: Path, rel: str, text: str | bytes) -> Path:
    """A file under ``root`` at ``rel`` (folders made)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_split_is_a_function_of_the_path_alone() -> None:
    files = [CodeFile(f"pkg/mod_{i}.py", f"x = {i}\n") for i in range(300)]
    full = split_files(files)
    subset = split_files(files[::7])
    where = {f.path: s for s, fs in full.items() for f in fs}
    for s, fs in subset.items():
        assert all(where[f.path] == s for f in fs)
    # the same path with other content keeps its split
    assert split_of("pkg/mod_3.py") == split_of("pkg/mod_3.py")
    assert all(split_of(f.path) == where[f.path] for f in files)


def test_every_file_lands_in_exactly_one_split_in_proportion() -> None:
    files = [CodeFile(f"m{i}.py", "") for i in range(5000)]
    parts = split_files(files, (0.9, 0.05, 0.05))
    seen = [f.path for s in SPLITS for f in parts[s]]
    assert sorted(seen) == sorted(f.path for f in files)
    assert len(set(seen)) == len(seen)
    assert abs(len(parts["train"]) / 5000 - 0.9) < 0.02
    assert abs(len(parts["test"]) / 5000 - 0.05) < 0.015


def test_split_fractions_are_checked() -> None:
    with pytest.raises(ValueError, match="summing to 1"):
        split_of("a.py", (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="fractions"):
        split_of("a.py", (0.9, 0.1))


def test_dedupe_keeps_the_first_path_of_each_content() -> None:
    files = [CodeFile("b.py", "same\n"), CodeFile("a.py", "same\n"), CodeFile("c.py", "other\n")]
    kept, dropped = dedupe(files)
    assert dropped == 1
    assert [f.path for f in kept] == ["a.py", "c.py"]


def test_collect_leaves_out_tests_and_non_utf8(tmp_path: Path) -> None:
    write(tmp_path, "mod.py", "x = 1\n")
    write(tmp_path, "pkg/sub.py", "y = 2\n")
    write(tmp_path, "test/test_mod.py", "assert True\n")
    write(tmp_path, "pkg/tests/t.py", "assert True\n")
    write(tmp_path, "site-packages/lib.py", "z = 3\n")
    write(tmp_path, "latin.py", b"s = '\xe9'\n")
    write(tmp_path, "notes.txt", "not python\n")
    files, non_utf8 = collect_files(tmp_path)
    assert [f.path for f in files] == ["mod.py", "pkg/sub.py"]
    assert non_utf8 == 1


def test_load_records_duplicates_and_a_content_manifest(tmp_path: Path) -> None:
    for i in range(12):
        write(tmp_path, f"m{i}.py", f"value = {i}\n")
    write(tmp_path, "z_copy.py", "value = 3\n")
    corpus = load_code_corpus(tmp_path)
    assert corpus.duplicates_dropped == 1
    all_paths = [f.path for s in SPLITS for f in corpus.files(s)]
    assert "z_copy.py" not in all_paths and "m3.py" in all_paths
    assert corpus.summary()["files"] == {s: len(corpus.files(s)) for s in SPLITS}
    assert corpus.summary()["source"] == tmp_path.name  # a name, not this machine's path
    before = corpus.manifest
    write(tmp_path, "m5.py", "value = 'changed'\n")
    assert load_code_corpus(tmp_path).manifest != before


def test_manifest_ignores_order_and_sees_content() -> None:
    a, b = CodeFile("a.py", "1\n"), CodeFile("b.py", "2\n")
    assert manifest_hash([a, b]) == manifest_hash([b, a])
    assert manifest_hash([a, b]) != manifest_hash([a, CodeFile("b.py", "3\n")])


def test_take_bytes_takes_whole_files_reproducibly() -> None:
    files = [CodeFile(f"f{i}.py", "x" * 100) for i in range(20)]
    picked = take_bytes(files, 350)
    assert len(picked) == 4  # whole files until >= 350 bytes
    assert picked == take_bytes(list(reversed(files)), 350)
    assert take_bytes(files, 0) == files


def test_empty_or_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match=r"no \.py files"):
        load_code_corpus(tmp_path)
    with pytest.raises(DataUnavailableError, match="not a folder"):
        load_code_corpus(tmp_path / "absent")


def test_a_few_stdlib_files_load_from_the_running_interpreter(tmp_path: Path) -> None:
    root = stdlib_root()
    for name in SMALL_STDLIB:
        if (root / name).is_file():
            shutil.copy(root / name, tmp_path / name)
    corpus = load_code_corpus(tmp_path, fractions=(0.5, 0.25, 0.25))
    n = sum(len(corpus.files(s)) for s in SPLITS)
    assert n >= 5
    assert corpus.python_version.count(".") == 2
    assert len(corpus.manifest) == 64
