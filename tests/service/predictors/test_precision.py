"""Predictors take the compute unit and the precision as features (features version 4): columns, training,
serving, and the refusal of a unit or precision the training data never held — in process and over HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from profilers.blocks import config_hash, get_family
from service.predictors.features import FEATURES_VERSION, Featurizer, UnseenConditionError
from service.predictors.inference import LatencyModel
from service.predictors.training import TrainingRows, fit_predictor
from tests.service.predictors.synthetic import (
    FAST_PARAMS,
    insert_rows,
    law_ms,
    sample_configs,
    wait_for_status,
)

GPU_CLOCKS = [315_000, 840_000]
#: The synthetic GPU at half precision: twice the MACs a cycle, and half the bytes to move.
FP16_SPEEDUP = 1.8

Headers = Callable[..., dict[str, str]]


def _gpu_ms(flops: float, khz: int, precision: str) -> float:
    return law_ms(flops, khz) / (FP16_SPEEDUP if precision == "fp16" else 1.0)


def mixed_rows(n_configs: int, seed: int = 0) -> TrainingRows:
    """Every config on the big cluster at fp32 and on the GPU at fp32 and fp16, at two clocks each."""
    family = get_family("sr_block")
    ids, configs, hashes, freqs, units, precisions, ms = [], [], [], [], [], [], []
    rng = np.random.default_rng(seed)
    for config in sample_configs(n_configs, seed):
        flops = family.costs(config).flops
        for unit, precision, clocks in (
            ("big", "fp32", [800_000, 2_400_000]),
            ("gpu", "fp32", GPU_CLOCKS),
            ("gpu", "fp16", GPU_CLOCKS),
        ):
            for khz in clocks:
                ids.append(len(ids) + 1)
                configs.append(config)
                hashes.append(config_hash("sr_block", config))
                freqs.append(khz)
                units.append(unit)
                precisions.append(precision)
                ms.append(_gpu_ms(flops, khz, precision) * (1.0 + rng.normal(0.0, 0.01)))
    n = len(ids)
    return TrainingRows("sr_block", ids, configs, hashes, freqs, [1] * n, units, ms, precisions)


def test_precision_columns_are_one_hot_and_bits() -> None:
    featurizer = Featurizer("sr_block", ["big", "gpu"], precisions=("fp16", "fp32"))
    assert featurizer.version == FEATURES_VERSION == 6
    assert featurizer.precisions == ("fp32", "fp16")  # in the fixed order, whatever order they came in
    names = featurizer.names
    assert names[-3:] == ["precision=fp32", "precision=fp16", "precision_bits"]
    rows = featurizer.config_rows(sample_configs(2))
    x = featurizer.matrix(
        np.repeat(rows, 2, axis=0),
        np.full(4, 500_000.0),
        1,
        np.array(["big", "gpu", "gpu", "gpu"]),
        broadcast=False,
        precision=np.array(["fp32", "fp32", "fp16", "fp16"]),
    )
    assert x[:, -3:].tolist() == [[1, 0, 32], [1, 0, 32], [0, 1, 16], [0, 1, 16]]
    assert x[:, names.index("cluster=gpu")].tolist() == [0, 1, 1, 1]
    broadcast = featurizer.matrix(rows, np.array([1.0, 2.0]), 1, "gpu", broadcast=True, precision="fp16")
    assert broadcast[:, -3:].tolist() == [[0, 1, 16]] * 4
    # The plain model sees the precision too.
    plain = [names[i] for i in featurizer.plain_columns()]
    assert plain[-5:] == ["cluster=big", "cluster=gpu", "precision=fp32", "precision=fp16", "precision_bits"]
    # The schema carries the precisions and rebuilds the very layout.
    schema = featurizer.to_schema()
    assert schema["precisions"] == ["fp32", "fp16"]
    assert Featurizer.from_schema(schema).names == names


def test_an_older_layout_has_no_precision_columns() -> None:
    old = Featurizer("sr_block", ["big"], version=3)
    assert "precisions" not in old.to_schema()
    assert not [n for n in old.names if n.startswith("precision")]
    assert Featurizer.from_schema(old.to_schema()).names == old.names
    # What an older predictor knows: fp32 only, so fp16 is refused rather than guessed.
    old.check_conditions("big", "fp32")
    with pytest.raises(UnseenConditionError) as refused:
        old.check_conditions("big", "fp16")
    assert refused.value.field == "precision"


def test_one_predictor_learns_units_and_precisions() -> None:
    rows = mixed_rows(40)
    trained = fit_predictor(rows, FAST_PARAMS)
    schema = trained.feature_schema
    assert schema["features_version"] == 6 and schema["precisions"] == ["fp32", "fp16"]
    assert schema["clusters"] == ["big", "gpu"]
    assert schema["default_precision"] == "fp32" and schema["default_cluster"] == "gpu"
    model = LatencyModel(schema, trained.model, trained.model_p10, trained.model_p90)
    configs = sample_configs(5)
    fp32 = model.predict(configs, GPU_CLOCKS, cluster="gpu", precision="fp32").latency_ms
    fp16 = model.predict(configs, GPU_CLOCKS, cluster="gpu", precision="fp16").latency_ms
    flops = [get_family("sr_block").costs(c).flops for c in configs]
    truth = np.array([_gpu_ms(f, k, "fp16") for f in flops for k in GPU_CLOCKS])
    assert (fp16 < fp32).all()
    assert np.median(np.abs(fp16 / truth - 1.0)) < 0.1
    # Each (unit, precision) group has prior rates of its own: the prior alone already lands near fp16.
    groups = schema["prior"]["groups"]
    assert "gpu/fp16" in groups and set(groups) <= {"big/fp32", "gpu/fp32", "gpu/fp16"}
    assert set(schema["prior"]["group_kernel_terms"]) == set(groups)
    x = model.featurizer.matrix(
        model.featurizer.config_rows(configs),
        np.asarray(GPU_CLOCKS, dtype=np.float64),
        1,
        "gpu",
        broadcast=True,
        precision="fp16",
    )
    assert np.median(np.abs(np.exp(model.margins(x).astype(np.float64)) / truth - 1.0)) < 0.1
    with pytest.raises(ValueError, match="not unit/precision groups"):
        LatencyModel(
            {**schema, "prior": {**schema["prior"], "groups": {"npu/int8": groups["gpu/fp16"]}}},
            trained.model,
            trained.model_p10,
            trained.model_p90,
        )
    assert (model.predict(configs, GPU_CLOCKS).latency_ms == fp32).all()  # the defaults: gpu, fp32
    for unit, precision, field in (("npu", "fp32", "unit"), ("gpu", "int8", "precision")):
        with pytest.raises(UnseenConditionError) as refused:
            model.predict(configs, GPU_CLOCKS, cluster=unit, precision=precision)
        assert refused.value.field == field and repr(unit if field == "unit" else precision) in str(
            refused.value
        )
    # Rows that differ only by precision hash differently; fp32-only data hashes as it always did.
    fp32_only = dataclasses.replace(rows, precisions=())
    assert fp32_only.data_hash() != rows.data_hash()
    relabelled = dataclasses.replace(rows, precisions=["fp32"] * len(rows))
    assert relabelled.data_hash() == fp32_only.data_hash()


def _train(client: TestClient, headers: dict[str, str], device_id: int, filters: dict[str, object]) -> int:
    created = client.post(
        "/v1/predictors",
        json={"family": "sr_block", "device": device_id, "params": FAST_PARAMS, "filters": filters},
        headers=headers,
    )
    assert created.status_code == 202, created.text
    done = wait_for_status(client, headers, created.json()["id"])
    assert done["status"] == "ready", done["error"]
    assert client.post(f"/v1/predictors/{done['id']}/activate", headers=headers).status_code == 200
    return int(done["id"])


def test_predict_names_unit_and_precision_over_http(
    client: TestClient, make_headers: Headers, db_session: Session, device_id: int
) -> None:
    insert_rows(db_session, device_id, mixed_rows(20))
    profile, predict = make_headers("profile", "read"), make_headers("predict")
    configs = sample_configs(3)

    def ask(**body: object) -> dict:
        request = {
            "device": device_id,
            "family": "sr_block",
            "configs": configs,
            "frequencies_khz": GPU_CLOCKS,
        }
        response = client.post("/v1/predict", json={**request, **body}, headers=predict)
        return {"status": response.status_code, "body": response.json()}

    # Only the GPU at fp16 (`cluster` read as the unit, as older clients send it).
    only = _train(client, profile, device_id, {"cluster": "gpu", "precision": "fp16"})
    stored = client.get(f"/v1/predictors/{only}", headers=profile).json()
    assert stored["filters"] == {"unit": "gpu", "precision": "fp16", "include_virtual": True}
    assert stored["row_count"] == 20 * 2 and stored["feature_schema"]["precisions"] == ["fp16"]
    assert ask()["status"] == 200  # the defaults: what it was trained on
    refused = ask(unit="gpu", precision="fp32")
    assert refused["status"] == 422 and refused["body"]["errors"][0]["loc"] == ["body", "precision"]
    assert "fp16" in refused["body"]["detail"]
    refused = ask(cluster="big", precision="fp16")
    assert refused["status"] == 422 and refused["body"]["errors"][0]["loc"] == ["body", "unit"]
    assert ask(precision="fp64")["status"] == 422

    # Every unit and precision in one predictor.
    _train(client, profile, device_id, {})
    fp32 = ask(unit="gpu", precision="fp32")
    fp16 = ask(unit="gpu", precision="fp16")
    assert fp32["status"] == fp16["status"] == 200
    faster = [
        h["latency_ms"] < s["latency_ms"]
        for h, s in zip(fp16["body"]["predictions"], fp32["body"]["predictions"], strict=True)
    ]
    assert all(faster)
    assert ask(cluster="gpu", precision="fp16")["body"] == fp16["body"]
    assert ask(unit="npu")["body"]["errors"][0]["loc"] == ["body", "unit"]
    assert ask(unit="gpu", precision="int8")["body"]["errors"][0]["loc"] == ["body", "precision"]
