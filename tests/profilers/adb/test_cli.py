"""``latfarm profile`` (profilers.adb.cli) against a virtual phone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from profilers.adb import cli
from profilers.virtual_phone import VirtualPhone


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_profile_prints_one_json_line_per_measurement(
    phone: VirtualPhone, adb_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = sorted(phone.profile.clusters, key=lambda c: c.frequencies_khz[-1])[-1].frequencies_khz
    configs = [
        '{"kernel": 3, "cin": 8, "cout": 8, "height": 16, "width": 16}',
        '{"kernel": 1, "cin": 8, "cout": 4, "height": 16, "width": 16}',
    ]
    args = _args(
        "--device", f"127.0.0.1:{phone.port}", "--family", "conv",
        "--config", configs[0], "--config", configs[1],
        "--frequency", str(big[0]), "--frequency", str(big[-1]),
        "--runs", "3", "--warmup", "0", "--passes", "2", "--key", str(adb_key), "--cooldown-celsius", "90",
    )  # fmt: skip
    assert cli.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    assert sorted((r["config"]["cout"], r["frequency_khz"]) for r in records) == sorted(
        (c, f) for c in (8, 4) for f in (big[0], big[-1])
    )
    assert all(r["pinned"] and r["runs"] == 3 and r["passes"] == 2 and r["cluster"] == "big" for r in records)


def test_profile_rejects_bad_config_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    bad = _args("--device", "127.0.0.1:1", "--family", "conv", "--config", '{"kernel": 2}')
    assert cli.run(bad) == 2
    assert "kernel" in capsys.readouterr().err
    not_json = _args("--device", "127.0.0.1:1", "--family", "conv", "--config", "{kernel")
    assert cli.run(not_json) == 2
    assert "not valid JSON" in capsys.readouterr().err
    more_passes_than_runs = _args(
        "--device", "127.0.0.1:1", "--family", "conv", "--runs", "2", "--passes", "3",
        "--config", '{"kernel": 3, "cin": 8, "cout": 8, "height": 16, "width": 16}',
    )  # fmt: skip
    assert cli.run(more_passes_than_runs) == 2
    assert "passes (3) must not exceed runs (2)" in capsys.readouterr().err


def test_profile_reports_an_unreachable_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(
        "--device", "127.0.0.1:1", "--family", "conv", "--key", str(tmp_path / "k"),
        "--config", '{"kernel": 3, "cin": 8, "cout": 8, "height": 16, "width": 16}',
    )  # fmt: skip
    assert cli.run(args) == 1
    assert "DeviceConnectionError" in capsys.readouterr().err
