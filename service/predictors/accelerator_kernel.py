"""The accelerator columns of a batch (features versions 3 and 5) in one compiled pass over its layers.

Why compiled: these ~80 columns are sums over every layer of small integer formulas (channel slices,
workgroups, tiles, bytes moved). As numpy over the layer table they took ~100 array passes over 13,000
layers for 1,000 sr_block configs — 2.5 ms, a third of a cold request. One numba loop computes each
layer's terms once, in registers, and adds them into its config's row.

Equality with `features.accelerator_values` / `features.accelerator_v5_values` (the one-config path) is to
the last bit, and `tests/service/predictors/test_batch_features.py` compares every column on thousands of
random configs of every family. It holds for the reasons the numpy version had: every per-layer term is an
integer computed in int64 (`//` floors as Python's does), summed per config in int64 (exact), converted to
float64 once (exact below 2**53); the `waves` sums are float64 sums of integers, exact the same way; and
each ratio is one float64 division of two such sums, as Python divides two ints.

The kernel columns' sums (`kernel_sums`: MACs, bytes and counts per listed kernel shape, whose lookups
`batch_features` makes in numpy) are compiled here too, for the same reason and with the same exactness.
So are the CPU roofline and spill columns of features version 6 (`cpu_columns`, equal to
`features.cpu_values`): the roofline sums are int64 (exact); each spill term is one float64 division of two
integers and one product, as Python computes it, added in layer order as the per-config loop adds them (no
fast-math: LLVM neither reorders nor fuses them).

The kernels compile on first use (about a second) and is cached on disk next to this module by numba, so
later processes load them in milliseconds; `warm_up` compiles them ahead of the first request.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from profilers.blocks.batch import CONV, OPS, LayerTable
from service.predictors import columns as f

_SLICE = f.CHANNEL_SLICE
_TEXEL = f.CHANNEL_SLICE * f.ACCELERATOR_ELEMENT_BYTES
_WX, _WY, _WZ = f.WORKGROUP
_LADDER = np.asarray(f.CONCURRENT_WORKGROUPS, dtype=np.int64)
_BLOCKS = np.asarray(f.CHANNEL_BLOCKS, dtype=np.int64)
_SIMD = np.asarray(f.SIMD_WIDTHS, dtype=np.int64)
_N_VARIANTS = len(f.VARIANTS)
_N_CONV = len(f.CONV_VARIANTS)
_SLOT = {name: i for i, name in enumerate(f.VARIANTS)}
_POINTWISE, _GENERAL, _GROUPED = _SLOT["pointwise"], _SLOT["general"], _SLOT["grouped"]
_DEPTHWISE, _DEPTHWISE_3, _DEPTHWISE_5 = _SLOT["depthwise"], _SLOT["depthwise_3x3"], _SLOT["depthwise_5x5"]
_ELEMENTWISE = _SLOT["elementwise"]
_ROOFLINE = np.asarray(f.ROOFLINE_MULTIPLIERS, dtype=np.int64)
_SPILL = np.asarray(f.SPILL_CACHE_BYTES, dtype=np.int64)
_ADD, _MUL = OPS.index("Add"), OPS.index("Mul")

#: Width of the version-3 block: per conv variant a count and padded MACs; 5 totals; the padding ratio;
#: invocations, workgroups and their fill; 5 byte counts and the arithmetic intensity; pixels and depth;
#: a wave count per variant and concurrency step.
V3_WIDTH = 2 * _N_CONV + 5 + 1 + 2 + 1 + 5 + 1 + 2 + _N_VARIANTS * len(f.CONCURRENT_WORKGROUPS)
#: Width of the version-5 block: strided MACs, per channel block its MACs and fill, per SIMD width its
#: fill, and the pixel-tile fill.
V5_WIDTH = 1 + 2 * len(f.CHANNEL_BLOCKS) + len(f.SIMD_WIDTHS) + 1
#: Width of the version-6 block: a roofline sum per intensity, a spill sum per cache size, MACs per conv
#: kind and bytes per kind.
V6_WIDTH = len(f.ROOFLINE_INTENSITIES) + len(f.SPILL_CACHE_BYTES) + len(f.CPU_CONV_KINDS) + len(f.CPU_KINDS)
_N_CPU_CONV = len(f.CPU_CONV_KINDS)


def accelerator_columns(table: LayerTable, out: np.ndarray, v3_at: int, v5_at: int) -> None:
    """Into `out`: the version-3 block from column `v3_at` and the version-5 block from `v5_at` (−1: not
    wanted), one row per config."""
    _columns(
        table.starts,
        len(table),
        table.op,
        table.channels,
        table.height,
        table.width,
        table.in_channels,
        table.in_height,
        table.in_width,
        table.kernel,
        table.stride,
        table.groups,
        table.macs,
        out,
        v3_at,
        v5_at,
    )


def cpu_columns(table: LayerTable, out: np.ndarray) -> None:
    """Into `out` (n × `V6_WIDTH`): the CPU columns (`features.cpu_values`) of each config (N is 1 here)."""
    _cpu_columns(
        table.starts,
        len(table),
        table.op,
        table.channels * table.height * table.width,
        table.in_channels,
        table.in_channels * table.in_height * table.in_width,
        table.params,
        table.macs,
        table.channels,
        table.kernel,
        table.groups,
        out,
    )


def _cpu_columns_py(
    starts: np.ndarray,
    n_layers: int,
    op: np.ndarray,
    out_elements: np.ndarray,
    in_channels: np.ndarray,
    in_elements: np.ndarray,
    params: np.ndarray,
    macs: np.ndarray,
    c_out: np.ndarray,
    kernel: np.ndarray,
    groups_in: np.ndarray,
    out: np.ndarray,
) -> None:
    n = starts.shape[0]
    n_roof, n_spill = _ROOFLINE.shape[0], _SPILL.shape[0]
    roofline = np.zeros(n_roof, dtype=np.int64)
    spill = np.zeros(n_spill, dtype=np.float64)
    kind_macs = np.zeros(_N_CPU_CONV, dtype=np.int64)
    kind_bytes = np.zeros(_N_CPU_CONV + 1, dtype=np.int64)
    for i in range(n):
        begin = starts[i]
        end = starts[i + 1] if i + 1 < n else n_layers
        roofline[:] = 0
        spill[:] = 0.0
        kind_macs[:] = 0
        kind_bytes[:] = 0
        # Layer by layer, as `features.cpu_values`: each spill sum gets its terms in layer order.
        for j in range(begin, end):
            elements = in_elements[j] + params[j] + out_elements[j]
            if op[j] == _ADD:
                elements += in_elements[j]
            elif op[j] == _MUL:
                elements += in_channels[j]
            work = macs[j] if op[j] == CONV else elements
            for r in range(n_roof):
                roofline[r] += max(macs[j], _ROOFLINE[r] * elements)
            size = elements * f.CPU_ELEMENT_BYTES
            for c in range(n_spill):
                if size > _SPILL[c]:
                    spill[c] += float(work) * (float(size - _SPILL[c]) / float(size))
            groups = max(groups_in[j], 1)
            if op[j] != CONV:
                kind = _N_CPU_CONV
            elif groups == 1:
                kind = 0 if kernel[j] == 1 else 2
            else:
                kind = 1 if groups == in_channels[j] and groups == c_out[j] else 2
            if kind < _N_CPU_CONV:
                kind_macs[kind] += macs[j]
            kind_bytes[kind] += size
        for r in range(n_roof):
            out[i, r] = float(roofline[r])
        for c in range(n_spill):
            out[i, n_roof + c] = spill[c]
        at = n_roof + n_spill
        for k in range(_N_CPU_CONV):
            out[i, at + k] = float(kind_macs[k])
        for k in range(_N_CPU_CONV + 1):
            out[i, at + _N_CPU_CONV + k] = float(kind_bytes[k])


_cpu_columns: Any = njit(cache=True)(_cpu_columns_py)


def _kernel_sums_py(
    config: np.ndarray,
    column: np.ndarray,
    counted: np.ndarray,
    unseen: np.ndarray,
    value: np.ndarray,
    out: np.ndarray,
) -> None:
    """Into `out` (zeroed first): per layer, `value` into its config's `column` (−1: none), 1 into its
    `counted` column (−1: none) and, for an `unseen` shape, `value` into the last column — the kernel
    columns' sums (exact: every value an integer below 2**53)."""
    out[:, :] = 0.0
    last = out.shape[1] - 1
    for j in range(config.shape[0]):
        i = config[j]
        if column[j] >= 0:
            out[i, column[j]] += value[j]
        if counted[j] >= 0:
            out[i, counted[j]] += 1.0
        if unseen[j]:
            out[i, last] += value[j]


kernel_sums: Any = njit(cache=True)(_kernel_sums_py)


def warm_up() -> None:
    """Compile (or load from numba's disk cache) before the first request needs the kernel."""
    one = np.ones(1, dtype=np.int64)
    out = np.zeros((1, V3_WIDTH + V5_WIDTH))
    _columns(
        np.zeros(1, dtype=np.int64), 1, one * CONV, one, one, one, one, one, one, one, one, one, one, out, 0,
        V3_WIDTH,
    )  # fmt: skip
    kernel_sums(one * 0, one * 0, one * 0, np.zeros(1, dtype=bool), np.ones(1), out)
    _cpu_columns(
        np.zeros(1, dtype=np.int64),
        1,
        one * CONV,
        one,
        one,
        one,
        one,
        one,
        one,
        one,
        one,
        np.zeros((1, V6_WIDTH)),
    )


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


_ceil_jit = njit(cache=True, inline="always")(_ceil)


def _columns_py(
    starts: np.ndarray,
    n_layers: int,
    op: np.ndarray,
    c_out: np.ndarray,
    h_out: np.ndarray,
    w_out: np.ndarray,
    c_in: np.ndarray,
    h_in: np.ndarray,
    w_in: np.ndarray,
    kernel: np.ndarray,
    stride: np.ndarray,
    groups_in: np.ndarray,
    table_macs: np.ndarray,
    out: np.ndarray,
    v3_at: int,
    v5_at: int,
) -> None:
    n = starts.shape[0]
    n_ladder, n_blocks, n_simd = _LADDER.shape[0], _BLOCKS.shape[0], _SIMD.shape[0]
    counts = np.zeros(_N_VARIANTS, dtype=np.int64)
    variant_padded = np.zeros(_N_VARIANTS, dtype=np.float64)
    waves = np.zeros((_N_VARIANTS, n_ladder), dtype=np.float64)
    blocked = np.zeros(n_blocks, dtype=np.int64)
    simd = np.zeros(n_simd, dtype=np.int64)
    for i in range(n):
        begin = starts[i]
        end = starts[i + 1] if i + 1 < n else n_layers
        counts[:] = 0
        variant_padded[:] = 0.0
        waves[:, :] = 0.0
        blocked[:] = 0
        simd[:] = 0
        strided_conv = in_slices_total = out_slices_total = padded_total = macs = 0
        invocations = workgroups_total = input_bytes = weight_bytes = output_bytes = texel_reads = 0
        pixels_total = depth_total = 0
        strided5 = macs5 = invocations5 = tiled = 0
        for j in range(begin, end):
            conv = op[j] == CONV
            co, ho, wo, ci = c_out[j], h_out[j], w_out[j], c_in[j]
            k = kernel[j] if conv else 1
            groups = max(groups_in[j], 1)
            depthwise = conv and groups != 1 and groups == ci and groups == co
            if not conv:
                slot = _ELEMENTWISE
            elif groups == 1:
                slot = _POINTWISE if k == 1 else _GENERAL
            elif not depthwise:
                slot = _GROUPED
            elif k == 3:
                slot = _DEPTHWISE_3
            elif k == 5:
                slot = _DEPTHWISE_5
            else:
                slot = _DEPTHWISE
            pointwise = slot == _POINTWISE
            tile = f.POINTWISE_TILE if pointwise else 1
            out_slices = _ceil_jit(co, _SLICE)
            in_slices = _ceil_jit(ci, _SLICE)
            depth_slices = _ceil_jit(ci // groups, _SLICE) if conv and not depthwise else 1
            padded = out_slices * _SLICE * ho * wo * depth_slices * _SLICE * k * k
            if depthwise:
                padded = padded // _SLICE
            if not conv:
                padded = 0
            x_tiles, y_tiles = _ceil_jit(wo, tile), _ceil_jit(ho, tile)
            workgroups = _ceil_jit(x_tiles, _WX) * _ceil_jit(y_tiles, _WY) * _ceil_jit(out_slices, _WZ)
            depth = k * k * depth_slices * tile * tile
            # Version 3.
            if conv:
                counts[slot] += 1
                macs += table_macs[j]
                weight_bytes += out_slices * depth_slices * k * k * _SLICE * _TEXEL
                texel_reads += out_slices * ho * wo * k * k * depth_slices * _TEXEL
                if stride[j] > 1:
                    strided_conv += 1
            variant_padded[slot] += float(padded)
            for p in range(n_ladder):
                waves[slot, p] += float(depth * _ceil_jit(workgroups, _LADDER[p]))
            in_slices_total += in_slices
            out_slices_total += out_slices
            padded_total += padded
            invocations += out_slices * x_tiles * y_tiles
            workgroups_total += workgroups
            input_bytes += in_slices * h_in[j] * w_in[j] * _TEXEL
            output_bytes += out_slices * ho * wo * _TEXEL
            pixels_total += ho * wo
            depth_total += depth
            # Version 5.
            depth5 = 1 if depthwise else ci // groups
            pixels = ho * wo * k * k
            per_dispatch = out_slices * _ceil_jit(wo, tile) * _ceil_jit(ho, tile)
            invocations5 += per_dispatch
            for b in range(n_simd):
                simd[b] += _ceil_jit(per_dispatch, _SIMD[b]) * _SIMD[b]
            tiled += _ceil_jit(ho, f.PIXEL_TILE) * _ceil_jit(wo, f.PIXEL_TILE) * f.PIXEL_TILE * f.PIXEL_TILE
            if conv:
                for b in range(n_blocks):
                    block = _BLOCKS[b]
                    depth_blocked = depth5 if depthwise else _ceil_jit(depth5, block) * block
                    blocked[b] += pixels * _ceil_jit(co, block) * block * depth_blocked
                macs5 += pixels * co * depth5
                if stride[j] > 1:
                    padded5 = pixels * out_slices * _SLICE * (1 if depthwise else _ceil_jit(depth5, 4) * 4)
                    strided5 += padded5 * stride[j] * stride[j]
        moved = input_bytes + weight_bytes + output_bytes
        row = out[i]
        if v3_at >= 0:
            c = v3_at
            for s in range(_N_CONV):
                row[c] = float(counts[s])
                c += 1
            for s in range(_N_CONV):
                row[c] = variant_padded[s]
                c += 1
            row[c] = float(end - begin)  # one dispatch per layer
            row[c + 1] = float(strided_conv)
            row[c + 2] = float(in_slices_total)
            row[c + 3] = float(out_slices_total)
            row[c + 4] = float(padded_total)
            row[c + 5] = float(padded_total) / float(macs) if macs > 0 else 1.0
            row[c + 6] = float(invocations)
            row[c + 7] = float(workgroups_total)
            fill = workgroups_total * _WX * _WY * _WZ
            row[c + 8] = float(fill) / float(invocations) if invocations > 0 else 0.0
            row[c + 9] = float(input_bytes)
            row[c + 10] = float(weight_bytes)
            row[c + 11] = float(output_bytes)
            row[c + 12] = float(texel_reads)
            row[c + 13] = float(moved)
            row[c + 14] = float(padded_total) / float(moved) if moved > 0 else 0.0
            row[c + 15] = float(pixels_total)
            row[c + 16] = float(depth_total)
            c += 17
            for s in range(_N_VARIANTS):
                for p in range(n_ladder):
                    row[c] = waves[s, p]
                    c += 1
        if v5_at >= 0:
            row[v5_at + 0] = float(strided5)
            for b in range(n_blocks):
                row[v5_at + 1 + b] = float(blocked[b])
            for b in range(n_blocks):
                row[v5_at + 1 + n_blocks + b] = float(macs5) / float(blocked[b]) if blocked[b] > 0 else 1.0
            for b in range(n_simd):
                row[v5_at + 1 + 2 * n_blocks + b] = (
                    float(invocations5) / float(simd[b]) if simd[b] > 0 else 1.0
                )
            row[v5_at + 1 + 2 * n_blocks + n_simd] = float(pixels_total) / float(tiled) if tiled > 0 else 1.0


_columns: Any = njit(cache=True)(_columns_py)
