"""Helpers of the virtual-phone tests: a shell call with exit status, a tiny ONNX model, a raw ADB client."""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from adb_shell.adb_device import AdbDeviceTcp
from onnx import TensorProto, helper, numpy_helper

from profilers.virtual_phone.transport import A_CNXN, pack_message

BENCH_PATH = "/data/local/tmp/latfarm/bin/onnxruntime_perf_test"
MODEL_PATH = "/data/local/tmp/latfarm/models/tiny.onnx"
TFLITE_PATH = "/data/local/tmp/latfarm/bin/benchmark_model"


def run(device: AdbDeviceTcp, command: str) -> tuple[str, int]:
    """Output and exit status of a shell command over adb_shell's v1 shell (status via a marker line)."""
    out = device.shell(f'{command}; echo "__rc=$?"', read_timeout_s=60)
    match = re.search(r"__rc=(\d+)\n?$", out)
    assert match, out
    return out[: match.start()], int(match.group(1))


def tiny_model(channels: int = 16, size: int = 32, layers: int = 3) -> bytes:
    """A small conv net (Conv+Relu stack) as ONNX bytes."""
    nodes, inits, prev, cin = [], [], "x", 3
    rng = np.random.default_rng(0)
    for i in range(layers):
        w = rng.standard_normal((channels, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, cin = f"r{i}", channels
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, channels, size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class Layer:
    """One layer of `net`: a Conv (cout, kernel k, groups, stride) or a channel-preserving `op`."""

    op: str = "Conv"
    cout: int = 0
    k: int = 3
    groups: int = 1
    stride: int = 1


def net(layers: list[Layer], cin: int = 3, size: int = 32) -> bytes:
    """An ONNX model of `layers` over a (1, cin, size, size) input (Conv with "same" padding, Relu, PRelu)."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, c, hw = [], [], "x", cin, size
    for i, layer in enumerate(layers):
        out = f"t{i}"
        if layer.op == "Conv":
            w = rng.standard_normal((layer.cout, c // layer.groups, layer.k, layer.k)).astype(np.float32)
            inits.append(numpy_helper.from_array(w * 0.1, f"w{i}"))
            pad = layer.k // 2
            nodes.append(
                helper.make_node(
                    "Conv",
                    [prev, f"w{i}"],
                    [out],
                    pads=[pad] * 4,
                    group=layer.groups,
                    strides=[layer.stride] * 2,
                )
            )
            c, hw = layer.cout, (hw + layer.stride - 1) // layer.stride
        elif layer.op == "PRelu":
            inits.append(numpy_helper.from_array(np.full((c, 1, 1), 0.1, np.float32), f"s{i}"))
            nodes.append(helper.make_node("PRelu", [prev, f"s{i}"], [out]))
        else:
            nodes.append(helper.make_node(layer.op, [prev], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, c, hw, hw])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def fp16_model(model_bytes: bytes) -> bytes:
    """The model with float16 weights and fp32 I/O, as latfarm's fp16 export makes it."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_model_from_string(model_bytes), keep_io_types=True)
    return bytes(model.SerializeToString())


def int8_model(model_bytes: bytes, tmp: Path) -> bytes:
    """The model quantised to int8 QDQ (static, a few random calibration inputs)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    model = onnx.load_model_from_string(model_bytes)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = iter(
        [{"x": np.random.default_rng(i).standard_normal(shape).astype(np.float32)} for i in range(4)]
    )

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    src, dst = tmp / "fp32.onnx", tmp / "int8.onnx"
    src.write_bytes(model_bytes)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ)
    return dst.read_bytes()


class RawAdb:
    """A bare-socket ADB host for what adb_shell cannot do: malformed packets, several streams at once."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        self.sock.sendall(pack_message(command, arg0, arg1, data))

    def recv(self) -> tuple[int, int, int, bytes]:
        header = self._exact(24)
        command, arg0, arg1, length, check, magic = struct.unpack("<6I", header)
        assert magic == command ^ 0xFFFFFFFF
        data = self._exact(length)
        assert sum(data) & 0xFFFFFFFF == check
        return command, arg0, arg1, data

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the phone")
            buf += chunk
        return buf

    def handshake(self) -> bytes:
        self.send(A_CNXN, 0x01000000, 256 * 1024, b"host::raw\0")
        command, _version, _maxdata, banner = self.recv()
        assert command == A_CNXN
        return banner

    def is_closed_by_peer(self) -> bool:
        """True when the phone closed the connection (EOF or reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
