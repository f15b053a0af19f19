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


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="threads must be an int >= 0"), torch_threads(bad):
        pass
