"""The batch featuriser equals the one-config featuriser to the last bit, column by column, for every family;
`config_rows` reports a bad config exactly as before whichever path computed its neighbours."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from profilers.blocks import get_family
from profilers.blocks.batch import ConfigBatch, config_struct
from service.predictors import batch_features, features
from service.predictors.features import FeatureError, Featurizer, JsonConfigs, discover_kernels
from tests.profilers.blocks.test_blocks_batch import SPACES, random_configs


@pytest.fixture(autouse=True)
def empty_feature_caches() -> Iterator[None]:
    """Each test starts and ends with no cached rows (a cached row would hide which path made it)."""
    features._CACHES.clear()
    features._JSON_CACHES.clear()
    yield
    features._CACHES.clear()
    features._JSON_CACHES.clear()


def _scalar_rows(featurizer: Featurizer, configs: list[dict[str, Any]]) -> np.ndarray:
    fam = get_family(featurizer.family)
    return np.array([featurizer._config_row(fam.parse(c)) for c in configs])


def _batch_rows(featurizer: Featurizer, configs: list[dict[str, Any]]) -> np.ndarray:
    struct = config_struct(featurizer.family)
    batch = ConfigBatch.from_structs(featurizer.family, [json_struct(c, struct) for c in configs])
    assert not batch.suspect().any()
    return batch_features.batch_config_rows(featurizer, batch)


def json_struct(config: dict[str, Any], struct: Any) -> Any:
    """The struct a request body's text of `config` decodes into."""
    import msgspec

    return msgspec.json.decode(json.dumps(config).encode(), type=struct)


def _assert_bit_equal(featurizer: Featurizer, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape == (want.shape[0], len(featurizer.config_names))
    for j, name in enumerate(featurizer.config_names):
        assert got[:, j].tobytes() == want[:, j].tobytes(), f"column {name} differs"


@pytest.mark.parametrize("family", sorted(SPACES))
def test_every_column_equals_the_one_config_path(family: str) -> None:
    """3,000 random configs, every features version; kernels listed from 20 configs, so unseen ones occur."""
    configs = random_configs(family, 3000, seed=2024)
    kernels = discover_kernels(family, configs[:20])
    layouts = (
        Featurizer(family, ["big"]),
        Featurizer(family, ["big", "little"], kernels),
        Featurizer(family, ["big"], kernels, version=5),  # stored schemas of earlier versions keep theirs
        Featurizer(family, ["big"], kernels, version=4),
        Featurizer(family, ["big"], kernels, version=3),
        Featurizer(family, ["big"], kernels, version=2),
        Featurizer(family, ["big"], version=1),
    )
    for featurizer in layouts:
        _assert_bit_equal(featurizer, _batch_rows(featurizer, configs), _scalar_rows(featurizer, configs))
    with_kernels = Featurizer(family, ["big"], kernels)
    unseen = _batch_rows(with_kernels, configs)[
        :, with_kernels.config_names.index(features.UNSEEN_KERNEL_COLUMN)
    ]
    assert (unseen > 0).any() and (unseen == 0).any()


@pytest.mark.parametrize("family", sorted(SPACES))
def test_config_rows_takes_the_batch_path_and_matches(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = random_configs(family, 200, seed=9)
    kernels = discover_kernels(family, configs[:50])
    featurizer = Featurizer(family, ["big"], kernels)
    calls: list[int] = []
    real = batch_features.batch_config_rows

    def spy(f: Featurizer, batch: ConfigBatch) -> np.ndarray:
        calls.append(batch.n)
        return real(f, batch)

    monkeypatch.setattr(batch_features, "batch_config_rows", spy)
    texts = [json.dumps(c).encode() for c in configs]
    for batch in (configs, JsonConfigs.checked(family, texts)):
        features._CACHES.clear()
        features._JSON_CACHES.clear()
        _assert_bit_equal(featurizer, featurizer.config_rows(batch), _scalar_rows(featurizer, configs))
    assert calls == [200, 200]


def test_lax_and_bad_configs_take_the_one_config_path_with_the_same_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configs = random_configs("sr_block", 100, seed=11)
    lax = dict(
        configs[5], widths=configs[5]["widths"][:1], residual="false"
    )  # pydantic: False; struct: refused
    configs[5] = lax
    featurizer = Featurizer("sr_block", ["big"])
    rows = featurizer.config_rows(configs)
    assert rows[5].tobytes() == _scalar_rows(featurizer, [dict(lax, residual=False)])[0].tobytes()
    cases = (
        (20, {"height": 2**70}, "height"),
        (40, {"kernel": 4}, "kernel"),
        (70, {"widths": [8, 9999]}, "widths"),
    )
    for index, bad, field in cases:
        broken = list(configs)
        broken[index] = {**configs[index], **bad}
        broken[90] = {**configs[90], "scale": 7}  # a later error is not the one reported
        errors = []
        for batch_min in (batch_features.BATCH_MIN, 10**9):  # batch path, then the one-config path only
            monkeypatch.setattr(batch_features, "BATCH_MIN", batch_min)
            features._CACHES.clear()
            with pytest.raises(FeatureError) as info:
                featurizer.config_rows(broken)
            errors.append((info.value.index, info.value.field, info.value.msg))
        assert errors[0] == errors[1]
        assert errors[0][:2] == (index, field)


def test_a_column_without_a_batch_twin_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    featurizer = Featurizer("mbconv", ["big"])
    featurizer.config_names = [*featurizer.config_names, "new_column"]
    with pytest.raises(RuntimeError, match="batch twin"):
        _batch_rows(featurizer, random_configs("mbconv", 20, seed=1))


def test_the_cache_is_bounded_and_counts_its_hits() -> None:
    featurizer = Featurizer("conv", ["big"])
    configs = random_configs("conv", 300, seed=8)
    unique = list({json.dumps(c, sort_keys=True): c for c in configs}.values())
    features.configure_cache(50)
    try:
        featurizer.config_rows(unique[:40])
        featurizer.config_rows(unique[:40])
        (stats,) = [s for s in features.cache_stats() if s.layout == featurizer._cache_name]
        assert (stats.hits, stats.misses, stats.entries, stats.limit) == (40, 40, 40, 50)
        featurizer.config_rows(unique[40:100])
        (stats,) = [s for s in features.cache_stats() if s.layout == featurizer._cache_name]
        assert stats.entries == 50
        # The oldest rows went first: the newest 50 are all hits now.
        featurizer.config_rows(unique[50:100])
        (stats,) = [s for s in features.cache_stats() if s.layout == featurizer._cache_name]
        assert stats.hits == 90
    finally:
        features.configure_cache(features.DEFAULT_CACHE_ENTRIES)
