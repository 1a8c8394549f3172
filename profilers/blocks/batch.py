"""Cost counts of a whole batch of configs at once: the layer table as arrays, numpy over the batch.

Protocol. Each family's `describe` (one config, on a `CostTracer`) has a batch twin here that calls the
same ops in the same order on a :class:`BatchTracer`, whose tensors hold one NCHW shape per config and
whose ops take a ``present`` mask: the configs that have this layer (body layer 5 of an SR block exists
only where the depth is at least 5; a squeeze-excite branch only where ``se``). Every op call records
one block of layers; :meth:`BatchTracer.table` lays the blocks out config-major in call order, which is
exactly the order a `CostTracer` records each config's layers in. So the rows of config ``i`` in the
:class:`LayerTable` are its `Costs.layers`, field for field (a seeded test compares every one on
thousands of random configs of every family), and per-config totals are segment sums over the table.

A column derived from per-layer quantities (a new feature) is one more vectorised function over the
table's arrays; nothing here loops per config or per layer in Python (only per layer *position*, at
most a family's ``max_depth`` times).

Configs arrive as typed msgspec structs (`config_struct`: the family's pydantic model mirrored, strict
JSON types only) and become a :class:`ConfigBatch` (one array per field). `ConfigBatch.suspect` flags
every config the pydantic model might refuse (bounds from its field metadata plus each family's field
validators, mirrored here); callers send flagged configs through the pydantic path, which raises the
exact error or accepts. A family whose model grows a validator this module does not mirror is refused
by `batch_supported` (callers then stay on the one-config path), so an unmirrored rule never lets an
invalid config through.

Past 500 lines on purpose: the tracer, the configs as arrays and the three families' batch twins are one
concept (the batch cost path) and change together; a family's twin sits beside the tracer it calls.
"""

from __future__ import annotations

import enum
import itertools
import operator
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, NamedTuple, SupportsIndex, SupportsInt

import annotated_types
import msgspec
import numpy as np
from numba import njit
from pydantic.types import Strict

from profilers.blocks.graph import _ACTIVATION_OPS, FLOAT_BYTES
from profilers.blocks.registry import get_family
from profilers.blocks.sr_block import MAX_WIDTH

#: Op names of the table's ``op`` codes (``LayerTable.op`` indexes this tuple).
OPS = (
    "Conv",
    "Relu",
    "LeakyRelu",
    "HardSwish",
    "Sigmoid",
    "HardSigmoid",
    "PRelu",
    "Add",
    "Mul",
    "GlobalAveragePool",
    "DepthToSpace",
)
_OP_CODE = {op: code for code, op in enumerate(OPS)}
CONV = _OP_CODE["Conv"]

_TABLE_FIELDS = (
    "op",
    "channels",
    "height",
    "width",
    "in_channels",
    "in_height",
    "in_width",
    "kernel",
    "stride",
    "groups",
    "macs",
    "params",
    "activation_bytes",
)


@dataclass(frozen=True)
class LayerTable:
    """Every layer of a batch as parallel int64 arrays (a structure of arrays), config-major.

    ``config`` is the config's index in the batch; ``op`` indexes :data:`OPS`; ``channels``, ``height``,
    ``width`` are the output shape (N is 1 for every family), ``in_channels``, ``in_height``, ``in_width``
    the (first) input's; ``kernel``, ``stride``, ``groups`` describe a Conv (1 for other ops, as in
    `LayerCost`); ``macs``, ``flops`` (2×MACs), ``params`` and ``activation_bytes``
    are counted as in :mod:`profilers.blocks.graph`. ``starts[i]`` is config ``i``'s first row.
    """

    n_configs: int
    config: np.ndarray
    op: np.ndarray
    channels: np.ndarray
    height: np.ndarray
    width: np.ndarray
    in_channels: np.ndarray
    in_height: np.ndarray
    in_width: np.ndarray
    kernel: np.ndarray
    stride: np.ndarray
    groups: np.ndarray
    macs: np.ndarray
    flops: np.ndarray
    params: np.ndarray
    activation_bytes: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.config.shape[0])

    def per_config(self, values: np.ndarray) -> np.ndarray:
        """Segment sums of a per-layer array: one total per config (exact in int64)."""
        if self.n_configs == 0:
            return np.zeros(0, dtype=values.dtype)
        return np.add.reduceat(values, self.starts)

    def counts(self) -> np.ndarray:
        """Layers per config."""
        return np.diff(np.append(self.starts, len(self)))


Tensor = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""One NCHW shape per config: four int64 arrays of the batch's length."""


class Activations(NamedTuple):
    """Activation kinds of a batch, resolved once: the op code and the PReLU flag of each config."""

    op: np.ndarray
    prelu: np.ndarray

    @classmethod
    def of(cls, kinds: np.ndarray) -> Activations:
        """From kind names (`CostTracer.activation`'s), one per config."""
        op = np.full(kinds.shape[0], -1, dtype=np.int64)
        for name, onnx_op in _ACTIVATION_OPS.items():
            op[kinds == name] = _OP_CODE[onnx_op]
        return cls(op, kinds == "prelu")


def where(present: np.ndarray, a: Tensor, b: Tensor) -> Tensor:
    """Per config: ``a`` where ``present``, else ``b`` (the tensor a skipped layer leaves in place)."""
    return tuple(np.where(present, x, y) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


class BatchTracer:
    """The batch twin of :class:`~profilers.blocks.graph.CostTracer`: same ops, arrays over configs."""

    def __init__(self, input_shape: Tensor) -> None:
        self.n = int(input_shape[0].shape[0])
        self.input = input_shape
        # Block k (one op call) is `_values[k]` (fields × configs) with its presence `_present[:, k]`; both
        # grow by doubling, so recording writes in place and the table is one compiled pass over them.
        self._count = 0
        self._values = np.empty((_FIRST_BLOCKS, len(_TABLE_FIELDS), self.n), dtype=np.int64)
        self._present = np.empty((self.n, _FIRST_BLOCKS), dtype=np.bool_)

    def conv(
        self,
        x: Tensor,
        cout: np.ndarray | int,
        kernel: np.ndarray | int,
        *,
        stride: np.ndarray | int = 1,
        groups: np.ndarray | int = 1,
        bias: bool = True,
        present: np.ndarray | None = None,
    ) -> Tensor:
        """k×k convolution with 'same' padding ``kernel // 2`` (as `CostTracer.conv`)."""
        n, cin, h, w = x
        pad = np.floor_divide(kernel, 2)
        ho = (h + 2 * pad - kernel) // stride + 1
        wo = (w + 2 * pad - kernel) // stride + 1
        per_output = (cin // groups) * kernel * kernel
        macs = cout * ho * wo * per_output * n
        params = cout * per_output + (cout if bias else 0)
        out = (n, self._full(cout), ho, wo)
        return self._record(CONV, out, macs, params, present, x, (kernel, stride, groups))

    def activation(self, x: Tensor, kind: Activations | str, *, present: np.ndarray | None = None) -> Tensor:
        """Element-wise activation: one kind for all (names as `CostTracer.activation`) or one per config."""
        if isinstance(kind, str):
            op: np.ndarray | int = _OP_CODE[_ACTIVATION_OPS[kind]]
            params: np.ndarray | int = x[1] if kind == "prelu" else 0
        else:
            op, params = kind.op, np.where(kind.prelu, x[1], 0)
        return self._record(op, x, 0, params, present, x)

    def add(self, a: Tensor, b: Tensor, *, present: np.ndarray | None = None) -> Tensor:
        """Element-wise sum of two tensors of the same shape (where present)."""
        mask = np.ones(self.n, dtype=bool) if present is None else present
        if any(bool(np.any((p != q) & mask)) for p, q in zip(a, b, strict=True)):
            raise ValueError("Add: shapes differ")
        return self._record(_OP_CODE["Add"], a, 0, 0, present, a)

    def mul(self, a: Tensor, b: Tensor, *, present: np.ndarray | None = None) -> Tensor:
        """Element-wise product; ``b`` may broadcast as N×C×1×1 (squeeze-excite scaling)."""
        return self._record(_OP_CODE["Mul"], a, 0, 0, present, a)

    def global_average_pool(self, x: Tensor, *, present: np.ndarray | None = None) -> Tensor:
        """N×C×H×W → N×C×1×1."""
        one = np.ones(self.n, dtype=np.int64)
        return self._record(_OP_CODE["GlobalAveragePool"], (x[0], x[1], one, one), 0, 0, present, x)

    def depth_to_space(
        self, x: Tensor, block: np.ndarray | int, *, present: np.ndarray | None = None
    ) -> Tensor:
        """Pixel shuffle: N×C·b²×H×W → N×C×bH×bW."""
        n, c, h, w = x
        return self._record(
            _OP_CODE["DepthToSpace"], (n, c // (block * block), h * block, w * block), 0, 0, present, x
        )

    def table(self) -> LayerTable:
        """The recorded layers, config-major in call order (each config's `CostTracer` order)."""
        if not self._count:
            raise ValueError("no layers recorded")
        present = self._present[:, : self._count]
        counts = present.sum(axis=1)
        starts = np.zeros(self.n, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        rows = np.empty((len(_TABLE_FIELDS), int(counts.sum())), dtype=np.int64)
        config = np.empty(rows.shape[1], dtype=np.int64)
        _scatter(self._values, present, rows, config)
        columns = dict(zip(_TABLE_FIELDS, rows, strict=True))
        macs = columns["macs"]
        return LayerTable(self.n, config, flops=2 * macs, starts=starts, **columns)

    def _full(self, value: np.ndarray | int) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=np.int64), (self.n,))

    def _record(
        self,
        op: np.ndarray | int,
        shape: Tensor,
        macs: np.ndarray | int,
        params: np.ndarray | int,
        present: np.ndarray | None,
        source: Tensor,
        conv: tuple[np.ndarray | int, ...] = (1, 1, 1),
    ) -> Tensor:
        n, c, h, w = shape
        k = self._count
        if k == self._values.shape[0]:
            self._values = np.concatenate([self._values, np.empty_like(self._values)])
            self._present = np.concatenate([self._present, np.empty_like(self._present)], axis=1)
        # One (fields × configs) block per op call, in `_TABLE_FIELDS` order; rows broadcast on assignment.
        block = self._values[k]
        block[0], block[1], block[2], block[3] = op, c, h, w
        block[4], block[5], block[6] = source[1], source[2], source[3]
        block[7], block[8], block[9] = conv
        block[10], block[11], block[12] = macs, params, n * c * h * w * FLOAT_BYTES
        self._present[:, k] = True if present is None else present
        self._count = k + 1
        return shape


#: Blocks a tracer has room for before it grows (an SR block of the widest depth records ~20).
_FIRST_BLOCKS = 32


@njit(cache=True, nogil=True)
def _scatter(values: np.ndarray, present: np.ndarray, rows: np.ndarray, config: np.ndarray) -> None:
    """Lay the present (config, block) layers out config-major in call order: `rows[:, r]` and
    `config[r]` for the r-th. Compiled: as numpy (a fancy-indexed scatter per block) it was the largest
    part of building a table, ~1.5 ms for 1,000 SR blocks; this loop touches each value once."""
    n_fields = values.shape[1]
    r = 0
    for i in range(present.shape[0]):
        for b in range(present.shape[1]):
            if present[i, b]:
                for f in range(n_fields):
                    rows[f, r] = values[b, f, i]
                config[r] = i
                r += 1


def warm_up() -> None:
    """Compile the table's scatter (or load it from numba's disk cache) before a request needs it."""
    _scatter(
        np.zeros((1, 1, 1), dtype=np.int64),
        np.ones((1, 1), dtype=np.bool_),
        np.empty((1, 1), dtype=np.int64),
        np.empty(1, dtype=np.int64),
    )


# -- configs as arrays ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigBatch:
    """A batch of one family's configs as one array per field.

    Numbers are int64, booleans bool, string choices str arrays; a list field is a zero-padded 2-D int64
    array in ``lists`` with its lengths in ``lengths``.
    """

    family: str
    n: int
    values: dict[str, np.ndarray]
    lists: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]

    @classmethod
    def from_structs(cls, family: str, structs: Sequence[msgspec.Struct]) -> ConfigBatch:
        """Columns of structs decoded with `config_struct(family)`."""
        n = len(structs)
        values: dict[str, np.ndarray] = {}
        lists: dict[str, np.ndarray] = {}
        lengths: dict[str, np.ndarray] = {}
        # One C-level pass over the structs per field (`map` of an attrgetter): about half the time of one
        # pass making a tuple per struct and unzipping them.
        for spec in _field_kinds(family):
            column = map(operator.attrgetter(spec.name), structs)
            if spec.kind == "list":
                lists_of = list(column)
                length = np.fromiter(map(len, lists_of), dtype=np.int64, count=n)
                width = int(length.max(initial=0))
                padded = np.zeros((n, max(width, 1)), dtype=np.int64)
                if width:
                    flat = np.fromiter(
                        itertools.chain.from_iterable(lists_of), dtype=np.int64, count=int(length.sum())
                    )
                    padded[np.arange(width) < length[:, None]] = flat
                lists[spec.name], lengths[spec.name] = padded, length
            elif spec.kind == "bool":
                values[spec.name] = np.fromiter(column, dtype=bool, count=n)
            elif spec.kind == "str":
                values[spec.name] = np.array(list(column), dtype=str) if n else np.zeros(0, dtype=str)
            else:
                values[spec.name] = np.fromiter(column, dtype=np.int64, count=n)
        return cls(family, n, values, lists, lengths)

    def suspect(self) -> np.ndarray:
        """Per config: True when the family's pydantic model might refuse it (send it through pydantic)."""
        bad = np.zeros(self.n, dtype=bool)
        for spec in _field_kinds(self.family):
            if spec.kind == "list":
                length = self.lengths[spec.name]
                bad |= (length < spec.min_length) | (length > spec.max_length)
            elif spec.kind == "int":
                value = self.values[spec.name]
                if spec.low is not None:
                    bad |= value < spec.low
                if spec.high is not None:
                    bad |= value > spec.high
        flagged: np.ndarray = bad | _VALIDATORS[self.family][1](self)
        return flagged


@dataclass(frozen=True)
class _FieldKind:
    name: str
    kind: str  # int | bool | str | list
    low: int | None = None
    high: int | None = None
    min_length: int = 0
    max_length: int = 2**62


def _int_bound(bound: object) -> int:
    """An `annotated_types` bound as an int (as `int()` reads a number; anything else is a TypeError)."""
    if isinstance(bound, (SupportsInt, SupportsIndex)):
        return int(bound)
    raise TypeError(f"bound {bound!r} is not a number")


def _bounds(metadata: list[Any]) -> tuple[int | None, int | None, int, int]:
    low = high = None
    min_length, max_length = 0, 2**62
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = _int_bound(m.ge)
        elif isinstance(m, annotated_types.Gt):
            low = _int_bound(m.gt) + 1
        elif isinstance(m, annotated_types.Le):
            high = _int_bound(m.le)
        elif isinstance(m, annotated_types.Lt):
            high = _int_bound(m.lt) - 1
        elif isinstance(m, annotated_types.MinLen):
            min_length = int(m.min_length)
        elif isinstance(m, annotated_types.MaxLen):
            max_length = int(m.max_length)
        elif isinstance(m, Strict):
            continue  # strict pydantic refuses lax inputs; the struct never accepts them either
        else:
            raise TypeError(f"no batch check for the constraint {m!r}")
    return low, high, min_length, max_length


@cache
def _field_kinds(family: str) -> tuple[_FieldKind, ...]:
    kinds = []
    for name, info in get_family(family).config_model.model_fields.items():
        struct_type = _struct_type(info.annotation)
        low, high, min_length, max_length = _bounds(list(info.metadata))
        if struct_type is bool:
            kind = "bool"
        elif struct_type is _Int or (
            typing.get_origin(struct_type) is typing.Literal
            and all(isinstance(a, int) for a in typing.get_args(struct_type))
        ):
            kind = "int"
        elif typing.get_origin(struct_type) is list:
            kind = "list"
        else:
            kind = "str"
        kinds.append(_FieldKind(name, kind, low, high, min_length, max_length))
    return tuple(kinds)


def _strip_strict(annotation: Any) -> Any:
    """`int` for `StrictInt` (Annotated[int, Strict()]); any other annotation as it is."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        if all(isinstance(m, Strict) for m in metadata):
            return base
    return annotation


#: Integers the structs accept: far beyond every bound of a config, and safe in int64 arithmetic; a larger
#: one fails decoding, so pydantic reports its bound.
_Int = Annotated[int, msgspec.Meta(ge=-(2**40), le=2**40)]


def _struct_type(annotation: Any) -> Any:
    """The strict msgspec type of a config field (an Enum becomes the Literal of its values)."""
    if annotation is bool:
        return bool
    if annotation is int:
        return _Int
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return typing.Literal[tuple(str(m.value) for m in annotation)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal and all(type(a) in (int, str) for a in typing.get_args(annotation)):
        return annotation
    if origin is list and _strip_strict(typing.get_args(annotation)[0]) is int:
        return list[_Int]
    raise TypeError(f"no batch type for {annotation!r}")


@cache
def config_struct(family: str) -> type[msgspec.Struct]:
    """The msgspec struct mirroring `family`'s config model: same fields and defaults, strict JSON types,
    unknown fields refused. Bounds and validators are not in it: `ConfigBatch.suspect` checks them."""
    model = get_family(family).config_model
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, info in model.model_fields.items():
        struct_type = _struct_type(info.annotation)
        if info.is_required():
            fields.append((name, struct_type))
        else:
            default = info.default.value if isinstance(info.default, enum.Enum) else info.default
            fields.append((name, struct_type, default))
    return msgspec.defstruct(
        f"{model.__name__}Struct", fields, kw_only=True, forbid_unknown_fields=True, frozen=True
    )


def batch_supported(family: str) -> bool:
    """True when every field and every validator of `family`'s model has a batch twin here."""
    # Membership first: `family` may be any string a request sent, and only known ones are cached.
    return family in _VALIDATORS and family in _DESCRIBE and _mirrors_model(family)


@cache
def _mirrors_model(family: str) -> bool:
    model = get_family(family).config_model
    decorators = model.__pydantic_decorators__
    if decorators.model_validators or set(decorators.field_validators) != _VALIDATORS[family][0]:
        return False
    try:
        _field_kinds(family)
        config_struct(family)
    except TypeError:
        return False
    return True


def layer_table(batch: ConfigBatch) -> LayerTable:
    """Every layer of every config of the batch (configs must be valid: not `suspect`)."""
    input_shape, describe = _DESCRIBE[batch.family]
    tracer = BatchTracer(input_shape(batch))
    describe(batch, tracer)
    return tracer.table()


# -- the families -----------------------------------------------------------------------------------------
def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.int64)


def _sr_block_input(c: ConfigBatch) -> Tensor:
    return (_ones(c.n), np.full(c.n, 3, dtype=np.int64), c.values["height"], c.values["width"])


def _sr_block(c: ConfigBatch, b: BatchTracer) -> None:
    """Mirrors `SRBlockFamily.describe`: head, body layers by position, residual, tail, pixel shuffle."""
    k, scale, widths = c.values["kernel"], c.values["scale"], c.lists["widths"]
    depth = c.lengths["widths"] - 1
    activation = Activations.of(c.values["activation"])
    head = b.conv(b.input, widths[:, 0], k)
    x = head
    for i in range(1, int(depth.max(initial=0)) + 1):
        present = depth >= i
        y = b.conv(x, widths[:, i], k, present=present)
        y = b.activation(y, activation, present=present)
        x = where(present, y, x)
    x = b.add(x, head, present=c.values["residual"])
    x = b.conv(x, 3 * scale * scale, k)
    b.depth_to_space(x, scale)


def _sr_block_checks(c: ConfigBatch) -> np.ndarray:
    widths, length = c.lists["widths"], c.lengths["widths"]
    inside = np.arange(widths.shape[1]) < length[:, None]
    bad_width = ((widths < 1) | (widths > MAX_WIDTH)) & inside
    last = widths[np.arange(c.n), np.maximum(length - 1, 0)]
    bad: np.ndarray = (
        (c.values["kernel"] % 2 == 0)
        | bad_width.any(axis=1)
        | (c.values["residual"] & (last != widths[:, 0]))
    )
    return bad


def _channels_input(c: ConfigBatch) -> Tensor:
    return (_ones(c.n), c.values["cin"], c.values["height"], c.values["width"])


def _conv(c: ConfigBatch, b: BatchTracer) -> None:
    """Mirrors `ConvFamily.describe`: one Conv node."""
    v = c.values
    b.conv(b.input, v["cout"], v["kernel"], stride=v["stride"], groups=v["groups"])


def _conv_checks(c: ConfigBatch) -> np.ndarray:
    v = c.values
    groups = np.maximum(v["groups"], 1)  # a group count below 1 is flagged by its bound already
    bad: np.ndarray = (v["kernel"] % 2 == 0) | (v["cin"] % groups != 0) | (v["cout"] % groups != 0)
    return bad


def _make_divisible(value: np.ndarray, divisor: int = 8) -> np.ndarray:
    """`mbconv.make_divisible` of integer values, elementwise."""
    new = np.maximum(divisor, (value + divisor // 2) // divisor * divisor)
    divisible: np.ndarray = np.where(new < 0.9 * value, new + divisor, new)
    return divisible


def _mbconv(c: ConfigBatch, b: BatchTracer) -> None:
    """Mirrors `MBConvFamily.describe`: expand, depthwise, squeeze-excite, project, skip."""
    v = c.values
    act = Activations.of(np.where(v["activation"] == "relu", "relu", "hardswish"))
    hidden = v["cin"] * v["expand_ratio"]
    expand = v["expand_ratio"] != 1
    x = b.input
    y = b.conv(x, hidden, 1, present=expand)
    y = b.activation(y, act, present=expand)
    x = where(expand, y, x)
    x = b.conv(x, hidden, v["kernel"], stride=v["stride"], groups=hidden)
    x = b.activation(x, act)
    se = v["se"]
    s = b.global_average_pool(x, present=se)
    s = b.conv(s, _make_divisible(hidden // 4, 8), 1, present=se)
    s = b.activation(s, "relu", present=se)
    s = b.conv(s, hidden, 1, present=se)
    s = b.activation(s, "hardsigmoid", present=se)
    x = b.mul(x, s, present=se)
    x = b.conv(x, v["cout"], 1)
    b.add(x, b.input, present=(v["stride"] == 1) & (v["cin"] == v["cout"]))


def _no_checks(c: ConfigBatch) -> np.ndarray:
    return np.zeros(c.n, dtype=bool)


#: family → (input shape, batch describe).
_DESCRIBE: dict[str, tuple[Callable[[ConfigBatch], Tensor], Callable[[ConfigBatch, BatchTracer], None]]] = {
    "sr_block": (_sr_block_input, _sr_block),
    "conv": (_channels_input, _conv),
    "mbconv": (_channels_input, _mbconv),
}

#: family → (names of the pydantic field validators mirrored, their batch check).
_VALIDATORS: dict[str, tuple[set[str], Callable[[ConfigBatch], np.ndarray]]] = {
    "sr_block": ({"_kernel_odd", "_widths_bounded", "_residual_shapes"}, _sr_block_checks),
    "conv": ({"_kernel_odd", "_groups_divide"}, _conv_checks),
    "mbconv": (set(), _no_checks),
}
