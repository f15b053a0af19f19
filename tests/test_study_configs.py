"""Every study's quick and full profile keep computing the same thing.

``fixtures/study_configs.json`` holds ``dataclasses.asdict(study.config(profile))`` for every
registered study and profile. A refactor of the config classes may move fields into shared
bases or rename them (listed in ``ALIASES``), but the values a study runs with must not change.
Regenerate the fixture only on purpose, when a profile is meant to change.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from scratchformer.experiments import registry

FIXTURE = Path(__file__).parent / "fixtures" / "study_configs.json"
PINNED: dict[str, dict] = json.loads(FIXTURE.read_text())

# (study, old field name) -> new field name, for fields renamed since the fixture was made.
ALIASES: dict[tuple[str, str], str] = {
    ("sparse.quality", "dense_backend"): "attention_backend",
}
# Fields removed from a study's config because they never affected its results.
DROPPED: dict[str, set[str]] = {
    "shakespeare.embedding_pca": {"bpe_vocab"},
    "gpt.hf_baseline": {"seeds", "track_every", "n_align", "n_examples"},
}
# Settings that were hard-coded in a study and are now fields, with the value it used.
ADDED: dict[str, dict[str, object]] = {
    "moe.shakespeare": {"beta2": 0.99, "device": "cpu"},
    "sparse.quality": {"device": "cpu"},
    "nli.snli": {"mlm_epochs": 2.0, "mlm_rate": 0.15, "mlm_lr": 0.002, "ship": True,
                 "curve_variants": []},
}


def _normalise(value: object) -> object:
    """JSON's view of a config value (tuples are lists, other objects their str)."""
    return json.loads(json.dumps(value, default=str))


def test_fixture_covers_every_study_and_profile():
    keys = {f"{name}:{p}" for name in registry.studies() for p in registry.PROFILES}
    assert keys == set(PINNED)


@pytest.mark.parametrize("key", sorted(PINNED))
def test_profile_config_unchanged(key):
    name, profile = key.split(":")
    cfg = _normalise(dataclasses.asdict(registry.get(name).config(profile)))
    expected = {}
    for field, value in PINNED[key].items():
        if field in DROPPED.get(name, set()):
            continue
        expected[ALIASES.get((name, field), field)] = value
    expected.update(ADDED.get(name, {}))
    assert cfg == expected
