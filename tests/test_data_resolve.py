"""Data-set resolution: mirror beats cache beats download; downloads are checked and atomic.

The network is never touched: downloads come from a loopback HTTP server (``conftest.py``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchformer.data import (
    CATALOGUE,
    ChecksumError,
    DataError,
    DataFile,
    Dataset,
    DataUnavailableError,
    UnknownDatasetError,
    UnverifiedDownloadWarning,
    download,
    resolve,
    resolve_file,
    sha256_file,
)

BODY = b"To be, or not to be, that is the question.\n" * 400  # 17.6 kB: several read chunks
BODY_SHA = hashlib.sha256(BODY).hexdigest()


def demo_entry(url: str | None, sha256: str | None = BODY_SHA, **kw) -> DataFile:
    """A catalogue entry ``demo/hello.txt`` for the test body."""
    return DataFile("demo", "hello.txt", sha256=sha256, url=url, **kw)


def put(root: Path, body: bytes = BODY) -> Path:
    """Write ``body`` at ``root/demo/hello.txt`` and return the path."""
    path = root / "demo" / "hello.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def test_mirror_beats_cache_and_download(data_env, http_server, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    in_mirror = put(mirror)
    put(data_env)
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(mirror))
    entry = demo_entry(http_server.serve("/hello.txt", BODY))
    assert resolve_file(entry) == in_mirror
    assert http_server.hits == []


def test_cache_beats_download(data_env, http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(tmp_path / "empty-mirror"))
    (tmp_path / "empty-mirror").mkdir()
    in_cache = put(data_env)
    entry = demo_entry(http_server.serve("/hello.txt", BODY))
    assert resolve_file(entry) == in_cache
    assert http_server.hits == []


def test_download_fills_the_cache_once(data_env, http_server):
    entry = demo_entry(http_server.serve("/hello.txt", BODY), size=len(BODY))
    path = resolve_file(entry, progress=False)
    assert path == data_env / "demo" / "hello.txt"
    assert path.read_bytes() == BODY
    assert sorted(p.name for p in path.parent.iterdir()) == ["hello.txt"]  # no temp file left
    assert resolve_file(entry, progress=False) == path
    assert http_server.hits == ["/hello.txt"]


@pytest.mark.parametrize("length", ["exact", "none"])
def test_download_with_progress_bar(tmp_path, http_server, length):
    url = http_server.serve("/hello.txt", BODY, length=length)
    dest = tmp_path / "sub" / "hello.txt"
    got = download(url, dest, sha256=BODY_SHA, progress=True, chunk_size=1000)
    assert got == BODY_SHA
    assert dest.read_bytes() == BODY


def test_sha256_mismatch_raises_and_leaves_no_partial_file(data_env, http_server):
    wrong = "0" * 64
    entry = demo_entry(http_server.serve("/hello.txt", BODY), sha256=wrong)
    with pytest.raises(ChecksumError) as err:
        resolve_file(entry, progress=True)
    message = str(err.value)
    assert wrong in message and BODY_SHA in message and entry.url in message
    assert list((data_env / "demo").iterdir()) == []


def test_truncated_download_raises_and_leaves_no_partial_file(data_env, http_server):
    entry = demo_entry(http_server.serve("/hello.txt", BODY, length="too-long"))
    with pytest.raises(DataUnavailableError, match=f"received {len(BODY):,} of"):
        resolve_file(entry, progress=False)
    assert list((data_env / "demo").iterdir()) == []


def test_http_error_names_the_url_and_status(data_env, http_server):
    entry = demo_entry(http_server.url("/missing.txt"))
    with pytest.raises(DataUnavailableError, match="HTTP 404") as err:
        resolve_file(entry, progress=False)
    assert entry.url in str(err.value)
    assert "SCRATCHFORMER_DATA is unset" in str(err.value)  # says where it looked first
    assert list((data_env / "demo").iterdir()) == []


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_offline_env_refuses_download(data_env, http_server, monkeypatch, value):
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", value)
    entry = demo_entry(http_server.serve("/hello.txt", BODY))
    with pytest.raises(DataUnavailableError) as err:
        resolve_file(entry)
    message = str(err.value)
    for needed in ("demo/hello.txt", "SCRATCHFORMER_OFFLINE", "SCRATCHFORMER_DATA", entry.url):
        assert needed in message
    assert str(data_env / "demo" / "hello.txt") in message
    assert http_server.hits == []


def test_offline_still_uses_the_cache(data_env, http_server, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "1")
    in_cache = put(data_env)
    assert resolve_file(demo_entry(http_server.serve("/hello.txt", BODY))) == in_cache


def test_offline_argument_overrides_the_environment(data_env, http_server, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "1")
    entry = demo_entry(http_server.serve("/hello.txt", BODY))
    assert resolve_file(entry, offline=False, progress=False).read_bytes() == BODY
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "0")
    with pytest.raises(DataUnavailableError, match="offline=True"):
        resolve_file(DataFile("demo", "other.txt", None, url=entry.url), offline=True)


def test_offline_env_with_a_bad_value_raises(data_env, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "maybe")
    with pytest.raises(ValueError, match=r"SCRATCHFORMER_OFFLINE.*'maybe'"):
        resolve_file(demo_entry("http://127.0.0.1:9/hello.txt"))


def test_unknown_dataset_or_file_name_raises_clearly(data_env):
    with pytest.raises(UnknownDatasetError, match="unknown data set 'no_such_set'") as err:
        resolve("no_such_set", "input.txt")
    assert "tinyshakespeare" in str(err.value)  # lists the known ones
    assert isinstance(err.value, ValueError) and isinstance(err.value, DataError)
    with pytest.raises(UnknownDatasetError, match=r"no file 'nope\.txt'.*input\.txt"):
        resolve("tinyshakespeare", "nope.txt")


def test_bad_file_in_the_mirror_raises(data_env, http_server, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    put(mirror, BODY[:-1] + b"!")
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(mirror))
    entry = demo_entry(http_server.serve("/hello.txt", BODY))
    with pytest.raises(ChecksumError, match="read-only mirror") as err:
        resolve_file(entry)
    assert BODY_SHA in str(err.value)
    assert http_server.hits == []


def test_wrong_size_is_caught_before_hashing(data_env, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    put(mirror)
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(mirror))
    with pytest.raises(ChecksumError, match=f"size {len(BODY):,} bytes, expected 5"):
        resolve_file(demo_entry(None, size=5))


def test_mirror_variable_naming_a_missing_folder_raises(data_env, tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataUnavailableError, match=r"SCRATCHFORMER_DATA=.*nowhere.*not a folder"):
        resolve_file(demo_entry(None))


def test_corrupt_cache_file_is_downloaded_again(data_env, http_server):
    put(data_env, b"garbage")
    entry = demo_entry(http_server.serve("/hello.txt", BODY))
    with pytest.warns(UserWarning, match="deleting it and downloading it again"):
        path = resolve_file(entry, progress=False)
    assert path.read_bytes() == BODY
    assert http_server.hits == ["/hello.txt"]


def test_download_without_published_digest_is_recorded_then_checked(data_env, http_server):
    entry = demo_entry(http_server.serve("/hello.txt", BODY), sha256=None)
    with pytest.warns(UnverifiedDownloadWarning, match=BODY_SHA):
        path = resolve_file(entry, progress=False)
    record = path.with_name("hello.txt.sha256")
    assert record.read_text().strip() == BODY_SHA
    assert resolve_file(entry) == path and len(http_server.hits) == 1  # record matches
    path.write_bytes(b"tampered")
    with pytest.warns(UserWarning) as caught:
        resolve_file(entry, progress=False)
    assert "not the expected file" in str(caught[0].message)
    assert caught[1].category is UnverifiedDownloadWarning
    assert path.read_bytes() == BODY and len(http_server.hits) == 2


def test_file_without_download_location_says_what_to_do(data_env):
    entry = demo_entry(None, note="only in the archive demo.zip")
    with pytest.raises(DataUnavailableError) as err:
        resolve_file(entry)
    message = str(err.value)
    assert "only in the archive demo.zip" in message
    assert "SCRATCHFORMER_DATA is unset" in message
    assert str(data_env / "demo" / "hello.txt") in message


def test_resolve_by_name_goes_through_the_catalogue(data_env, http_server, monkeypatch):
    entry = demo_entry(http_server.serve("/hello.txt", BODY))
    monkeypatch.setitem(CATALOGUE, "demo", Dataset("demo", "test", "none", "-", (entry,)))
    assert resolve("demo", "hello.txt", progress=False).read_bytes() == BODY


def test_catalogue_entries_are_well_formed():
    assert CATALOGUE["tinyshakespeare"].file("input.txt").url == (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    )
    for name, dataset in CATALOGUE.items():
        assert name == dataset.name and dataset.files and dataset.license
        for f in dataset.files:
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
            assert f.url is not None or f.note, f"{f.key}: no URL and no note saying why"
            assert f.sha256 is not None or f.note, f"{f.key}: no digest and no note saying why"


def test_catalogue_digests_match_the_mirror(shared_data, data_env, monkeypatch):
    monkeypatch.setenv("SCRATCHFORMER_DATA", str(shared_data))
    checked = 0
    for dataset in CATALOGUE.values():
        for f in dataset.files:
            if f.sha256 is not None:
                path = resolve(dataset.name, f.name, offline=True)
                assert path == shared_data / f.dataset / f.name
                checked += 1
    assert checked == 9


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="url must be an http"):
        download("file:///etc/hostname", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="plain file or folder name"):
        DataFile("demo", "../escape.txt", None)
    with pytest.raises(ValueError, match="64 lower-case hex"):
        DataFile("demo", "hello.txt", "ABC")
    with pytest.raises(TypeError, match="entry must be a DataFile"):
        resolve_file("demo/hello.txt")
    with pytest.raises(TypeError, match="offline must be a bool"):
        resolve_file(demo_entry(None), offline="yes")
    with pytest.raises(TypeError, match="dataset must be a str"):
        resolve(3, "input.txt")


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=3000), chunk_size=st.integers(1, 700))
def test_sha256_file_is_the_digest_of_the_bytes(tmp_path_factory, data, chunk_size):
    path = tmp_path_factory.mktemp("sha") / "blob"
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=chunk_size) == hashlib.sha256(data).hexdigest()


def test_a_bad_offline_setting_is_a_data_error_and_a_value_error(data_env, monkeypatch):
    from scratchformer.data.resolve import SettingError, is_offline

    monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "maybe")
    with pytest.raises(SettingError) as err:
        is_offline()
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("how", ["environment", "argument", "no-url"])
def test_offline_bad_cache_file_warning_says_it_is_not_downloaded(data_env, http_server,
                                                                   monkeypatch, how):
    put(data_env, b"garbage")
    url = None if how == "no-url" else http_server.serve("/hello.txt", BODY)
    entry = demo_entry(url)
    if how == "environment":
        monkeypatch.setenv("SCRATCHFORMER_OFFLINE", "1")
    with pytest.warns(UserWarning) as caught, pytest.raises(DataUnavailableError) as err:
        resolve_file(entry, offline=True if how == "argument" else None, progress=False)
    message = str(caught[0].message)
    assert "downloading it again" not in message and "deleting it" in message
    assert ("no download location" in message) if how == "no-url" else (
        "not downloaded again" in message)
    assert "was bad and has been deleted" in str(err.value)
    assert http_server.hits == []
