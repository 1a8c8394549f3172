"""The featuriser's per-config cache: keys tell configs apart, and every key kind gives the same row."""

from __future__ import annotations

import numpy as np

from profilers.blocks import get_family
from service.predictors.features import Featurizer, _cache_keys
from tests.service.predictors.synthetic import sample_configs


def _uncached_row(featurizer: Featurizer, config: dict) -> np.ndarray:
    """The row computed from scratch, bypassing the cache."""
    return featurizer._config_row(get_family("sr_block").parse(config))


def test_cached_rows_equal_fresh_rows_for_dicts_models_and_reordered_keys() -> None:
    featurizer = Featurizer("sr_block", ["big"])
    configs = sample_configs(6, seed=41)
    expected = np.array([_uncached_row(featurizer, c) for c in configs])
    models = [get_family("sr_block").parse(c) for c in configs]  # not marshal-able: repr keys
    reordered = [dict(reversed(list(c.items()))) for c in configs]  # another key, the same row
    mixed = [configs[0], models[1], reordered[2], configs[3], models[4], reordered[5]]
    for batch in (configs, configs, models, reordered, mixed):
        assert np.array_equal(featurizer.config_rows(batch), expected)


def test_cache_keys_tell_configs_apart() -> None:
    base = sample_configs(1, seed=42)[0]
    variants = [
        base,
        {**base, "widths": [*base["widths"][:-1], base["widths"][-1] + 1]},
        {**base, "widths": [*base["widths"], base["widths"][0]]},
        {**base, "height": base["height"] + 1},
        {**base, "activation": "prelu" if base["activation"] == "relu" else "relu"},
        {**base, "height": float(base["height"])},  # 360 and 360.0 are different inputs
    ]
    keys = _cache_keys(variants)
    assert len(set(keys)) == len(variants)
    assert _cache_keys([dict(base)]) == keys[:1]  # an equal dict gets the same key
    featurizer = Featurizer("sr_block", ["big"])
    rows = featurizer.config_rows(variants[:5])
    assert len({row.tobytes() for row in rows}) == 5
