"""The one featuriser: config dicts × frequencies → the float32 matrix every XGBoost model of latfarm sees.

Training, the serving path and the offline snapshot loader all call `Featurizer.matrix`, so a model never
meets features computed differently from the ones it was trained on. The feature layout is derived from
the family's pydantic config model (`feature_layout`), never hand-listed per family:

- config fields: numbers as they are, booleans 0/1, string choices (Enum / Literal) one-hot, integer lists
  (per-layer widths) padded with 0 to the field's maximum length, plus the list's length;
- costs from `profilers.blocks` (`fam.costs`): totals (FLOPs, params, activation bytes, layers) and FLOPs
  and activation bytes per conv layer, padded to the family's layer slots;
- run conditions: frequency (MHz), FLOPs / frequency, activation bytes / frequency, threads, and the
  cluster one-hot plus its ordinal (the cluster is the compute unit: a CPU cluster, `gpu` or `npu`);
- precision (features version 4): one-hot of the precisions the training data held (fp32, fp16, int8 in
  that order) and the bits per value (32 / 16 / 8), so one predictor learns a unit at several precisions
  and a precision it never saw is refused by name (`UnseenConditionError`) rather than extrapolated. They
  are run conditions, like the cluster, so the per-config rows (and the batch featuriser) do not change;
- kernels (features version 2): the block as a sum of kernels, as kernel-level predictors see it — MACs per
  conv kernel shape (GEMM depth K = c_in·k²/groups and width N = c_out, each in third-of-an-octave
  buckets), output bytes per other op, and the layer count of each; the list of kernels is the training
  data's, stored in the schema. A kernel not in the list counts as its nearest listed conv kernel and its
  MACs also land in `kernel:unseen_macs`, whose training range is 0, so such configs are flagged
  extrapolated. The physics prior of a kernel featuriser adds every kernel column over the frequency and as
  it is to the generic terms: the extra cost of each kernel shape is learnt from whole-block measurements.
- accelerator physics (features version 3, `accelerator_costs`): what a mobile GPU's latency depends on —
  one dispatch per layer, channels in texel slices of 4, output tiles quantised to work-groups, fp16 bytes
  moved against MACs, and the kernel variant a runtime picks by shape (pointwise, depthwise 3×3 / 5×5,
  other depthwise, grouped, general). Their MACs per variant, bytes, work-groups and dispatches also join
  the physics prior (over f and as they are), so one prior serves CPU and GPU measurements alike.
- accelerator quantisation (features version 5, `accelerator_v5_values`): how a runtime's blocking rounds
  the work up — a strided conv's MACs at its input resolution (joins the prior: on the iPhone's Metal
  kernels a stride-2 conv costs several times its output's MACs), conv MACs with channels padded to blocks
  of 8 / 16 / 32 (kernels computing 8 or 16 output channels a thread, SIMD-groups of 16 / 32 lanes), and
  for the trees the fill of those blocks, of SIMD-groups of 16 / 32 / 64 invocations per dispatch and of
  8×8-pixel threadgroup tiles. A schema of an older version computes exactly its old columns and terms.
- CPU roofline and cache spill (features version 6, `cpu_values`): what a CPU core's latency depends on
  beyond its MACs — a layer bound by moving its working set (input, weights and output, fp32) rather than
  by its MACs (`cpu:roofline/<β>`, Σ max(MACs, β·W) at a ladder of machine balances β), and a working set
  spilling the cache (`cpu:spill/<C>`, Σ work · max(0, 1 − C/W) at a ladder of cache sizes C), and the
  conv MACs and working-set bytes of each CPU kernel kind (`cpu:macs/<kind>`, `cpu:bytes/<kind>`: pointwise,
  depthwise, other convs, element-wise). All join the physics prior over f and as they are (of a
  predictor with a CPU unit; an accelerator-only one keeps its version-5 terms): a per-layer
  max() or threshold is what a linear prior over block totals cannot express, which β binds moves with the
  clock, and one rate for every MAC cannot price a GEMM and an im2col conv at once (on the virtual phones'
  50-config trainings the kinds moved the prior alone from 79–84 % to 84–94 % of held-out configs within
  ±10 %, the spill ladder 4–7 more points on the three small-cache phones).

Per-config features are computed once per distinct config (parsing + cost counts take ~30 µs a config)
and cached by the config's marshal bytes (its repr when marshal cannot encode it), or by its JSON text
when the batch comes straight from a request body (`JsonConfigs`); a batch is then broadcast
over its frequencies with numpy (config-major: row `i * n_freq + j` is config `i` at frequency `j`). This
module imports no database code: the snapshot loader depends on it. The physics prior's terms over these
columns, its fit and its evaluation live in `service.predictors.prior`.

Why one module past ~500 lines: the layout (`feature_layout`), the per-config cost columns (kernels and
accelerator costs), the per-layout row cache keyed as the batch featuriser keys it, and `Featurizer` are
one concept — the column layout of the matrix — and change together whenever `FEATURES_VERSION` moves;
split, a version bump would have to be kept in step across modules.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import marshal
import math
import threading
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pydantic_core
from pydantic import BaseModel, ValidationError

from profilers.adb.units import ACCELERATOR_UNITS
from profilers.blocks import BlockConfigError, get_family
from profilers.blocks.batch import batch_supported
from profilers.blocks.graph import Costs
from service.predictors import batch_features
from service.predictors.columns import (
    ACCELERATOR_ELEMENT_BYTES,
    CHANNEL_BLOCKS,
    CHANNEL_SLICE,
    CONCURRENT_WORKGROUPS,
    CONV_VARIANTS,
    CPU_CONV_KINDS,
    CPU_ELEMENT_BYTES,
    CPU_KINDS,
    PIXEL_TILE,
    POINTWISE_TILE,
    ROOFLINE_INTENSITIES,
    ROOFLINE_MULTIPLIERS,
    SIMD_WIDTHS,
    SPILL_CACHE_BYTES,
    VARIANTS,
    WORKGROUP,
    FieldSpec,
)

#: Bumped whenever the layout or the arithmetic of features changes; snapshots of another version are refused.
#: Version 2 added kernel columns; a schema of version 1 (no kernels) still reads, with exactly its layout.
#: Version 3 added the accelerator columns and prior terms; versions 1 and 2 still read, with their layouts.
#: Version 4 added the precision columns (one-hot of the training precisions, bits per value); a schema of
#: an older version has no `precisions` and computes exactly its old columns (its data was all fp32).
#: Version 5 added the quantisation columns of accelerators (`ACCELERATOR_V5_COLUMNS`) and their prior terms;
#: a schema of an older version computes exactly its old columns and terms.
#: Version 6 added the CPU roofline, cache-spill and per-kind columns (`CPU_COLUMNS`) and their prior terms;
#: a schema of an older version computes exactly its old columns and terms.
FEATURES_VERSION = 6
READABLE_FEATURE_VERSIONS = (1, 2, 3, 4, 5, 6)

#: Bits per value of each precision: the numeric column beside the precision one-hot.
PRECISION_BITS = {"fp32": 32.0, "fp16": 16.0, "int8": 8.0}
#: What every measurement before precisions were recorded ran at, and what an older schema knows.
LEGACY_PRECISION = "fp32"

#: Conv layers whose costs get their own columns; later conv layers are added into the last slot.
_LAYER_SLOTS = {"sr_block": 18, "conv": 1, "mbconv": 5}

#: Distinct configs whose feature rows are kept per layout, until `configure_cache` says otherwise
#: (`Settings.feature_cache_entries`); bounded so a long search cannot grow memory.
DEFAULT_CACHE_ENTRIES = 100_000

#: The column collecting MACs of conv kernels the training data did not hold.
UNSEEN_KERNEL_COLUMN = "kernel:unseen_macs"


def _bucket(value: float) -> int:
    """Third-of-an-octave bucket: 4, 8, 12, 16, 24, 32 channels all differ; 63 and 64 do not."""
    return round(3.0 * math.log2(max(value, 1.0)))


def kernel_costs(costs: Costs) -> dict[str, float]:
    """The block as kernels: `Conv/<K bucket>/<N bucket>` → MACs, `<op>` → output bytes, `<op>#` → count."""
    kernels: dict[str, float] = {}
    for layer in costs.layers:
        if layer.op == "Conv":
            c_out = layer.output_shape[1] if len(layer.output_shape) > 1 else 1
            depth = layer.params / max(c_out, 1)  # c_in·k²/groups (+1 for the bias)
            key, value = f"Conv/{_bucket(depth)}/{_bucket(c_out)}", float(layer.macs)
        else:
            key, value = layer.op, float(layer.activation_bytes)
        kernels[key] = kernels.get(key, 0.0) + value
        kernels[layer.op + "#"] = kernels.get(layer.op + "#", 0.0) + 1.0
    return kernels


#: Columns of `accelerator_costs`, in order (features version 3).
ACCELERATOR_COLUMNS = (
    *(f"gpu:{v}#" for v in CONV_VARIANTS),
    *(f"gpu:{v}_macs" for v in CONV_VARIANTS),
    "gpu:dispatches",
    "gpu:strided#",
    "gpu:in_slices",
    "gpu:out_slices",
    "gpu:padded_macs",
    "gpu:slice_waste",
    "gpu:invocations",
    "gpu:workgroups",
    "gpu:workgroup_waste",
    "gpu:input_bytes",
    "gpu:weight_bytes",
    "gpu:output_bytes",
    "gpu:read_bytes",
    "gpu:bytes",
    "gpu:intensity",
    "gpu:out_pixels",
    "gpu:serial_depth",
    *(f"gpu:{v}_waves/{p}" for v in VARIANTS for p in CONCURRENT_WORKGROUPS),
)

#: Accelerator columns that are ratios (shape descriptors, bounded by construction): a new config may fall
#: outside their training range without being any larger or smaller than the trained ones, so the
#: extrapolation flag does not look at them.
ACCELERATOR_RATIO_COLUMNS = ("gpu:slice_waste", "gpu:workgroup_waste", "gpu:intensity")

#: Accelerator columns that join the physics prior (each over f and as it is): additive costs only.
ACCELERATOR_PRIOR_COLUMNS = (
    *(f"gpu:{v}_waves/{p}" for v in VARIANTS for p in CONCURRENT_WORKGROUPS),
    "gpu:bytes",
    "gpu:dispatches",
)


#: Columns of `accelerator_v5_values`, in order (features version 5): how a runtime's blocking quantises
#: the work. `strided_macs` is a strided conv's padded MACs at its input resolution (MACs × stride²: kernels
#: that lay their threads over the input, or read every input texel, pay for the skipped outputs too);
#: `blocked_macs/<B>` the conv MACs with channels padded to blocks of B (output channels always, input
#: channels of a non-depthwise conv too); `channel_fill/<B>` the MACs over those (1: no lane wasted);
#: `simd_fill/<W>` the invocations over those padded to whole SIMD-groups of W per dispatch; and
#: `pixel_tile_fill` the output pixels over those padded to `PIXEL_TILE`-square threadgroup tiles.
ACCELERATOR_V5_COLUMNS = (
    "gpu:strided_macs",
    *(f"gpu:blocked_macs/{b}" for b in CHANNEL_BLOCKS),
    *(f"gpu:channel_fill/{b}" for b in CHANNEL_BLOCKS),
    *(f"gpu:simd_fill/{w}" for w in SIMD_WIDTHS),
    "gpu:pixel_tile_fill",
)

#: Version-5 columns that are ratios (left out of the extrapolation check, as `ACCELERATOR_RATIO_COLUMNS`).
ACCELERATOR_V5_RATIO_COLUMNS = (
    *(f"gpu:channel_fill/{b}" for b in CHANNEL_BLOCKS),
    *(f"gpu:simd_fill/{w}" for w in SIMD_WIDTHS),
    "gpu:pixel_tile_fill",
)

#: Version-5 columns that join the physics prior (each over f and as it is).
ACCELERATOR_V5_PRIOR_COLUMNS = ("gpu:strided_macs",)


def accelerator_prior_columns(version: int) -> tuple[str, ...]:
    """The accelerator columns of the physics prior in a layout of features `version` (none before 3)."""
    if version < 3:
        return ()
    return ACCELERATOR_PRIOR_COLUMNS + (ACCELERATOR_V5_PRIOR_COLUMNS if version >= 5 else ())


#: Columns of `cpu_values`, in order (features version 6): the roofline ladder, the spill ladder, then the
#: MACs of each conv kind and the working-set bytes of each kind (`CPU_KINDS`).
CPU_COLUMNS = (
    *(f"cpu:roofline/{b:g}" for b in ROOFLINE_INTENSITIES),
    *(f"cpu:spill/{c // 1024}KiB" for c in SPILL_CACHE_BYTES),
    *(f"cpu:macs/{k}" for k in CPU_CONV_KINDS),
    *(f"cpu:bytes/{k}" for k in CPU_KINDS),
)

#: Roofline rungs of the physics prior (the trees see all five). Measured on the virtual phones' scratch
#: trainings (bench_transfer's data, 5 phones × 3 seeds, mean within ±10 % at 10 / 20 / 50 / 200 configs
#: per clock): all five rungs 67.5 / 80.6 / 87.8 / 93.5 %, none 70.1 / 82.0 / 87.8 / 93.7 %, β = 1 and 16
#: 72.1 / 81.0 / 88.0 / 93.9 % — the floor binds on few layers of these CPUs (element-wise ones), and
#: five pairs of nearly collinear terms cost the smallest trainings more than they explain.
PRIOR_ROOFLINE_INTENSITIES = (1.0, 16.0)

#: Version-6 columns that join the physics prior (each over f and as it is): additive costs — two roofline
#: rungs, the spill ladder and the per-kind work.
CPU_PRIOR_COLUMNS = (
    *(f"cpu:roofline/{b:g}" for b in PRIOR_ROOFLINE_INTENSITIES),
    *(c for c in CPU_COLUMNS if not c.startswith("cpu:roofline/")),
)


def cpu_prior_columns(version: int, units: Sequence[str]) -> tuple[str, ...]:
    """The CPU columns of the physics prior in a layout of features `version` over compute `units`: none
    before 6, and none when every unit is an accelerator — CPU physics; on the real GPU data they cost the
    iPhone's Metal prior 1.7 points within ±10 % (one seed 8), while the trees still see the columns."""
    if version < 6 or all(unit in ACCELERATOR_UNITS for unit in units):
        return ()
    return CPU_PRIOR_COLUMNS


def working_set_elements(
    op: str, input_elements: int, params: int, output_elements: int, channels: int
) -> int:
    """Elements a layer touches once: its input, weights and output, plus an Add's second operand (the
    first's shape) or a Mul's broadcast one (one per input channel: squeeze-excite scaling)."""
    second = input_elements if op == "Add" else channels if op == "Mul" else 0
    return input_elements + second + params + output_elements


def cpu_kind(op: str, kernel: int, groups: int, c_in: int, c_out: int) -> int:
    """The index in `CPU_KINDS` of a layer's CPU kernel kind: a conv's runtime variant (`conv_variant`)
    with every depthwise one together and general and grouped convs as one "conv"."""
    if op != "Conv":
        return len(CPU_CONV_KINDS)  # elementwise: every MAC-free op
    variant = conv_variant(kernel, groups, c_in, c_out)
    return 0 if variant == "pointwise" else 1 if variant.startswith("depthwise") else 2


def cpu_values(costs: Costs) -> list[float]:
    """`CPU_COLUMNS` of a block, in order.

    W is a layer's working set in fp32 bytes (`working_set_elements` × 4). Roofline: Σ max(MACs, β·W), an
    integer sum (exact); an element-wise layer has no MACs and counts β·W. Spill: Σ work · (W − C) / W over
    the layers whose W exceeds C, with work a conv's MACs and an element-wise layer's working-set elements
    (so its traffic spills too), summed in layer order in float64 — the batch kernel sums the same terms in
    the same order. Then per kind (`cpu_kind`) the conv MACs and the working-set bytes (integer sums): a
    kind's MACs and bytes each cost it at a rate of its own (its kernels' throughput, its im2col or
    element-wise traffic), which one rate over all MACs cannot price.
    """
    roofline = [0] * len(ROOFLINE_MULTIPLIERS)
    spill = [0.0] * len(SPILL_CACHE_BYTES)
    kind_macs = [0] * len(CPU_CONV_KINDS)
    kind_bytes = [0] * len(CPU_KINDS)
    for layer in costs.layers:
        out = layer.output_shape
        inp = layer.input_shape or out
        c_in = inp[1] if len(inp) == 4 else 1
        c_out = out[1] if len(out) == 4 else 1
        channels = (inp[0] if inp else 1) * c_in
        elements = working_set_elements(layer.op, math.prod(inp), layer.params, math.prod(out), channels)
        work = layer.macs if layer.op == "Conv" else elements
        for i, m in enumerate(ROOFLINE_MULTIPLIERS):
            roofline[i] += max(layer.macs, m * elements)
        size = elements * CPU_ELEMENT_BYTES
        for i, c in enumerate(SPILL_CACHE_BYTES):
            if size > c:
                spill[i] += work * ((size - c) / size)
        kind = cpu_kind(layer.op, layer.kernel, max(layer.groups, 1), c_in, c_out)
        if kind < len(CPU_CONV_KINDS):
            kind_macs[kind] += layer.macs
        kind_bytes[kind] += size
    return [
        *(float(r) for r in roofline),
        *spill,
        *(float(m) for m in kind_macs),
        *(float(b) for b in kind_bytes),
    ]


def accelerator_v5_values(costs: Costs) -> list[float]:
    """`ACCELERATOR_V5_COLUMNS` of a block, in order (sums exact as Python ints, divided once)."""
    strided = 0
    blocked = [0] * len(CHANNEL_BLOCKS)
    macs = invocations = out_pixels = tiled_pixels = 0
    simd = [0] * len(SIMD_WIDTHS)
    for layer in costs.layers:
        out = layer.output_shape
        inp = layer.input_shape or out
        n_out = out[0] if out else 1
        c_out, h_out, w_out = (out[1], out[2], out[3]) if len(out) == 4 else (1, 1, 1)
        c_in = inp[1] if len(inp) == 4 else 1
        out_slices = -(-c_out // CHANNEL_SLICE)
        tile = 1
        if layer.op == "Conv":
            k, groups = layer.kernel, max(layer.groups, 1)
            variant = conv_variant(k, groups, c_in, c_out)
            tile = POINTWISE_TILE if variant == "pointwise" else 1
            depthwise = variant.startswith("depthwise")
            depth = 1 if depthwise else c_in // groups
            pixels = n_out * h_out * w_out * k * k
            for i, b in enumerate(CHANNEL_BLOCKS):
                blocked[i] += pixels * -(-c_out // b) * b * (depth if depthwise else -(-depth // b) * b)
            layer_macs = pixels * c_out * depth
            macs += layer_macs
            if layer.stride > 1:
                padded = pixels * out_slices * CHANNEL_SLICE * (1 if depthwise else -(-depth // 4) * 4)
                strided += padded * layer.stride * layer.stride
        per_dispatch = n_out * out_slices * -(-w_out // tile) * -(-h_out // tile)
        invocations += per_dispatch
        for i, w in enumerate(SIMD_WIDTHS):
            simd[i] += -(-per_dispatch // w) * w
        out_pixels += n_out * h_out * w_out
        tiled_pixels += n_out * -(-h_out // PIXEL_TILE) * -(-w_out // PIXEL_TILE) * PIXEL_TILE * PIXEL_TILE
    return [
        float(strided),
        *(float(b) for b in blocked),
        *(macs / b if b > 0 else 1.0 for b in blocked),
        *(invocations / p if p > 0 else 1.0 for p in simd),
        out_pixels / tiled_pixels if tiled_pixels > 0 else 1.0,
    ]


def conv_variant(kernel: int, groups: int, c_in: int, c_out: int) -> str:
    """The conv kernel a mobile GPU runtime picks for this shape (one of `CONV_VARIANTS`)."""
    if groups == 1:
        return "pointwise" if kernel == 1 else "general"
    if groups == c_in == c_out:
        return {3: "depthwise_3x3", 5: "depthwise_5x5"}.get(kernel, "depthwise")
    return "grouped"


def accelerator_costs(costs: Costs) -> dict[str, float]:
    """The block as a mobile GPU runs it: every `ACCELERATOR_COLUMNS` key (0 where nothing applies).

    Each layer is one dispatch over its output texels (4 channels each; a pointwise conv's invocation
    covers a 2×2 pixel tile), grouped into `WORKGROUP`s — a partly filled work-group costs a full one.
    An invocation's serial loop (`serial_depth`) runs k²·input slices texel steps, times its tile's
    pixels; with P work-groups at once a dispatch takes ⌈work-groups / P⌉ waves of that loop (the
    `<variant>_waves/<P>` columns: loop length × waves). Small layers are bound by that loop and the
    dispatch, big ones by the waves: the same law, no size threshold. MACs are counted on channels
    padded to slices of 4, per kernel variant; bytes are fp16 tensors padded to slices (input, weights,
    output once each) and `read_bytes` the texels a conv's invocations fetch (k²·input slices per output
    texel, no cache reuse assumed). Intensity is padded MACs per byte moved.
    """
    return dict(zip(ACCELERATOR_COLUMNS, accelerator_values(costs), strict=True))


def accelerator_values(costs: Costs) -> list[float]:
    """`accelerator_costs` as a list in `ACCELERATOR_COLUMNS` order (the featuriser's per-config path).

    Sums are kept as Python ints (exact, as the float sums of these integer counts are) and converted once.
    """
    texel = CHANNEL_SLICE * ACCELERATOR_ELEMENT_BYTES
    wx, wy, wz = WORKGROUP
    n_ladder = len(CONCURRENT_WORKGROUPS)
    counts, variant_macs = [0] * len(VARIANTS), [0] * len(VARIANTS)
    waves = [0] * (len(VARIANTS) * n_ladder)
    dispatches = strided = in_total = out_total = padded_total = 0
    invocations = workgroups_total = out_pixels = serial = 0
    input_bytes = weight_bytes = output_bytes = read_bytes = macs = 0
    for layer in costs.layers:
        out = layer.output_shape
        inp = layer.input_shape or out
        n_out = out[0] if out else 1
        c_out, h_out, w_out = (out[1], out[2], out[3]) if len(out) == 4 else (1, 1, 1)
        c_in, h_in, w_in = (inp[1], inp[2], inp[3]) if len(inp) == 4 else (1, 1, 1)
        out_slices, in_slices = -(-c_out // CHANNEL_SLICE), -(-c_in // CHANNEL_SLICE)
        dispatches += 1
        in_total += in_slices
        out_total += out_slices
        input_bytes += n_out * in_slices * h_in * w_in * texel
        output_bytes += n_out * out_slices * h_out * w_out * texel
        tile, slot, depth_slices, k = 1, _ELEMENTWISE, 1, 1
        if layer.op == "Conv":
            k, groups = layer.kernel, max(layer.groups, 1)
            variant = conv_variant(k, groups, c_in, c_out)
            slot = _VARIANT_SLOT[variant]
            tile = POINTWISE_TILE if variant == "pointwise" else 1
            depthwise = variant.startswith("depthwise")
            # Depthwise: one input slice per output slice; otherwise every input slice of the group.
            depth_slices = 1 if depthwise else -(-(c_in // groups) // CHANNEL_SLICE)
            padded = n_out * out_slices * CHANNEL_SLICE * h_out * w_out * depth_slices * CHANNEL_SLICE * k * k
            if depthwise:
                padded //= CHANNEL_SLICE  # one channel in, one channel out per lane
            counts[slot] += 1
            variant_macs[slot] += padded
            padded_total += padded
            strided += layer.stride > 1
            weight_bytes += out_slices * depth_slices * k * k * CHANNEL_SLICE * texel
            read_bytes += n_out * out_slices * h_out * w_out * k * k * depth_slices * texel
            macs += layer.macs
        x_tiles, y_tiles = -(-w_out // tile), -(-h_out // tile)
        invocations += n_out * out_slices * x_tiles * y_tiles
        workgroups = n_out * -(-x_tiles // wx) * -(-y_tiles // wy) * -(-out_slices // wz)
        depth = k * k * depth_slices * tile * tile
        workgroups_total += workgroups
        out_pixels += n_out * h_out * w_out
        serial += depth
        base = slot * n_ladder
        for i, p in enumerate(CONCURRENT_WORKGROUPS):
            waves[base + i] += depth * -(-workgroups // p)
    moved = input_bytes + weight_bytes + output_bytes
    n_conv = len(CONV_VARIANTS)
    values = [
        *counts[:n_conv],
        *variant_macs[:n_conv],
        dispatches,
        strided,
        in_total,
        out_total,
        padded_total,
        padded_total / macs if macs > 0 else 1.0,
        invocations,
        workgroups_total,
        workgroups_total * wx * wy * wz / invocations if invocations > 0 else 0.0,
        input_bytes,
        weight_bytes,
        output_bytes,
        read_bytes,
        moved,
        padded_total / moved if moved > 0 else 0.0,
        out_pixels,
        serial,
        *waves,
    ]
    return [float(v) for v in values]


_VARIANT_SLOT = {v: i for i, v in enumerate(VARIANTS)}
_ELEMENTWISE = _VARIANT_SLOT["elementwise"]


def discover_kernels(family: str, configs: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The sorted kernels of `configs` (valid ones; a bad config is reported by `config_rows`)."""
    fam = get_family(family)
    found: set[str] = set()
    for config in configs:
        try:
            found.update(kernel_costs(fam.costs(fam.parse(config))))
        except (ValidationError, BlockConfigError):
            continue
    return tuple(sorted(found))


def _conv_shape(key: str) -> tuple[int, int] | None:
    parts = key.split("/")
    return (int(parts[1]), int(parts[2])) if len(parts) == 3 and parts[0] == "Conv" else None


class UnseenConditionError(ValueError):
    """A run condition the predictor never saw in training: `field` is `unit` or `precision`."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(msg)
        self.field = field
        self.msg = msg


class FeatureError(ValueError):
    """A config that cannot be featurised: `index` in the batch and the offending `field` (or None)."""

    def __init__(self, index: int, field: str | None, msg: str) -> None:
        super().__init__(f"configs[{index}]{'.' + field if field else ''}: {msg}")
        self.index = index
        self.field = field
        self.msg = msg


def _field_spec(name: str, annotation: Any, metadata: list[Any], max_depth: int) -> FieldSpec:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return FieldSpec(name, "bool")
    if annotation in (int, float):
        return FieldSpec(name, "number")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return FieldSpec(name, "category", tuple(str(m.value) for m in annotation))
    if origin is typing.Literal:
        args = typing.get_args(annotation)
        if all(isinstance(a, str) for a in args):
            return FieldSpec(name, "category", tuple(args))
        return FieldSpec(name, "number")
    if origin is list:
        max_len = next((m.max_length for m in metadata if hasattr(m, "max_length")), None)
        return FieldSpec(name, "list", length=int(max_len or max_depth + 1))
    raise BlockConfigError(f"config field {name!r} has a type the featuriser cannot encode: {annotation!r}")


def feature_layout(family: str) -> tuple[list[FieldSpec], int]:
    """The field specs and conv-layer slot count of `family`, derived from its config model."""
    fam = get_family(family)
    hints = typing.get_type_hints(fam.config_model)
    specs = [
        _field_spec(name, hints[name], list(info.metadata), fam.max_depth)
        for name, info in fam.config_model.model_fields.items()
    ]
    return specs, _LAYER_SLOTS.get(family, fam.max_depth + 2)


def _config_feature_names(specs: list[FieldSpec], slots: int) -> list[str]:
    names: list[str] = []
    for spec in specs:
        if spec.kind in ("number", "bool"):
            names.append(spec.name)
        elif spec.kind == "category":
            names.extend(f"{spec.name}={c}" for c in spec.choices)
        else:
            names.append(f"{spec.name}.len")
            names.extend(f"{spec.name}[{i}]" for i in range(spec.length))
    names += ["flops", "params", "activation_bytes", "layers", "conv_layers"]
    names += [f"layer{i}.flops" for i in range(slots)]
    names += [f"layer{i}.activation_bytes" for i in range(slots)]
    return names


class _RowCache:
    """Bounded, thread-safe map of config key (see `_cache_keys`) → feature row (FIFO eviction).

    Lookups are counted (`count`: hits and misses) for the hit rate `/metrics` exports.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[bytes | str, np.ndarray] = {}
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def peek_many(self, keys: Sequence[bytes | str]) -> list[np.ndarray | None]:
        """Rows of `keys` (None where absent), not counted as lookups."""
        return list(map(self.rows.get, keys))  # map: no Python frame per key

    def count(self, hits: int, misses: int) -> None:
        """Record lookups (the caller knows which of `peek_many`'s answers were misses)."""
        with self.lock:
            self.hits += hits
            self.misses += misses

    def put_many(self, items: list[tuple[bytes | str, np.ndarray]]) -> None:
        with self.lock:
            for key, row in items:
                self.rows[key] = row
            self._evict()

    def _evict(self) -> None:
        overflow = len(self.rows) - self.limit
        if overflow > 0:
            for key in list(itertools.islice(self.rows, overflow)):
                del self.rows[key]


_CACHES: dict[str, _RowCache] = {}
#: Rows keyed by a config's JSON text (`JsonConfigs`): a key space of its own, apart from marshal keys.
_JSON_CACHES: dict[str, _RowCache] = {}
_CACHES_LOCK = threading.Lock()
_cache_limit = DEFAULT_CACHE_ENTRIES


def _cache_for(family: str, caches: dict[str, _RowCache] = _CACHES) -> _RowCache:
    cache = caches.get(family)
    if cache is None:
        with _CACHES_LOCK:
            cache = caches.setdefault(family, _RowCache(_cache_limit))
    return cache


def configure_cache(entries: int) -> None:
    """Bound every feature cache of this process to `entries` rows per layout (existing ones shrink now)."""
    global _cache_limit
    if entries < 0:
        raise ValueError("the feature cache bound must be 0 or more entries")
    with _CACHES_LOCK:
        _cache_limit = entries
        for cache in [*_CACHES.values(), *_JSON_CACHES.values()]:
            with cache.lock:
                cache.limit = entries
                cache._evict()


@dataclass(frozen=True)
class CacheStats:
    """One feature cache's size and lifetime lookups (`layout` is the family, plus a kernel-list digest)."""

    layout: str
    keyed_by: str  # "json" (request texts) or "value" (config objects)
    entries: int
    limit: int
    hits: int
    misses: int


def cache_stats() -> list[CacheStats]:
    """Size and lookups of every feature cache of this process (what `/metrics` exports)."""
    with _CACHES_LOCK:
        caches = [("value", n, c) for n, c in _CACHES.items()] + [
            ("json", n, c) for n, c in _JSON_CACHES.items()
        ]
    return [CacheStats(name, kind, len(c.rows), c.limit, c.hits, c.misses) for kind, name, c in caches]


class JsonConfigs(Sequence[Any]):
    """A batch of configs still as their JSON texts (one `bytes` per config), decoded only where needed.

    The feature cache looks a config up by its text, so a warm batch never builds 1,000 dicts nor their
    marshal keys (together most of a warm `/v1/predict` beside the trees). Equal texts are equal configs;
    the same config written differently is only a cache miss. Texts are decoded with pydantic-core's
    parser, the one `model_validate_json` uses, so a config reads exactly as in a validated body.
    """

    def __init__(self, family: str, texts: list[bytes]) -> None:
        self.family = family
        self.texts = texts
        self._decoded: dict[int, Any] = {}
        #: Configs decoded straight into the family's typed struct (`profilers.blocks.batch.config_struct`).
        self.structs: dict[int, Any] = {}

    @classmethod
    def checked(cls, family: str, texts: list[bytes]) -> JsonConfigs:
        """The batch, with every text the feature cache does not hold decoded now.

        A text is decoded straight into the family's typed struct when it strictly fits one (valid JSON
        then, and the batch featuriser's input), otherwise with pydantic-core's parser. Raises ValueError
        when one is not valid JSON (a cached text decoded before), so a caller can fall back to full
        validation and report the body exactly as it would have.
        """
        batch = cls(family, texts)
        # Never made here (`family` is not known to be a family yet); a text any layout holds is valid JSON.
        caches = [c for name, c in list(_JSON_CACHES.items()) if name.split(":")[0] == family]
        known = caches[0].peek_many(texts) if caches else [None] * len(texts)
        for cache in caches[1:]:
            more = cache.peek_many(texts)
            known = [row if row is not None else other for row, other in zip(known, more, strict=True)]
        missing = [i for i, row in enumerate(known) if row is None]
        if not missing:
            return batch
        if batch_supported(family):
            try:  # one decoder call for all the cold texts; if one does not fit, each alone below
                cold = texts if len(missing) == len(texts) else [texts[i] for i in missing]
                structs = batch_features.configs_decoder(family).decode(b"[%s]" % b",".join(cold))
                batch.structs = dict(zip(missing, structs, strict=True))
                return batch
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass
        decoder = batch_features.config_decoder(family) if batch_supported(family) else None
        for i in missing:
            if decoder is not None:
                try:
                    batch.structs[i] = decoder.decode(texts[i])
                    continue
                except (msgspec.ValidationError, msgspec.DecodeError):
                    pass
            batch._decoded[i] = pydantic_core.from_json(texts[i])
        return batch

    @classmethod
    def concat(cls, batches: Sequence[JsonConfigs]) -> JsonConfigs:
        """One batch holding every batch's configs in order, with what each had decoded (same family)."""
        joined = cls(batches[0].family, [text for b in batches for text in b.texts])
        offset = 0
        for b in batches:
            if b.family != joined.family:
                raise ValueError(f"cannot join {b.family} configs to {joined.family} ones")
            joined.structs.update((offset + i, s) for i, s in b.structs.items())
            joined._decoded.update((offset + i, d) for i, d in b._decoded.items())
            offset += len(b.texts)
        return joined

    def __len__(self) -> int:
        return len(self.texts)

    @typing.overload
    def __getitem__(self, index: int) -> Any: ...
    @typing.overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self.texts)
        if index not in self._decoded:
            self._decoded[index] = pydantic_core.from_json(self.texts[index])
        return self._decoded[index]


def _cache_keys(configs: Sequence[Any]) -> list[bytes | str]:
    """Feature-cache keys of a batch: `marshal.dumps` of each config, `repr` where marshal cannot encode it.

    Both are unambiguous encodings (2, 2.0 and True differ; marshal output decodes back to its value), so
    equal keys mean equal configs. Marshal is ~2× cheaper than repr and ~7× cheaper than sorted JSON on a
    JSON-born dict. Key order, or marshal's back-references to shared objects, can only give one config two
    keys — a cache miss, never a wrong row. A marshal key (bytes) never equals a repr key (str).
    """
    try:
        return [marshal.dumps(c) for c in configs]
    except ValueError:  # a config model or another object marshal does not know
        keys: list[bytes | str] = []
        for c in configs:
            try:
                keys.append(marshal.dumps(c))
            except ValueError:
                keys.append(repr(c))
        return keys


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    return (loc[0] if loc else None), str(err.get("msg", "invalid"))


@dataclass
class Featurizer:
    """Turns (configs, frequencies, cluster, threads) into the feature matrix of one family.

    `clusters` are the cluster (compute unit) names seen in training (one-hot columns, in this order);
    `precisions` the precisions seen (version 4: one-hot columns in `PRECISION_BITS` order, then the bits);
    the schema (`to_schema`) round-trips through the database and snapshots. `version` is the features
    version whose layout this featuriser computes (a stored schema of an older version keeps its own, bit
    for bit).
    """

    family: str
    clusters: list[str]
    kernels: tuple[str, ...] = ()
    version: int = FEATURES_VERSION
    precisions: tuple[str, ...] = (LEGACY_PRECISION,)

    def bucket(self, value: float) -> int:
        """The kernel-key bucket (the batch featuriser uses this very function, so its keys are identical)."""
        return _bucket(value)

    specs: list[FieldSpec] = field(init=False)
    slots: int = field(init=False)
    config_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.kernels = tuple(self.kernels)
        if self.version < 4:
            self.precisions = (LEGACY_PRECISION,)  # no columns: every row of its data was fp32
        unknown = [p for p in self.precisions if p not in PRECISION_BITS]
        if unknown or not self.precisions:
            raise ValueError(f"precisions {list(self.precisions)}: each one of {', '.join(PRECISION_BITS)}")
        self.precisions = tuple(p for p in PRECISION_BITS if p in self.precisions)
        self.specs, self.slots = feature_layout(self.family)
        self.config_names = _config_feature_names(self.specs, self.slots)
        self._flops_col = self.config_names.index("flops")
        self._act_col = self.config_names.index("activation_bytes")
        self._layers_col = self.config_names.index("layers")
        if self.kernels:
            self.config_names += [f"kernel:{k}" for k in self.kernels] + [UNSEEN_KERNEL_COLUMN]
        self.accelerator = self.version >= 3
        if self.accelerator:
            self.config_names += list(ACCELERATOR_COLUMNS)
        if self.version >= 5:
            self.config_names += list(ACCELERATOR_V5_COLUMNS)
        if self.version >= 6:
            self.config_names += list(CPU_COLUMNS)
        # Where the prior leaves the CPU columns out (an accelerator-only predictor), its matrix holds them
        # at 0 too (see `matrix`): one rule, `cpu_prior_columns`.
        first_cpu = len(self.config_names) - len(CPU_COLUMNS)
        blank = self.version >= 6 and not cpu_prior_columns(self.version, self.clusters)
        self._cpu_blank = slice(first_cpu, len(self.config_names)) if blank else None
        self._kernel_index = {k: i for i, k in enumerate(self.kernels)}
        self._conv_shapes = {k: shape for k in self.kernels if (shape := _conv_shape(k)) is not None}
        self._family = get_family(self.family)
        # Rows of one layout share a cache; the kernel list is part of the layout.
        digest = hashlib.sha256("\n".join(self.kernels).encode()).hexdigest()[:16]
        self._cache_name = f"{self.family}:v{self.version}:{digest}"

    @property
    def names(self) -> list[str]:
        """Column names of the full matrix, in order."""
        run = ["frequency_mhz", "flops_per_mhz", "activation_bytes_per_mhz", "threads", "cluster_index"]
        return self.config_names + run + [f"cluster={c}" for c in self.clusters] + self.precision_names

    @property
    def precision_names(self) -> list[str]:
        """The precision columns (version 4; none before): one-hot per training precision, then the bits."""
        if self.version < 4:
            return []
        return [f"precision={p}" for p in self.precisions] + ["precision_bits"]

    def to_schema(self) -> dict[str, Any]:
        """JSON description stored with a predictor (enough to rebuild this featuriser)."""
        schema: dict[str, Any] = {
            "features_version": self.version,
            "family": self.family,
            "clusters": list(self.clusters),
            "kernels": list(self.kernels),
        }
        if self.version >= 4:
            schema["precisions"] = list(self.precisions)
        return {**schema, "names": self.names}

    def check_conditions(self, unit: str, precision: str) -> None:
        """`UnseenConditionError` unless the training data held `unit` and `precision`: a prediction for a
        unit or precision the predictor never measured would be a silent extrapolation."""
        if unit not in self.clusters:
            raise UnseenConditionError(
                "unit",
                f"this predictor was trained on the units {', '.join(self.clusters)}, never on {unit!r}: "
                "train one with measurements of it",
            )
        if precision not in self.precisions:
            raise UnseenConditionError(
                "precision",
                f"this predictor was trained at {', '.join(self.precisions)}, never at {precision!r}: "
                "train one with measurements at that precision",
            )

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any]) -> Featurizer:
        """Rebuild the featuriser of a stored schema; refuses another features version or layout."""
        version = schema.get("features_version")
        if version not in READABLE_FEATURE_VERSIONS:
            raise ValueError(
                f"feature schema version {version!r}; this build reads versions "
                f"{', '.join(map(str, READABLE_FEATURE_VERSIONS))}"
            )
        featurizer = cls(
            str(schema["family"]),
            [str(c) for c in schema.get("clusters", [])],
            tuple(str(k) for k in schema.get("kernels", [])),
            int(version),
            tuple(str(p) for p in schema.get("precisions", [LEGACY_PRECISION])),
        )
        if list(schema.get("names", [])) != featurizer.names:
            raise ValueError("the feature names of the schema differ from the ones this build computes")
        return featurizer

    # -- per config --------------------------------------------------------------------------------------
    def _config_row(self, config: BaseModel) -> np.ndarray:
        data = config.model_dump(mode="json")
        values: list[float] = []
        for spec in self.specs:
            value = data[spec.name]
            if spec.kind in ("number", "bool"):
                values.append(float(value))
            elif spec.kind == "category":
                values.extend(1.0 if str(value) == c else 0.0 for c in spec.choices)
            else:
                padded = [float(v) for v in value[: spec.length]]
                values.append(float(len(value)))
                values.extend(padded + [0.0] * (spec.length - len(padded)))
        costs = self._family.costs(config)
        convs = [layer for layer in costs.layers if layer.op == "Conv"]
        flops = [0.0] * self.slots
        acts = [0.0] * self.slots
        for i, layer in enumerate(convs):
            slot = min(i, self.slots - 1)
            flops[slot] += layer.flops
            acts[slot] += layer.activation_bytes
        values += [costs.flops, costs.params, costs.activation_bytes, len(costs.layers), len(convs)]
        accelerator = accelerator_values(costs) if self.accelerator else []
        if self.version >= 5:
            accelerator += accelerator_v5_values(costs)
        if self.version >= 6:
            accelerator += cpu_values(costs)
        return np.asarray(values + flops + acts + self._kernel_values(costs) + accelerator, dtype=np.float64)

    def _kernel_values(self, costs: Costs) -> list[float]:
        if not self.kernels:
            return []
        values = [0.0] * (len(self.kernels) + 1)
        for key, value in kernel_costs(costs).items():
            target = self._kernel_target(key)
            if target is None:
                continue
            index, unseen = target
            if unseen:
                values[-1] += value
            values[index] += value
        return values

    def _kernel_target(self, key: str) -> tuple[int, bool] | None:
        """The kernel column a kernel key adds into and whether it is unseen; None: no column takes it."""
        index = self._kernel_index.get(key)
        if index is not None:
            return index, False
        shape = _conv_shape(key)
        if shape is None or not self._conv_shapes:
            return None  # an op or count the training data never held: only the trees see it
        # The nearest listed conv shape stands in, and the config is flagged extrapolated.
        nearest = min(self._conv_shapes, key=lambda k: math.dist(self._conv_shapes[k], shape))
        return self._kernel_index[nearest], True

    def config_rows(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Per-config feature rows (float64, n × len(config_names)); raises FeatureError on a bad config."""
        json_configs = configs if isinstance(configs, JsonConfigs) and configs.family == self.family else None
        if json_configs is not None:
            cache = _cache_for(self._cache_name, _JSON_CACHES)
            keys: list[bytes | str] = list(json_configs.texts)
        else:
            cache = _cache_for(self._cache_name)
            keys = _cache_keys(configs)
        rows = cache.peek_many(keys)
        fresh: list[tuple[bytes | str, np.ndarray]] = []
        missing = [i for i, row in enumerate(rows) if row is None]
        cache.count(len(rows) - len(missing), len(missing))
        if len(missing) >= batch_features.BATCH_MIN:
            # Many new configs: featurised as arrays; the rest (lax types, suspects) one by one below.
            texts = json_configs.texts if isinstance(json_configs, JsonConfigs) else None
            known = json_configs.structs if isinstance(json_configs, JsonConfigs) else None
            done, batch_rows, missing = batch_features.fresh_rows(self, configs, missing, texts, known)
            # The cache keeps views of the batch's rows (they are evicted together, as they came).
            fresh = list(zip([keys[i] for i in done], batch_rows, strict=True))
            if len(done) == len(rows):
                cache.put_many(fresh)
                return batch_rows  # every row new and in order: no re-assembly
            for i, row in zip(done, batch_rows, strict=True):
                rows[i] = row
        for i in missing:
            config = configs[i]
            if not isinstance(config, Mapping | BaseModel):
                raise FeatureError(i, None, f"a {self.family} config must be a JSON object")
            try:
                parsed = self._family.parse(config)
            except ValidationError as exc:
                name, msg = _first_error(exc)
                raise FeatureError(i, name, msg) from None
            row = self._config_row(parsed)
            rows[i] = row
            fresh.append((keys[i], row))
        if fresh:
            cache.put_many(fresh)
        if not rows:
            return np.empty((0, len(self.config_names)), dtype=np.float64)
        # np.array over equal-length rows is ~2.5× cheaper than np.vstack (no per-row atleast_2d).
        return np.array(rows, dtype=np.float64)

    # -- batch ---------------------------------------------------------------------------------------
    def matrix(
        self,
        config_rows: np.ndarray,
        frequencies_khz: np.ndarray,
        threads: np.ndarray | int,
        cluster: np.ndarray | str,
        *,
        broadcast: bool,
        precision: np.ndarray | str = LEGACY_PRECISION,
    ) -> np.ndarray:
        """The float32 model input.

        With `broadcast`, every config is paired with every frequency, config-major; otherwise row i of
        `config_rows` goes with `frequencies_khz[i]` (training: one row per measurement). `threads`,
        `cluster` and `precision` are one value for the batch or one per row (a precision counts only
        in a version-4 layout).
        """
        freqs = np.asarray(frequencies_khz, dtype=np.float64)
        n_config = config_rows.shape[1]
        if broadcast:
            n_freq = freqs.shape[0]
            n = config_rows.shape[0] * n_freq
            freqs = np.tile(freqs, config_rows.shape[0])
        else:
            n = config_rows.shape[0]
        # Filled in place, float32 from the start: one pass over the wide config part, no stacking copies.
        n_run = 5 + len(self.clusters)
        x = np.zeros((n, n_config + n_run + len(self.precision_names)), dtype=np.float32)
        if broadcast:
            x[:, :n_config].reshape(config_rows.shape[0], n_freq, n_config)[:] = config_rows[:, None, :]
            flops = np.repeat(config_rows[:, self._flops_col], n_freq)
            acts = np.repeat(config_rows[:, self._act_col], n_freq)
        else:
            x[:, :n_config] = config_rows
            flops, acts = config_rows[:, self._flops_col], config_rows[:, self._act_col]
        if self._cpu_blank is not None:
            # CPU physics, left out of an accelerator-only model altogether: in its prior they cost the
            # iPhone's Metal predictor 1.7 points within ±10 % (bench_gpu_real), seen by its trees alone 0.7
            # points over the four phones. The config rows keep them (their cache is shared by all units).
            x[:, self._cpu_blank] = 0.0
        mhz = freqs / 1000.0
        cluster_idx = self._cluster_index(cluster, n)
        x[:, n_config] = mhz
        x[:, n_config + 1] = flops / mhz
        x[:, n_config + 2] = acts / mhz
        x[:, n_config + 3] = np.asarray(threads, dtype=np.float64)
        x[:, n_config + 4] = cluster_idx
        known = np.nonzero(cluster_idx >= 0)[0]
        x[known, n_config + 5 + cluster_idx[known]] = 1.0
        if self.version >= 4:
            self._precision_columns(x[:, n_config + n_run :], precision, n)
        return x

    def condition_names(self) -> list[str]:
        """`<unit>/<precision>` of every run condition group, indexed as `condition_groups` numbers them."""
        return [f"{c}/{p}" for c in self.clusters for p in self.precisions]

    def condition_groups(self, x: np.ndarray) -> np.ndarray:
        """Each row's (unit, precision) group, read back from its columns: an index of `condition_names`,
        or -1 for a unit or precision of no column (and for every row of a layout older than version 4)."""
        n_config = len(self.config_names)
        unit = x[:, n_config + 4].astype(np.int64)  # cluster_index
        if self.version < 4:
            return np.full(x.shape[0], -1, dtype=np.int64)
        start = n_config + 5 + len(self.clusters)
        one_hot = x[:, start : start + len(self.precisions)]
        precision = np.where(one_hot.max(axis=1) > 0, one_hot.argmax(axis=1), -1)
        groups: np.ndarray = np.where(
            (unit >= 0) & (precision >= 0), unit * len(self.precisions) + precision, -1
        )
        return groups

    def _precision_columns(self, out: np.ndarray, precision: np.ndarray | str, n: int) -> None:
        """Fill the precision one-hot and the bits column (`out`: those columns of the matrix)."""
        lookup = {p: i for i, p in enumerate(self.precisions)}
        if isinstance(precision, str):
            index = np.full(n, lookup.get(precision, -1), dtype=np.int64)
            bits = np.full(n, PRECISION_BITS.get(precision, 0.0))
        else:
            index = np.fromiter((lookup.get(str(p), -1) for p in precision), dtype=np.int64, count=n)
            bits = np.fromiter(
                (PRECISION_BITS.get(str(p), 0.0) for p in precision), dtype=np.float64, count=n
            )
        known = np.nonzero(index >= 0)[0]
        out[known, index[known]] = 1.0
        out[:, -1] = bits

    def _cluster_index(self, cluster: np.ndarray | str, n: int) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.clusters)}
        if isinstance(cluster, str):
            return np.full(n, lookup.get(cluster, -1), dtype=np.int64)
        return np.fromiter((lookup.get(str(c), -1) for c in cluster), dtype=np.int64, count=len(cluster))

    def plain_columns(self) -> list[int]:
        """Columns of the plain model: the raw config fields and the run conditions (no derived costs)."""
        n = len(self.config_names)
        fields = range(self.config_names.index("flops"))
        run_end = n + 5 + len(self.clusters)
        return [*fields, n, n + 3, *range(n + 5, run_end + len(self.precision_names))]

    def baseline_input(self, x: np.ndarray) -> np.ndarray:
        """log(FLOPs / MHz) of each row: the one input of the log-log baseline the trees correct."""
        col = len(self.config_names) + 1  # flops_per_mhz
        return np.log(np.maximum(x[:, col].astype(np.float64), 1.0))
