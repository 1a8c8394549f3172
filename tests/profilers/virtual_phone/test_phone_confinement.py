"""A hostile or careless client cannot reach the host through a virtual phone, nor keep it busy after leaving.

Models with external data are refused (no host file is read, no byte of it is echoed); a command's work ends
when its client leaves (shell loops, benchmark processes); benchmarks run under CPU, memory and run-count
limits; the storage quota holds under concurrent pushes; hostile command lines get one-line answers.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.exceptions import PushFailedError
from onnx import TensorProto, helper, numpy_helper

from profilers.virtual_phone import BENCHMARK_BINARY, VirtualPhone
from profilers.virtual_phone.bench_process import BenchmarkLimits
from profilers.virtual_phone.transport import A_CLSE, A_OKAY, A_OPEN, A_WRTE
from tests.profilers.virtual_phone.phone_kit import BENCH_PATH, MODEL_PATH, RawAdb, run, tiny_model

SECRET = b"LATFARM-HOST-SECRET-7f3a9c0e5b21d4"
MB = 1024 * 1024


def _model(tensor: TensorProto, *, in_subgraph: bool = False) -> bytes:
    """y = Identity(w) with `w` the given tensor, as an initializer or inside an If's subgraph constant."""
    out = helper.make_tensor_value_info("y", TensorProto.UINT8, [len(SECRET)])
    if not in_subgraph:
        graph = helper.make_graph(
            [helper.make_node("Identity", [tensor.name], ["y"])], "g", [], [out], [tensor]
        )
    else:
        branch = helper.make_graph(
            [helper.make_node("Constant", [], ["y"], value=tensor)], "branch", [], [out]
        )
        cond = numpy_helper.from_array(np.array(True), "cond")
        node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
        graph = helper.make_graph([node], "g", [], [out], [cond])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _external(location: str) -> TensorProto:
    tensor = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[len(SECRET)])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(SECRET)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.fixture
def secret_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host file holding SECRET, in the working directory of this (the phone's) process."""
    home = tmp_path / "host"
    home.mkdir()
    (home / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(home)
    return home / "secret.txt"


@pytest.mark.parametrize("kind", ["relative", "absolute", "dotdot", "dotdot-in-subgraph"])
def test_a_model_with_external_data_is_refused_and_no_host_byte_leaves(
    kind: str, secret_cwd: Path, installed: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    location = {
        "relative": "secret.txt",
        "absolute": str(secret_cwd),
        "dotdot": os.path.relpath(secret_cwd, phone.runtime.bench_workdir),
        "dotdot-in-subgraph": "../host/secret.txt",
    }[kind]
    model = _model(_external(location), in_subgraph=kind.endswith("subgraph"))
    installed.push(io.BytesIO(model), "/data/local/tmp/evil.onnx", st_mode=0o100644)
    result = "/data/local/tmp/evil.txt"
    out, rc = run(installed, f"{BENCH_PATH} -m times -r 2 -I -s /data/local/tmp/evil.onnx {result} 2>&1")
    assert rc == 255, out
    assert "references external data" in out and "'w'" in out
    assert out.count("\n") == 1  # one line
    for blob in (out, run(installed, f"cat {result} /data/local/tmp/*; ls -R /")[0]):
        assert SECRET.decode() not in blob and SECRET[:8].hex() not in blob
    assert phone.benchmark_runs() == []  # refused before anything ran


def test_self_contained_models_still_run_and_the_child_runs_in_an_empty_directory(
    installed: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    out, rc = run(installed, f"{BENCH_PATH} -m times -r 3 -I {MODEL_PATH}")
    assert rc == 0 and "Total inference requests: 3" in out, out
    assert list(phone.runtime.bench_workdir.iterdir()) == []


def _open_stream(raw: RawAdb, service: str) -> int:
    raw.handshake()
    raw.send(A_OPEN, 1, 0, service.encode() + b"\0")
    command, device_id, host_id, _ = raw.recv()
    assert (command, host_id) == (A_OKAY, 1)
    return device_id


@pytest.mark.parametrize("leave", ["close-stream", "drop-connection"])
def test_a_shell_loop_stops_when_its_client_leaves(phone: VirtualPhone, leave: str) -> None:
    raw = RawAdb(phone.port)
    try:
        device_id = _open_stream(raw, "shell:while true; do while true; do :; done; done")
        assert phone.services_running == 1
        if leave == "close-stream":
            raw.send(A_CLSE, 1, device_id)  # the connection stays up
        else:
            raw.close()
        assert phone.wait_idle(timeout=10), "the loop kept running after its client left"
    finally:
        raw.close()


def test_a_duration_benchmark_process_is_killed_when_its_client_disconnects(
    installed: AdbDeviceTcp, phone: VirtualPhone
) -> None:
    raw = RawAdb(phone.port)
    try:
        _open_stream(raw, f"shell:{BENCH_PATH} -m duration -t 600 -I {MODEL_PATH}")
        pids = phone.wait_benchmark_pids(1, timeout=30)
        assert pids is not None, "the benchmark never started"
        (pid,) = pids
        assert _alive(pid)
    finally:
        raw.close()
    assert phone.wait_benchmark_pids(0, timeout=10) == set()
    assert phone.wait_idle(timeout=10)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _phone_with(tmp_path: Path, limits: BenchmarkLimits) -> VirtualPhone:
    return VirtualPhone(state_dir=tmp_path / "limited", bench_limits=limits)


def _install(phone: VirtualPhone, model: bytes = b"", path: str = MODEL_PATH) -> AdbDeviceTcp:
    dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=60)
    assert dev.connect(read_timeout_s=10)
    dev.push(str(BENCHMARK_BINARY), BENCH_PATH, st_mode=0o100755)
    dev.push(io.BytesIO(model or tiny_model()), path, st_mode=0o100644)
    return dev


def test_a_duration_benchmark_on_a_tiny_model_stops_at_the_run_limit(tmp_path: Path) -> None:
    with _phone_with(tmp_path, BenchmarkLimits(max_runs=400)) as phone:
        dev = _install(phone, tiny_model(channels=4, size=8, layers=1))
        out, rc = run(dev, f"{BENCH_PATH} -I {MODEL_PATH}")  # the default: -m duration -t 600
        assert rc == 0 and "Total inference requests: 400" in out, out
        out, rc = run(dev, f"{BENCH_PATH} -m times -r 401 -I {MODEL_PATH}")
        assert rc == 255 and "limit of 400" in out
        dev.close()


def test_a_benchmark_over_its_cpu_time_limit_fails_in_one_line(tmp_path: Path) -> None:
    with _phone_with(tmp_path, BenchmarkLimits(cpu_seconds=1, max_runs=10**9)) as phone:
        dev = _install(phone, tiny_model(channels=4, size=8, layers=1))
        out, rc = run(dev, f"{BENCH_PATH} -m duration -t 100000 -I {MODEL_PATH} 2>&1")
        assert rc == 255 and out == "Run failed: CPU time limit exceeded\n"
        assert phone.wait_benchmark_pids(0, timeout=10) == set()
        dev.close()


def _allocating_model(nbytes: int) -> bytes:
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [nbytes // 4])
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [1.0])
    node = helper.make_node("ConstantOfShape", ["shape"], ["y"], value=value)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "big", [], [out], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_benchmark_over_its_memory_limit_fails_in_one_line(tmp_path: Path) -> None:
    with _phone_with(tmp_path, BenchmarkLimits(memory_bytes=1536 * MB)) as phone:
        dev = _install(phone, _allocating_model(2048 * MB), "/data/local/tmp/big.onnx")
        out, rc = run(dev, f"{BENCH_PATH} -m times -r 2 -I /data/local/tmp/big.onnx 2>&1")
        assert rc == 255 and out.startswith("Run failed:") and out.count("\n") == 1, out
        assert "allocate" in out.lower() or "memory" in out.lower()
        dev.close()


def test_concurrent_pushes_never_store_more_than_the_quota(tmp_path: Path) -> None:
    profile = {"name": "tiny-storage", "storage_free_bytes": 10 * MB}
    with VirtualPhone(profile=_with(profile), state_dir=tmp_path / "quota") as phone:
        start = threading.Barrier(4)
        outcomes: list[str] = []

        def push(i: int) -> None:
            dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=60)
            assert dev.connect(read_timeout_s=10)
            start.wait()
            try:
                dev.push(io.BytesIO(bytes([i]) * (8 * MB)), f"/data/local/tmp/f{i}.bin")
                outcomes.append("stored")
            except PushFailedError as exc:
                outcomes.append(str(exc))
            finally:
                dev.close()

        threads = [threading.Thread(target=push, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(outcomes) == 4
        assert phone.wait_idle(timeout=10)  # every push's service has finished its clean-up
        assert outcomes.count("stored") <= 1, outcomes
        assert all("No space left on device" in o for o in outcomes if o != "stored")
        assert phone.runtime.fs.used_bytes() <= 10 * MB
        assert phone.runtime.fs.free_bytes() == 10 * MB - phone.runtime.fs.used_bytes()  # nothing leaked
        leftovers = [p.name for p in phone.rootfs.rglob("*") if ".latfarm-push-" in p.name]
        assert leftovers == []


def test_a_stored_file_named_like_a_push_in_flight_still_counts(tmp_path: Path) -> None:
    profile = {"name": "tiny-storage", "storage_free_bytes": 100_000}
    with VirtualPhone(profile=_with(profile), state_dir=tmp_path / "quota") as phone:
        dev = AdbDeviceTcp("127.0.0.1", phone.port, default_transport_timeout_s=60)
        assert dev.connect(read_timeout_s=10)
        dev.push(io.BytesIO(b"x" * 80_000), "/data/local/tmp/.a.latfarm-push-1")
        with pytest.raises(PushFailedError, match="No space left on device"):
            dev.push(io.BytesIO(b"y" * 80_000), "/data/local/tmp/b.bin")
        assert phone.runtime.fs.used_bytes() == 80_000
        dev.close()


def _with(overrides: dict[str, object]) -> dict[str, object]:
    import json

    from profilers.virtual_phone.profile import PROFILES_DIR

    base = json.loads((PROFILES_DIR / "virtual-flagship.json").read_text())
    return {**base, **overrides}


@pytest.mark.parametrize(
    "line",
    [
        "if true; then " * 150 + "echo deep" + "; fi" * 150,
        "echo " + "$(echo " * 150 + "x" + ")" * 150,
        "while true; do " * 150 + ":" + "; done" * 150,
    ],
    ids=["if", "substitution", "while"],
)
def test_deep_nesting_is_answered_and_logged_in_one_line(
    device: AdbDeviceTcp, line: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="profilers.virtual_phone")
    out = device.shell(line, read_timeout_s=30)
    assert "sh: too deeply nested\n" in out and len(out) < 200
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in caplog.records)
    assert device.shell("echo still-serving") == "still-serving\n"


def test_a_script_calling_itself_ends_in_one_line(device: AdbDeviceTcp) -> None:
    script = "/data/local/tmp/again.sh"
    device.push(io.BytesIO(f"#!/system/bin/sh\nsh -c {script}\n".encode()), script, st_mode=0o100755)
    out = device.shell(script, read_timeout_s=30)
    assert out == "sh: too deeply nested\n"


def test_over_long_names_get_clean_errors(device: AdbDeviceTcp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="profilers.virtual_phone")
    name = "a" * 5000
    out, rc = run(device, name)
    assert rc == 127 and out == f"sh: {name}: not found\n"
    out, rc = run(device, f"cat /data/local/tmp/{name}")
    assert rc == 1 and out.endswith("File name too long\n") and out.count("\n") == 1
    out, rc = run(device, f"echo x > /data/local/tmp/{name}")
    assert rc == 1 and "File name too long" in out
    out, rc = run(device, f"/data/local/tmp/{name}")
    assert rc == 127
    with pytest.raises(PushFailedError, match="File name too long"):
        device.push(io.BytesIO(b"data"), f"/data/local/tmp/{'b' * 300}")
    assert all(r.exc_info is None for r in caplog.records)
    assert device.shell("echo still-serving") == "still-serving\n"


def test_a_v2_shell_that_ends_early_leaves_nothing_running(phone: VirtualPhone) -> None:
    """shell,v2 with stdin never closed: the host leaves; the waiting command ends with it."""
    raw = RawAdb(phone.port)
    try:
        device_id = _open_stream(raw, "shell,v2,raw:sleep 30")
        raw.send(A_WRTE, 1, device_id, struct.pack("<BI", 0, 1) + b"x")
        assert raw.recv()[0] == A_OKAY
    finally:
        raw.close()
    assert phone.wait_idle(timeout=10)
