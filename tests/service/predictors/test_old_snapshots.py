"""Snapshots of features versions 1 to 5 still load and answer bit for bit what their build answered
(the models' float32 log latencies; the milliseconds to the last bit of exp, see `_assert_answers`).

The archives and their answers in tests/fixtures/predictor_snapshots were written by the last build of
features version 2 (`*_v2_*`), of version 3 (`*_v3_*`), of version 4 (`*_v4_*`) and of version 5
(`*_v5_*`; `make_fixtures.py` says how); a version-1 schema is the generic one relabelled, as predictors
trained before kernel columns stored it. None before version 4 has precision columns: they knew fp32 only,
and refuse another precision by name. None before version 5 has the accelerator quantisation columns
(`ACCELERATOR_V5_COLUMNS`) or their prior terms; none before version 6 the CPU columns (`CPU_COLUMNS`).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from service.predictors.features import ACCELERATOR_V5_COLUMNS, CPU_COLUMNS, UnseenConditionError
from service.predictors.inference import PRIOR_MODEL
from service.predictors.snapshot import Snapshot, build_snapshot, read_snapshot

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "predictor_snapshots"
CASES = ("sr_block_v2_kernels", "sr_block_v2_generic", "conv_v2_kernels")
V3_CASES = ("sr_block_v3_kernels", "sr_block_v3_generic", "conv_v3_kernels")
V4_CASES = ("sr_block_v4_kernels", "sr_block_v4_generic", "conv_v4_kernels")
V5_CASES = ("sr_block_v5_kernels", "sr_block_v5_generic", "conv_v5_kernels")


def _expected(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _assert_answers(snapshot: Snapshot, expected: dict) -> None:
    """The models' answers bit for bit: XGBoost's log latencies are float32, and each recorded millisecond
    value's log rounds to the very float32 ours does. The milliseconds themselves are exp of those, which
    may differ in the last bit of the float64 from one CPU to another (numpy's exp is its own AVX-512 code
    where the CPU has it, the C library's elsewhere; the fixtures were written on an AVX-512 machine, and on
    an AVX2 one 3 of 36 values come out one unit in the last place apart — both within 0.6 of it of the
    exact exp): hence at most one unit in the last place there."""
    got = snapshot.predict(snapshot.family, expected["configs"], frequencies_khz=expected["frequencies_khz"])
    for field in ("latency_ms", "p10_ms", "p90_ms"):
        ours, recorded = getattr(got, field), np.asarray(expected[field])
        np.testing.assert_array_equal(
            np.log(ours).astype(np.float32), np.log(recorded).astype(np.float32), err_msg=field
        )
        np.testing.assert_array_max_ulp(ours, recorded, maxulp=1)
    np.testing.assert_array_equal(got.extrapolated, np.asarray(expected["extrapolated"]))


@pytest.mark.parametrize("name", CASES)
def test_a_version_2_snapshot_predicts_bit_for_bit_as_its_build_did(name: str) -> None:
    snapshot = Snapshot.load(FIXTURES / f"{name}.tar")
    assert snapshot.manifest["features_version"] == 2
    assert snapshot.model.featurizer.version == 2 and not snapshot.model.featurizer.accelerator
    assert snapshot.model.kind == PRIOR_MODEL  # no "model" entry: the prior trees serve, as before
    _assert_answers(snapshot, _expected(name))


@pytest.mark.parametrize("name", V3_CASES)
def test_a_version_3_snapshot_predicts_bit_for_bit_as_its_build_did(name: str) -> None:
    snapshot = Snapshot.load(FIXTURES / f"{name}.tar")
    assert snapshot.manifest["features_version"] == 3
    featurizer = snapshot.model.featurizer
    assert featurizer.version == 3 and featurizer.accelerator
    assert "precisions" not in snapshot.model.schema
    assert not [n for n in featurizer.names if n.startswith("precision")]
    expected = _expected(name)
    _assert_answers(snapshot, expected)
    # fp32 named explicitly is what it was trained on: the same answer; fp16 was never measured.
    unit = snapshot.model.default_cluster
    frequencies = expected["frequencies_khz"]
    got = snapshot.predict(
        snapshot.family, expected["configs"], frequencies_khz=frequencies, precision="fp32"
    )
    default = snapshot.predict(snapshot.family, expected["configs"], frequencies_khz=frequencies)
    np.testing.assert_array_equal(got.latency_ms, default.latency_ms)
    with pytest.raises(UnseenConditionError, match="fp16"):
        snapshot.predict(snapshot.family, expected["configs"], frequency_khz=600_000, precision="fp16")
    with pytest.raises(UnseenConditionError, match="npu"):
        snapshot.predict(snapshot.family, expected["configs"], frequency_khz=600_000, cluster="npu")
    assert unit in featurizer.clusters


@pytest.mark.parametrize("name", V4_CASES)
def test_a_version_4_snapshot_predicts_bit_for_bit_as_its_build_did(name: str) -> None:
    snapshot = Snapshot.load(FIXTURES / f"{name}.tar")
    assert snapshot.manifest["features_version"] == 4
    featurizer = snapshot.model.featurizer
    assert featurizer.version == 4 and featurizer.accelerator
    assert not [n for n in featurizer.names if n in ACCELERATOR_V5_COLUMNS]
    assert not [t for t in snapshot.model.schema["prior"]["terms"] if t.startswith("gpu:strided_macs")]
    assert snapshot.model.schema["precisions"] == ["fp32"]
    _assert_answers(snapshot, _expected(name))


@pytest.mark.parametrize("name", V5_CASES)
def test_a_version_5_snapshot_predicts_bit_for_bit_as_its_build_did(name: str) -> None:
    snapshot = Snapshot.load(FIXTURES / f"{name}.tar")
    assert snapshot.manifest["features_version"] == 5
    featurizer = snapshot.model.featurizer
    assert featurizer.version == 5 and featurizer.accelerator
    assert set(ACCELERATOR_V5_COLUMNS) <= set(featurizer.names)
    assert not [n for n in featurizer.names if n in CPU_COLUMNS]
    assert not [t for t in snapshot.model.schema["prior"]["terms"] if t.startswith("cpu:")]
    _assert_answers(snapshot, _expected(name))


def test_a_version_1_schema_predicts_bit_for_bit_as_version_2_did() -> None:
    contents = read_snapshot((FIXTURES / "sr_block_v2_generic.tar").read_bytes())
    schema = {k: v for k, v in contents.feature_schema.items() if k != "kernels"} | {"features_version": 1}
    archive = build_snapshot(
        manifest={k: v for k, v in contents.manifest.items() if k not in ("members", "features_version")},
        model=contents.model,
        model_p10=contents.model_p10,
        model_p90=contents.model_p90,
        feature_schema=schema,
        metrics=contents.metrics,
        holdout=contents.holdout,
    )
    snapshot = Snapshot.from_bytes(archive)
    assert snapshot.manifest["features_version"] == 1
    _assert_answers(snapshot, _expected("sr_block_v2_generic"))


def test_the_fixtures_are_what_their_readme_says() -> None:
    """Each version-2 fixture archive holds a version-2 schema without the accelerator columns."""
    for name in CASES:
        with tarfile.open(fileobj=io.BytesIO((FIXTURES / f"{name}.tar").read_bytes())) as archive:
            member = archive.extractfile("feature_schema.json")
            assert member is not None
            schema = json.loads(member.read())
        assert schema["features_version"] == 2
        assert not any(n.startswith("gpu:") for n in schema["names"])
