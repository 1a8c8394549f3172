"""What the one-config featuriser (`features`) and the batch one (`batch_features`) both build columns from:
how a config field becomes columns (`FieldSpec`) and the mobile-GPU constants of the accelerator columns.

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


@dataclass(frozen=True)
class FieldSpec:
    """How one config field becomes columns: kind is number | bool | category | list."""

    name: str
    kind: str
    choices: tuple[str, ...] = ()
    length: int = 0
