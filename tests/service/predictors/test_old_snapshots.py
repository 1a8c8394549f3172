"""Snapshots of features versions 1 and 2 still load and answer bit for bit what their build answered.

The archives and their answers in tests/fixtures/predictor_snapshots were written by the last build of
features version 2 (`make_fixtures.py` says how); a version-1 schema is the generic one relabelled, as
predictors trained before kernel columns stored it.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from service.predictors.inference import PRIOR_MODEL
from service.predictors.snapshot import Snapshot, build_snapshot, read_snapshot

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "predictor_snapshots"
CASES = ("sr_block_v2_kernels", "sr_block_v2_generic", "conv_v2_kernels")


def _expected(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _assert_answers(snapshot: Snapshot, expected: dict) -> None:
    got = snapshot.predict(snapshot.family, expected["configs"], frequencies_khz=expected["frequencies_khz"])
    for field in ("latency_ms", "p10_ms", "p90_ms", "extrapolated"):
        np.testing.assert_array_equal(getattr(got, field), np.asarray(expected[field]), err_msg=field)


@pytest.mark.parametrize("name", CASES)
def test_a_version_2_snapshot_predicts_bit_for_bit_as_its_build_did(name: str) -> None:
    snapshot = Snapshot.load(FIXTURES / f"{name}.tar")
    assert snapshot.manifest["features_version"] == 2
    assert snapshot.model.featurizer.version == 2 and not snapshot.model.featurizer.accelerator
    assert snapshot.model.kind == PRIOR_MODEL  # no "model" entry: the prior trees serve, as before
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
    """Each fixture archive holds a version-2 schema without the accelerator columns."""
    for name in CASES:
        with tarfile.open(fileobj=io.BytesIO((FIXTURES / f"{name}.tar").read_bytes())) as archive:
            member = archive.extractfile("feature_schema.json")
            assert member is not None
            schema = json.loads(member.read())
        assert schema["features_version"] == 2
        assert not any(n.startswith("gpu:") for n in schema["names"])
