"""What the one-config featuriser (`features`) and the batch one (`batch_features`) both build columns from:
how a config field becomes columns (`FieldSpec`), the mobile-GPU constants of the accelerator columns and the
CPU constants of the roofline and cache-spill columns.

Kept apart so that `batch_features` needs nothing from `features` (which dispatches to it): the two paths
share these facts instead of importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Channels one texel of a mobile GPU tensor holds (RGBA): every channel count is padded to a multiple.
CHANNEL_SLICE = 4
#: Bytes of a tensor element on the accelerator: mobile GPU runtimes keep activations and weights in fp16.
ACCELERATOR_ELEMENT_BYTES = 2
#: A dispatch's work-group: output columns × rows × channel slices (4·4·4 = 64 invocations, a common size).
WORKGROUP = (4, 4, 4)
#: Output pixels a pointwise (1×1) invocation computes: a 2×2 tile, as `conv2d_pw_2x2`-style kernels do.
POINTWISE_TILE = 2

#: Conv kernel variants a mobile GPU runtime picks by shape, in column order.
CONV_VARIANTS = ("pointwise", "depthwise_3x3", "depthwise_5x5", "depthwise", "grouped", "general")
#: Kernel variants of every dispatch: the conv variants, then one for every element-wise op.
VARIANTS = (*CONV_VARIANTS, "elementwise")
#: Work-groups a GPU may run at once, a geometric ladder from a tiny GPU to a big one: a dispatch of W
#: work-groups runs in ⌈W / P⌉ waves, each as long as one invocation's serial loop. The device's P is not
#: known, so the prior holds one waves term per P (and per variant) and its fit picks the mix.
CONCURRENT_WORKGROUPS = (1, 4, 16, 64)
#: Blocks a runtime rounds channels up to (features version 5): a texel holds 4, but kernels commonly
#: compute 8 or 16 output channels per thread (Metal's and Adreno's blocked convs) and a SIMD-group /
#: warp / wave lays 16 or 32 lanes over channels or pixels; a channel count off these blocks wastes lanes.
CHANNEL_BLOCKS = (8, 16, 32)
#: Lanes of a SIMD-group (Apple 32, Mali warp 16, Adreno waves of 64 and more): one dispatch's threads run in
#: whole groups of them, so its pixels are padded to a multiple (features version 5).
SIMD_WIDTHS = (16, 32, 64)
#: Side of the square output tile a threadgroup covers (8×8 pixels, a common Metal/Vulkan shape, version 5).
PIXEL_TILE = 8

#: Bytes of a tensor element on a CPU (features version 6): the blocks run in fp32 there.
CPU_ELEMENT_BYTES = 4
#: Arithmetic intensities (MACs per byte of a layer's working set) of the roofline ladder (features version
#: 6): `cpu:roofline/<β>` sums max(MACs, β·W) over the layers — a layer's time when it is bound either by
#: its MACs or by moving its working set W once, on a machine whose balance (MACs per second its kernels
#: sustain over bytes per second its memory streams) is β. Which β binds is the device's and moves with
#: the clock (MACs per second scale with f, the bandwidth does not), so the prior holds rungs over f and
#: as they are and its fit picks the mix (two of them, `features.PRIOR_ROOFLINE_INTENSITIES`; the trees
#: see all). Phones span this range: an in-order core with 64-bit NEON on one LPDDR3 channel sustains
#: ~0.5–2 GMAC/s against 3.2 GB/s (β ≈ 0.2–0.6), a wide out-of-order core ~10–30 GMAC/s against ~30 GB/s
#: (β ≈ 0.3–1), and weak kernels (depthwise, ~1 MAC per byte; element-wise layers have none and always
#: count β·W) need the higher rungs. Steps of ×4 leave any β within ×2 of a rung. β × 4 bytes is a whole
#: number, so the sums are exact integers.
ROOFLINE_INTENSITIES = (0.25, 1.0, 4.0, 16.0, 64.0)
#: β · `CPU_ELEMENT_BYTES` per rung: what a layer's working-set *elements* are multiplied by in its roofline
#: term (whole numbers, so both featurisers sum integers).
ROOFLINE_MULTIPLIERS = tuple(round(b * CPU_ELEMENT_BYTES) for b in ROOFLINE_INTENSITIES)
#: Cache sizes (bytes) of the spill ladder (features version 6): `cpu:spill/<C>` sums each layer's work
#: times the share of its working set beyond a cache of C, max(0, 1 − C/W) — the law of a working set
#: streaming from DRAM once it outgrows the cache. 32 KiB (an L1) to 2 MiB (a big core's L2 + L3 share) in
#: ×4 steps: a phone's last-level cache per core lies within ×2 of a rung.
SPILL_CACHE_BYTES = (32 * 1024, 128 * 1024, 512 * 1024, 2048 * 1024)

#: CPU kernel kinds of the per-kind work columns (features version 6), as a CPU runtime's kernels differ in
#: MACs a second: pointwise convs are one GEMM, depthwise ones a per-channel loop of ~1 MAC per byte, other
#: convs an im2col (or a direct k×k kernel) before their GEMM; element-wise layers (every MAC-free op:
#: activations, Add, Mul, pooling, DepthToSpace) only move their bytes.
CPU_CONV_KINDS = ("pointwise", "depthwise", "conv")
CPU_KINDS = (*CPU_CONV_KINDS, "elementwise")


@dataclass(frozen=True)
class FieldSpec:
    """How one config field becomes columns: kind is number | bool | category | list."""

    name: str
    kind: str
    choices: tuple[str, ...] = ()
    length: int = 0
