"""`latfarm demo` end to end at reduced size, in a subprocess: the summary, the database it leaves, Ctrl-C."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from service.demo import campaign_configs

DEMO = [str(Path(sys.executable).parent / "latfarm"), "demo"]
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # The demo names its own database; a developer's LATFARM_* must not leak into it.
    return {k: v for k, v in env.items() if not k.startswith("LATFARM_")}


def _installed_copy(site: Path) -> Path:
    """The packages a wheel of this checkout holds (pyproject's package list and package data), in `site`.

    Nothing else of the checkout — `examples/`, `tests/`, the README — is there, as in a `pip install .`
    or the Docker image.
    """
    setuptools_conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = find_packages(str(REPO), include=setuptools_conf["packages"]["find"]["include"])
    data = setuptools_conf.get("package-data", {})
    for package in packages:
        source = REPO / package.replace(".", "/")
        patterns = ["*.py", *data.get("*", []), *data.get(package, [])]
        for path in source.rglob("*"):
            relative = path.relative_to(source).as_posix()
            if (
                path.is_file()
                and "__pycache__" not in relative
                and (
                    any(fnmatch.fnmatch(relative, p) for p in patterns if "/" in p)
                    or ("/" not in relative and any(fnmatch.fnmatch(relative, p) for p in patterns))
                )
            ):
                target = site / package.replace(".", "/") / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return site


def _installed_command(site: Path) -> tuple[list[str], dict[str, str]]:
    """`latfarm` run from `site` only: no site hooks (the editable install's path to the checkout is a
    `.pth` file), the environment's third-party packages, and nothing of the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATFARM_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
    return [sys.executable, "-S", "-m", "service.cli"], env


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
    """As installed (no `examples/`, no checkout on the path), from an empty directory elsewhere."""
    command, env = _installed_command(_installed_copy(tmp_path / "site"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [*command, "demo", "--configs", "20", "--exit-after-summary"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=elsewhere,
    )
    (state,) = elsewhere.glob("demo-*")  # the demo's default state directory, in the working directory
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
    # The flagship's GPU (virtual, said so): 12 configs × its lowest and highest clock × fp32/fp16, half
    # precision faster, a per-layer chart to open.
    gpu = re.search(
        r"virtual-flagship GPU \(Adreno\S*, VIRTUAL.*?(\d+) measurements .*fp16 takes ([\d.]+)×", out
    )
    assert gpu is not None, out
    assert int(gpu.group(1)) == 48 and float(gpu.group(2)) < 1.0
    assert re.search(r"per-layer chart: http://127\.0\.0\.1:\d+/dashboard/measurements/\d+", out)
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
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_everything_and_leaves_no_half_written_task(tmp_path: Path, signum: int) -> None:
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
    pids: list[int] = []
    try:
        # Interrupt in the middle of the campaign: once some measurements are committed.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if "campaign:" in log.read_text() and _count(state, "SELECT count(*) FROM measurement") >= 5:
                break
            time.sleep(0.2)
        assert process.poll() is None, log.read_text()
        pids = [int(p) for p in re.findall(r"virtual phones on .*\(pids (\d+), (\d+)\)", log.read_text())[0]]
        assert all(_group_alive(pid) for pid in pids)
        process.send_signal(signum)
        assert process.wait(timeout=120) == 128 + signum
    finally:
        if process.poll() is None:
            process.kill()
        leftovers = [pid for pid in pids if _group_alive(pid)]
        for pid in leftovers:  # never leave a phone behind, even when the assertion below fails
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    assert leftovers == [], "phone processes (or their benchmark children) outlived the demo"
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


def _group_alive(pgid: int) -> bool:
    """True while a live process of the group `pgid` (a phone, its forkserver, a benchmark) exists.

    Read from /proc so that a zombie (an exited child nobody reaped yet) does not count as running.
    """
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                return True
    return False


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
