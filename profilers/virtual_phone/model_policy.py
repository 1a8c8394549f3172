"""Which pushed ONNX models the virtual phone's benchmark runs: none that reaches outside the phone.

An ONNX tensor may keep its bytes in a separate file ("external data": `data_location = EXTERNAL` and a
`location` key). onnxruntime resolves that file against the model's directory — for a model loaded from bytes,
the *process's* working directory, `../` included — and reads it on the host: a crafted model pushed over ADB
would make the phone load any host file it can name (an admin token, the service's ADB key) and could echo its
bytes in an error message. A virtual phone has no business reading host files, so every tensor anywhere in the
model (initializers, sparse initializers, `Constant` and other tensor attributes, subgraphs of
`If`/`Loop`/`Scan`, functions, training info) is walked generically over the protobuf — no field is forgotten
— and a model with any external reference is refused before onnxruntime sees it. The refusal names the
tensor, never the file or its content.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import ModelProto, TensorProto

from profilers.virtual_phone.errors import VirtualPhoneError

_NAME_MAX = 80


class ModelRefused(VirtualPhoneError):
    """A pushed model the benchmark will not load; the message says why, in one line."""


def check_model(model_bytes: bytes) -> None:
    """Raise ModelRefused unless `model_bytes` is an ONNX model whose tensors all live inside it."""
    model = ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except (DecodeError, ValueError, RuntimeError):
        raise ModelRefused("not an ONNX model (protobuf parse failed)") from None
    for tensor in _tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            raise ModelRefused(
                f"tensor {_printable(tensor.name)} references external data; a virtual phone runs only "
                "self-contained models (embed the weights: onnx.save(..., save_as_external_data=False))"
            )


def _tensors(message: Message) -> Iterator[TensorProto]:
    """Every TensorProto inside `message`, at any depth (sparse tensors and subgraphs included)."""
    stack = [message]
    while stack:
        current = stack.pop()
        if isinstance(current, TensorProto):
            yield current
        for field, value in current.ListFields():
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if isinstance(value, Message):
                stack.append(value)
            else:  # a repeated field of messages
                stack.extend(value)


def _printable(name: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in name)
    return repr(text if len(text) <= _NAME_MAX else text[:_NAME_MAX] + "…")
