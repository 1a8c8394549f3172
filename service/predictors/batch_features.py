"""Feature rows of many new configs at once: the featuriser's columns as array functions of a batch.

`Featurizer.config_rows` sends the configs its cache does not hold here when there are at least
`BATCH_MIN` of them. Configs become typed msgspec structs (strict JSON types; a request's texts are
decoded straight into them), then one array per field (`ConfigBatch`) and the per-layer table of the
whole batch (`profilers.blocks.batch.layer_table`); every column group below is one vectorised function
of those arrays, and per-config cost columns are segment sums over the table.

Equality with the one-config path (`Featurizer._config_row`) is to the last bit, and a test compares every
column on thousands of random configs of every family, kernel columns included. It holds because every
count is an integer below 2**53 summed exactly (int64, or float64 sums of such integers), converted to
float64 with the same rounding, and the bucket logarithms are taken by the scalar `_bucket` itself on
the batch's distinct values. A column the featuriser gains without a batch twin changes the row width:
`batch_config_rows` then raises (never a silently shifted row) and the equality test fails.

Configs the batch path does not take — lax JSON types ("3" for 3), model instances, and anything
`ConfigBatch.suspect` flags — are handed back to the caller, which runs them through pydantic one by
one, so every error (and its index) is exactly the one-config path's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec
import numpy as np

from profilers.blocks.batch import (
    CONV,
    OPS,
    ConfigBatch,
    LayerTable,
    batch_supported,
    config_struct,
    layer_table,
)
from service.predictors.accelerator_kernel import (
    V3_WIDTH,
    V5_WIDTH,
    V6_WIDTH,
    accelerator_columns,
    cpu_columns,
    kernel_sums,
)
from service.predictors.columns import FieldSpec


class Featurizer(Protocol):
    """What the batch path reads of a `features.Featurizer` (the one implementation)."""

    family: str
    kernels: tuple[str, ...]
    specs: list[FieldSpec]
    slots: int
    config_names: list[str]
    accelerator: bool
    version: int

    def bucket(self, value: float) -> int:
        """The log-scale bucket of a value (`features._bucket`)."""
        ...

    def _kernel_target(self, key: str) -> tuple[int, bool] | None:
        """The kernel column a kernel key adds into and whether it is unseen; None: no column takes it."""
        ...


#: Fewest cache misses worth the batch path: its fixed cost (~40 array operations per layer position, about
#: 0.7 ms for sr_block) equals the one-config path's ~30 µs a config near 25–30 configs (measured on 1 to
#: 10,000 new sr_block configs; the one-config path is faster below, the batch path ever more so above).
BATCH_MIN = 32


def decode_structs(
    family: str,
    configs: Sequence[Any],
    indices: Sequence[int],
    texts: Sequence[bytes] | None = None,
    known: Mapping[int, msgspec.Struct] | None = None,
) -> dict[int, msgspec.Struct]:
    """Typed structs of the configs at `indices` that decode strictly (the others are left out).

    With `texts` (a request's config texts) each is decoded straight from its JSON, unless `known` holds
    it already; otherwise a config that is a mapping is converted.
    """
    structs: dict[int, msgspec.Struct] = {}
    if texts is not None:
        known = known or {}
        if len(known) >= len(indices) and known.keys() >= set(indices):
            return dict(known)  # decoded with the request body (`JsonConfigs.checked`)
        decoder = config_decoder(family)
        for i in indices:
            value = known.get(i)
            if value is None:
                try:
                    value = decoder.decode(texts[i])
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue
            structs[i] = value
        return structs
    struct = config_struct(family)
    for i in indices:
        config = configs[i]
        if isinstance(config, Mapping):
            try:
                structs[i] = msgspec.convert(config, struct)
            except msgspec.ValidationError:
                continue
    return structs


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {}
_LIST_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {}


def configs_decoder(family: str) -> msgspec.json.Decoder[Any]:
    """A JSON decoder of an array of configs straight into a list of `family`'s typed structs."""
    decoder = _LIST_DECODERS.get(family)
    if decoder is None:
        # The element type is a struct class made at run time, which a static checker cannot see as a type.
        element = config_struct(family)
        decoder = _LIST_DECODERS.setdefault(family, msgspec.json.Decoder(list[element]))  # type: ignore[valid-type]
    return decoder


def config_decoder(family: str) -> msgspec.json.Decoder[Any]:
    """A JSON decoder of one config text straight into `family`'s typed struct."""
    decoder = _DECODERS.get(family)
    if decoder is None:
        decoder = _DECODERS.setdefault(family, msgspec.json.Decoder(config_struct(family)))
    return decoder


def fresh_rows(
    featurizer: Featurizer,
    configs: Sequence[Any],
    indices: Sequence[int],
    texts: Sequence[bytes] | None = None,
    known: Mapping[int, msgspec.Struct] | None = None,
) -> tuple[list[int], np.ndarray, list[int]]:
    """Rows of the configs at `indices`: (indices done, their rows, indices left for the one-config path).

    `texts` and `known` as in `decode_structs`.
    """
    if not batch_supported(featurizer.family):
        return [], np.empty((0, len(featurizer.config_names))), list(indices)
    structs = decode_structs(featurizer.family, configs, indices, texts, known)
    decoded = list(structs)
    batch = ConfigBatch.from_structs(featurizer.family, [structs[i] for i in decoded])
    suspect = batch.suspect()
    if suspect.any():
        keep = np.flatnonzero(~suspect)
        batch = ConfigBatch.from_structs(featurizer.family, [structs[decoded[k]] for k in keep])
        decoded = [decoded[k] for k in keep]
    done = set(decoded)
    left = [i for i in indices if i not in done]
    if not decoded:
        return [], np.empty((0, len(featurizer.config_names))), left
    return decoded, batch_config_rows(featurizer, batch), left


def batch_config_rows(featurizer: Featurizer, batch: ConfigBatch) -> np.ndarray:
    """The featuriser's config columns for a batch of valid configs (float64, n × len(config_names)).

    Each column group writes into its slice of one array allocated once (no concatenation copy).
    """
    table = layer_table(batch)
    fields = _field_columns(featurizer, batch)
    with_v3, with_v5, with_v6 = featurizer.accelerator, featurizer.version >= 5, featurizer.version >= 6
    widths = [
        fields.shape[1],
        5 + 2 * featurizer.slots,
        len(featurizer.kernels) + 1 if featurizer.kernels else 0,
        V3_WIDTH if with_v3 else 0,
        V5_WIDTH if with_v5 else 0,
        V6_WIDTH if with_v6 else 0,
    ]
    if sum(widths) != len(featurizer.config_names):
        raise RuntimeError(
            f"the batch featuriser makes {sum(widths)} columns, the featuriser "
            f"{len(featurizer.config_names)}: a column was added without its batch twin in "
            "service/predictors/batch_features.py"
        )
    at = np.cumsum([0, *widths])
    rows = np.empty((batch.n, int(at[-1])), dtype=np.float64)
    rows[:, at[0] : at[1]] = fields
    _cost_columns(featurizer, table, rows[:, at[1] : at[2]])
    if featurizer.kernels:
        _kernel_columns(featurizer, table, rows[:, at[2] : at[3]])
    if with_v3 or with_v5:
        accelerator_columns(table, rows, int(at[3]) if with_v3 else -1, int(at[4]) if with_v5 else -1)
    if with_v6:
        cpu_columns(table, rows[:, at[5] : at[6]])
    return rows


def _field_columns(featurizer: Featurizer, batch: ConfigBatch) -> np.ndarray:
    """Config fields: numbers, booleans 0/1, one-hot choices, list length and zero-padded values."""
    columns: list[np.ndarray] = []
    for spec in featurizer.specs:
        if spec.kind in ("number", "bool"):
            columns.append(batch.values[spec.name].astype(np.float64)[:, None])
        elif spec.kind == "category":
            value = batch.values[spec.name]
            columns.append(np.stack([value == c for c in spec.choices], axis=1).astype(np.float64))
        else:
            padded = np.zeros((batch.n, spec.length), dtype=np.float64)
            values = batch.lists[spec.name][:, : spec.length]
            padded[:, : values.shape[1]] = values
            columns.append(batch.lengths[spec.name].astype(np.float64)[:, None])
            columns.append(padded)
    return np.concatenate(columns, axis=1) if columns else np.empty((batch.n, 0))


def _cost_columns(featurizer: Featurizer, table: LayerTable, out: np.ndarray) -> None:
    """Into `out` (n × (5 + 2·slots)): totals (FLOPs, params, activation bytes, layers, conv layers) and
    FLOPs and bytes per conv slot."""
    n, slots = table.n_configs, featurizer.slots
    is_conv = table.op == CONV
    out[:, 0] = table.per_config(table.flops)
    out[:, 1] = table.per_config(table.params)
    out[:, 2] = table.per_config(table.activation_bytes)
    out[:, 3] = table.counts()
    conv_counts = table.per_config(is_conv.astype(np.int64))
    out[:, 4] = conv_counts
    # The i-th conv of a config lands in slot min(i, slots - 1): later ones add into the last slot.
    conv_rows = np.flatnonzero(is_conv)
    conv_config = table.config[conv_rows]
    first_conv = np.concatenate(([0], np.cumsum(conv_counts)[:-1]))
    slot = np.minimum(np.arange(conv_rows.shape[0]) - first_conv[conv_config], slots - 1)
    cell = conv_config * slots + slot
    size = n * slots
    out[:, 5 : 5 + slots] = np.bincount(cell, table.flops[conv_rows], minlength=size).reshape(n, slots)
    acts = np.bincount(cell, table.activation_bytes[conv_rows], minlength=size)
    out[:, 5 + slots :] = acts.reshape(n, slots)


def _kernel_columns(featurizer: Featurizer, table: LayerTable, out: np.ndarray) -> None:
    """Into `out` (n × (kernels + 1)): per listed kernel the MACs of its conv shape, output bytes of its
    op, its layer count; unseen MACs last."""
    column = np.full(len(table), -1, dtype=np.int64)
    unseen = np.zeros(len(table), dtype=bool)
    value = table.activation_bytes.astype(np.float64)
    is_conv = table.op == CONV
    conv_rows = np.flatnonzero(is_conv)
    if conv_rows.size:
        c_out = table.channels[conv_rows]
        depth = table.params[conv_rows] / np.maximum(c_out, 1)  # c_in·k²/groups (+1 for the bias)
        depth_bucket = _buckets(featurizer, depth)
        c_out_bucket = _buckets(featurizer, c_out.astype(np.float64))
        # Buckets are small non-negative ints: a pair code indexes a lookup of the few pairs present.
        code = depth_bucket * _PAIR_STRIDE + c_out_bucket
        present = np.flatnonzero(np.bincount(code))
        lookup_column = np.full(int(present[-1]) + 1, -1, dtype=np.int64)
        lookup_unseen = np.zeros(int(present[-1]) + 1, dtype=bool)
        for pair in present.tolist():
            target = featurizer._kernel_target(f"Conv/{pair // _PAIR_STRIDE}/{pair % _PAIR_STRIDE}")
            if target is not None:
                lookup_column[pair], lookup_unseen[pair] = target
        column[conv_rows] = lookup_column[code]
        unseen[conv_rows] = lookup_unseen[code]
        value[conv_rows] = table.macs[conv_rows]
    op_column = np.array([_target_column(featurizer, op) for op in OPS], dtype=np.int64)
    count_column = np.array([_target_column(featurizer, op + "#") for op in OPS], dtype=np.int64)
    column[~is_conv] = op_column[table.op[~is_conv]]
    # An unlisted conv shape counts as its nearest listed one and also lands in the last column.
    kernel_sums(table.config, column, count_column[table.op], unseen, value, out)


#: Larger than any bucket: 3·log2 of a bucket's value stays far below it for 64-bit counts.
_PAIR_STRIDE = 1024


def _buckets(featurizer: Featurizer, values: np.ndarray) -> np.ndarray:
    """`featurizer.bucket` of each value, vectorised: numpy's log2 may differ from math.log2 in the last
    bits, which can only matter within a hair of a half-integer, so those values are recomputed by the
    scalar function itself; everything else rounds identically (round half to even, like `round`)."""
    scaled = 3.0 * np.log2(np.maximum(values, 1.0))
    buckets: np.ndarray = np.rint(scaled).astype(np.int64)
    near_half = np.flatnonzero(np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) < 1e-6)
    for i in near_half.tolist():
        buckets[i] = featurizer.bucket(float(values[i]))
    return buckets


def _target_column(featurizer: Featurizer, key: str) -> int:
    target = featurizer._kernel_target(key)
    return -1 if target is None else target[0]
