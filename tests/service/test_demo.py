"""`latfarm demo` end to end at reduced size, in a subprocess: the summary, the database it leaves, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.demo import campaign_configs

DEMO = [str(Path(sys.executable).parent / "latfarm"), "demo"]
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # The demo names its own database; a developer's LATFARM_* must not leak into it.
    return {k: v for k, v in env.items() if not k.startswith("LATFARM_")}


def _listening(serial: str) -> bool:
    host, port = serial.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_campaign_configs_are_distinct_seeded_and_valid() -> None:
    from profilers.blocks import config_hash, get_family

    configs = campaign_configs(40, seed=1)
    assert configs == campaign_configs(40, seed=1)
    assert configs != campaign_configs(40, seed=2)
    assert len({config_hash("sr_block", c) for c in configs}) == 40
    for config in configs:
        parsed = get_family("sr_block").parse(config)
        assert (parsed.scale, parsed.height, parsed.width) == (4, 54, 96)


@pytest.mark.slow
def test_demo_runs_the_whole_loop_and_summarises_it(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    done = subprocess.run(
        [*DEMO, "--configs", "20", "--state-dir", str(state), "--exit-after-summary"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=tmp_path,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "these are VIRTUAL phones" in out
    assert re.search(r"\[\d+\] virtual-flagship .* latfarm Virtual Flagship", out)
    assert re.search(r"\[\d+\] virtual-midrange .* latfarm Virtual Midrange", out)
    # 20 configs × min-mid-max on each phone, each frequency from the phone's own table.
    assert out.count("; 60 measurements") == 2
    assert "Demo sizes: 20 sr_block configs per phone, ×4 from 96×54 to 384×216" in out
    holdout = re.findall(r"predictor (\d+): MAPE ([\d.]+)%.*Spearman ([-\d.]+), (\d+) holdout rows", out)
    assert len(holdout) == 2 and all(int(rows) > 0 for *_, rows in holdout)
    verified = re.findall(r"widths=\[[\d, ]+\]\s+\d+\s+([\d.]+)ms\s+([\d.]+)ms\s+([-+][\d.]+)%", out)
    assert len(verified) >= 2, out  # predicted and measured, side by side, for winners on both phones
    assert out.count("DVFS-aware, best block per frequency:") == 2
    dashboard = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/dashboard)", out)
    assert dashboard is not None

    # The database it leaves: migrated, complete, every task settled, two active predictors.
    db = sqlite3.connect(state / "latfarm.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM task WHERE status NOT IN ('done', 'reused')").fetchone() == (
            0,
        )
        assert db.execute("SELECT count(*) FROM measurement WHERE job_id = 1").fetchone() == (120,)
        assert db.execute("SELECT count(*) FROM predictor WHERE active").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM device WHERE is_virtual").fetchone() == (2,)
    finally:
        db.close()
    # Nothing it started is left running.
    serials = re.findall(r"virtual phones on (\S+), (\S+)", out)[0]
    assert not any(_listening(s) for s in serials)


@pytest.mark.slow
def test_ctrl_c_stops_everything_and_leaves_no_half_written_task(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*DEMO, "--configs", "60", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=tmp_path,
        )
    try:
        # Interrupt in the middle of the campaign: once some measurements are committed.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if "campaign:" in log.read_text() and _count(state, "SELECT count(*) FROM measurement") >= 5:
                break
            time.sleep(0.2)
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "interrupted; the API, the worker and the phones are stopped" in text
    serials = re.findall(r"virtual phones on (\S+), (\S+)", text)[0]
    assert not any(_listening(s) for s in serials)
    db = sqlite3.connect(state / "latfarm.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # The worker finished its running benchmark and handed the rest back: no task stays leased,
        # and every finished task has its measurement.
        assert db.execute("SELECT count(*) FROM task WHERE status = 'leased'").fetchone() == (0,)
        done = db.execute("SELECT count(*) FROM task WHERE status = 'done'").fetchone()[0]
        measured = db.execute("SELECT count(*) FROM measurement WHERE task_id IS NOT NULL").fetchone()[0]
        assert done == measured > 0
        assert db.execute("SELECT count(*) FROM task WHERE status = 'queued'").fetchone()[0] > 0
    finally:
        db.close()


def _count(state: Path, query: str) -> int:
    path = state / "latfarm.db"
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute(query).fetchone()[0])
        finally:
            db.close()
    except sqlite3.OperationalError:  # not migrated yet, or busy: ask again
        return 0
