"""Study records on disk: written atomically with the umask's permissions, no temporary file left
on failure, and an unusable output folder refused before the study runs."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from fuzz_helpers import read_only_folder

from scratchformer.experiments import registry
from scratchformer.experiments.runner import check_writable, run_study, write_json_atomic


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_records_get_the_umask_permissions(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == mode
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "m.json", {"a": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_check_writable_refuses_files_and_read_only_folders(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="afile"):
        check_writable(tmp_path / "afile")
    with pytest.raises(OSError):
        check_writable(tmp_path / "afile" / "sub")
    check_writable(tmp_path / "new" / "deep")
    assert list((tmp_path / "new" / "deep").iterdir()) == []  # the probe file is gone
    with read_only_folder(tmp_path / "ro"), pytest.raises(PermissionError):
        check_writable(tmp_path / "ro")


def test_run_study_checks_the_folder_before_running(tmp_path: Path) -> None:
    ran = []
    study = dataclasses.replace(registry.get("positional.encoding"),
                                run=lambda cfg, out: ran.append(out) or {})
    with read_only_folder(tmp_path / "positional.encoding"), pytest.raises(PermissionError):
        run_study(study, study.config(), tmp_path)
    assert ran == []
    record = run_study(study, study.config(), tmp_path)
    assert ran and record["metrics"] == {}
