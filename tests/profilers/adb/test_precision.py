"""The model at a precision: fp16 and int8 QDQ conversions, stable bytes, clear errors."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto

from profilers.adb.errors import PrecisionConversionError, ProfilerError
from profilers.adb.precision import model_at_precision
from profilers.blocks import get_family

CONV = {"kernel": 3, "cin": 8, "cout": 8, "height": 12, "width": 12}


@pytest.fixture(scope="module")
def fp32() -> bytes:
    return get_family("conv").to_onnx(CONV)


def test_fp32_is_the_model_as_built(fp32: bytes) -> None:
    assert model_at_precision(fp32, "fp32") is fp32


def test_fp16_has_half_initializers_and_float_io(fp32: bytes) -> None:
    model = onnx.load_from_string(model_at_precision(fp32, "fp16"))
    assert {init.data_type for init in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_int8_is_a_qdq_model(fp32: bytes) -> None:
    model = onnx.load_from_string(model_at_precision(fp32, "int8"))
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops
    assert TensorProto.INT8 in {init.data_type for init in model.graph.initializer}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_same_model_same_precision_same_bytes(fp32: bytes, precision: str) -> None:
    # The device cache and the measurements are keyed by these bytes' hash.
    assert model_at_precision(fp32, precision) == model_at_precision(fp32, precision)
    assert model_at_precision(fp32, precision) != fp32


def test_errors_name_the_precision_and_reason(fp32: bytes) -> None:
    with pytest.raises(PrecisionConversionError, match="cannot convert the model to int8"):
        model_at_precision(b"not a model", "int8")
    with pytest.raises(ProfilerError, match="unknown precision 'int4'"):
        model_at_precision(fp32, "int4")
