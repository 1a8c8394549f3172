"""A block's ONNX model at a numeric precision: the bytes a benchmark program is given.

- `fp32`: the model as the block family builds it.
- `fp16`: float16 initializers and compute, float32 inputs and outputs (onnxruntime's
  `convert_float_to_float16(keep_io_types=True)`: the Cast nodes at the edges are part of the model, as a
  real deployment of an fp16 model has them).
- `int8`: a QDQ model (QuantizeLinear/DequantizeLinear pairs around the ops, int8 weights and activations)
  from onnxruntime's `quantize_static`, calibrated on two seeded random inputs of the model's input shape.
  Latency does not depend on the calibration data, only on the graph, so random data is enough.

The same model and precision always give the same bytes: the device's model cache is keyed by their
sha256, and the service keys measurements by config, so a conversion must not invent a new model per run.
onnxruntime is imported on first conversion only (fp32 never imports it).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from profilers.adb.errors import PrecisionConversionError
from profilers.adb.units import PRECISIONS

if TYPE_CHECKING:
    import numpy as np
    import onnx

_CALIBRATION_SEED = 12
_CALIBRATION_SAMPLES = 2


def model_at_precision(model: bytes, precision: str) -> bytes:
    """The ONNX `model` (fp32, as built) converted to `precision`; PrecisionConversionError on failure."""
    if precision not in PRECISIONS:
        raise PrecisionConversionError(
            f"unknown precision {precision!r}; latfarm has: {', '.join(PRECISIONS)}"
        )
    if precision == "fp32":
        return model
    try:
        if precision == "fp16":
            return _to_fp16(model)
        return _to_int8(model)
    except PrecisionConversionError:
        raise
    except Exception as exc:
        raise PrecisionConversionError(
            f"cannot convert the model to {precision}: {type(exc).__name__}: {exc}"
        ) from exc


def _to_fp16(model: bytes) -> bytes:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load_from_string(model), keep_io_types=True)
    return bytes(converted.SerializeToString())


def _input_feeds(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    import numpy as np
    from onnx import TensorProto

    initializers = {init.name for init in model.graph.initializer}
    rng = np.random.default_rng(_CALIBRATION_SEED)
    inputs = [i for i in model.graph.input if i.name not in initializers]
    for graph_input in inputs:
        if graph_input.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise PrecisionConversionError(
                f"cannot quantize to int8: input {graph_input.name!r} is not float32 "
                "(the random calibration data is float32)"
            )
    feeds: list[dict[str, np.ndarray]] = []
    for _ in range(_CALIBRATION_SAMPLES):
        sample: dict[str, np.ndarray] = {}
        for graph_input in inputs:
            # A symbolic dimension (a batch named "N") is calibrated at 1.
            shape = [d.dim_value if d.dim_value > 0 else 1 for d in graph_input.type.tensor_type.shape.dim]
            sample[graph_input.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(sample)
    return feeds


def _to_int8(model: bytes) -> bytes:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    feeds = _input_feeds(onnx.load_from_string(model))

    class _Samples(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types
        def __init__(self) -> None:
            self._left = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._left, None)

    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="latfarm-int8-") as scratch:
            source, target = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
            source.write_bytes(model)
            quantize_static(
                source,
                target,
                _Samples(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
            )
            return target.read_bytes()
    finally:
        logging.getLogger().removeFilter(advice)


class _DropPreprocessingAdvice(logging.Filter):
    """quantize_static advises, on the root logger, pre-processing a model; a block needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


__all__ = ["model_at_precision"]
