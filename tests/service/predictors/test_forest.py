"""The compiled walk of the served trees answers exactly as XGBoost does, and the service serves with it."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from sqlalchemy.orm import Session

from service.predictors.forest import Forest, UnsupportedForest
from service.predictors.models import Predictor
from service.predictors.registry import load_latency_model
from tests.service.predictors.synthetic import FREQUENCIES, sample_configs


def _data(rng: np.random.Generator, rows: int, columns: int = 12) -> np.ndarray:
    x = rng.normal(size=(rows, columns))
    x[rng.random(x.shape) < 0.08] = np.nan  # missing values take each node's default direction
    x[:, 3] = np.round(x[:, 3])  # ties with split conditions are common on integer-valued columns
    return x


def _booster(rng: np.random.Generator, depth: int, rounds: int, objective: str) -> xgb.Booster:
    x = _data(rng, 1500)
    y = np.nan_to_num(x[:, 0]) * 2 + np.nan_to_num(x[:, 3]) ** 2 + rng.normal(size=1500)
    params = {"max_depth": depth, "eta": 0.3, "nthread": 1, "objective": objective}
    if objective == "reg:quantileerror":
        params["quantile_alpha"] = 0.1
    return xgb.train(params, xgb.DMatrix(x, y), rounds)


@pytest.mark.parametrize(
    ("depth", "rounds", "objective"),
    [(1, 1, "reg:squarederror"), (4, 120, "reg:squarederror"), (8, 40, "reg:quantileerror")],
)
def test_the_walk_equals_xgboost_to_the_last_bit(depth: int, rounds: int, objective: str) -> None:
    rng = np.random.default_rng(depth)
    boosters = [_booster(rng, depth, rounds, objective) for _ in range(2)]
    forest = Forest.of(*boosters)
    assert forest.tree_counts == (rounds, rounds)
    x = _data(rng, 4000)
    x[:50] = np.nan  # rows with nothing known
    margin = rng.normal(size=4000).astype(np.float32)
    walked = forest.predict(x, margin)
    for booster, mine in zip(boosters, walked, strict=True):
        theirs = booster.inplace_predict(x, base_margin=margin)
        assert mine.dtype == np.float32
        assert np.array_equal(mine, theirs), np.abs(mine - theirs).max()


def test_a_booster_the_walk_cannot_reproduce_is_refused() -> None:
    rng = np.random.default_rng(1)
    x, y = _data(rng, 300), rng.normal(size=300)
    dart = xgb.train({"booster": "dart", "max_depth": 2, "nthread": 1}, xgb.DMatrix(x, y), 3)
    with pytest.raises(UnsupportedForest, match="dart"):
        Forest.of(dart)


def test_the_service_walks_the_trees_and_answers_as_xgboost_would(
    db_session: Session, trained: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_latency_model(db_session, trained.id)
    assert model.forest is not None and model.forest.trees > 0
    configs = sample_configs(300, seed=5)

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("XGBoost was called although the trees are walked")

    with monkeypatch.context() as patched:
        for booster in (model.booster, model.booster_p10, model.booster_p90):
            patched.setattr(booster, "inplace_predict", refuse)
        one_by_one = [model.predict([c], FREQUENCIES) for c in configs[:20]]
        walked = model.predict(configs, FREQUENCIES)
    monkeypatch.setattr(model, "forest", None)  # XGBoost, as for a booster the walk does not take
    through_xgboost = model.predict(configs, FREQUENCIES)
    for name in ("latency_ms", "p10_ms", "p90_ms", "extrapolated"):
        assert np.array_equal(getattr(walked, name), getattr(through_xgboost, name)), name
        joined = np.concatenate([getattr(p, name) for p in one_by_one])
        assert np.array_equal(joined, getattr(through_xgboost, name)[: 20 * len(FREQUENCIES)]), name
