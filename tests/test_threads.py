"""`torch_threads`: sets torch's thread count inside a block and always restores it."""

from __future__ import annotations

import pytest
import torch

from scratchformer.experiments.kit.threads import torch_threads


def test_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), torch_threads(target):
        assert torch.get_num_threads() == target
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_zero_leaves_the_count_alone():
    before = torch.get_num_threads()
    with torch_threads(0):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize(("bad", "error", "match"), [
    (-1, ValueError, r"threads \(0 = torch's default\) must be >= 0, got -1"),
    (1.5, TypeError, "threads .* must be an int, got float"),
    (True, TypeError, "threads .* must be an int, got bool"),
    ("2", TypeError, "threads .* must be an int, got str"),
])
def test_rejects_bad_counts(bad, error, match):
    with pytest.raises(error, match=match), torch_threads(bad):
        pass
