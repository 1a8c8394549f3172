"""``sr_block``: the seed's adaptive super-resolution block (depth and per-layer widths searched).

Layout for input ``1×3×H×W`` and ``widths = [w0, …, wd]`` (depth ``d = len(widths) - 1``):

- ``head``: conv k×k 3→w0 (no activation, as in EDSR/ESPCN-style heads);
- ``body{i}`` for i = 1..d: conv k×k w_{i-1}→w_i, then the activation;
- optional global residual: ``body_out + head`` — only defined when ``w_d == w0``, so a config with
  ``residual: true`` and a different last width is rejected (error on ``residual``);
- ``tail``: conv k×k w_d→3·s², then DepthToSpace(s) → ``1×3×sH×sW``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator

from profilers.blocks.family import BlockFamily, choices, odd_kernel
from profilers.blocks.graph import CostTracer, Shape

MAX_DEPTH = 16
MAX_WIDTH = 512
MAX_SIDE = 2048


class Activation(StrEnum):
    """Activations an SR body layer may use."""

    relu = "relu"
    prelu = "prelu"
    leaky_relu = "leaky_relu"
    hardswish = "hardswish"


class SRBlockConfig(BaseModel):
    """One candidate SR block; ``widths[0]`` is the head width, the rest are body layers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: Literal[2, 3, 4]
    height: StrictInt = Field(ge=1, le=MAX_SIDE, description="input (low-resolution) height")
    width: StrictInt = Field(ge=1, le=MAX_SIDE, description="input (low-resolution) width")
    kernel: StrictInt = Field(default=3, ge=1, le=9)
    widths: list[StrictInt] = Field(min_length=1, max_length=MAX_DEPTH + 1)
    activation: Activation = Activation.relu
    residual: bool = False

    @field_validator("kernel")
    @classmethod
    def _kernel_odd(cls, value: int) -> int:
        return odd_kernel(value)

    @field_validator("widths")
    @classmethod
    def _widths_bounded(cls, value: list[int]) -> list[int]:
        for i, w in enumerate(value):
            if not 1 <= w <= MAX_WIDTH:
                raise ValueError(f"widths[{i}] = {w} must be between 1 and {MAX_WIDTH}")
        return value

    @field_validator("residual")
    @classmethod
    def _residual_shapes(cls, value: bool, info: ValidationInfo) -> bool:
        widths = info.data.get("widths")
        if value and widths and widths[-1] != widths[0]:
            raise ValueError(
                f"a global residual adds the head output to the body output, so widths[-1] "
                f"({widths[-1]}) must equal widths[0] ({widths[0]})"
            )
        return value

    @property
    def depth(self) -> int:
        """Number of body layers."""
        return len(self.widths) - 1


class SRBlockFamily(BlockFamily):
    """The ``sr_block`` family."""

    name: ClassVar[str] = "sr_block"
    config_model: ClassVar[type[BaseModel]] = SRBlockConfig
    max_depth: ClassVar[int] = MAX_DEPTH

    def input_shape(self, config: SRBlockConfig) -> Shape:
        """``1×3×H×W``."""
        return (1, 3, config.height, config.width)

    def describe(self, config: SRBlockConfig, builder: CostTracer) -> str:
        """Head, body, optional residual, tail and pixel shuffle."""
        k = config.kernel
        head = builder.conv(builder.input, "head", config.widths[0], k)
        x = head
        for i, w in enumerate(config.widths[1:], start=1):
            x = builder.conv(x, f"body{i}.conv", w, k)
            x = builder.activation(x, f"body{i}.act", config.activation.value)
        if config.residual:
            x = builder.add(x, head, "residual")
        x = builder.conv(x, "tail", 3 * config.scale * config.scale, k)
        return builder.depth_to_space(x, "upsample", config.scale)

    def search_space_example(self) -> dict[str, Any]:
        """720p output at ×2 from 640×360, 3×3 kernels, 1–8 body layers of 8–64 channels."""
        return {
            "scale": {"choices": [2]},
            "height": {"choices": [360]},
            "width": {"choices": [640]},
            "kernel": {"choices": [3]},
            "widths": {"length": {"min": 2, "max": 9}, "choices": [8, 12, 16, 24, 32, 48, 64]},
            "activation": {"choices": ["relu", "prelu"]},
            "residual": {"choices": [False, True]},
        }

    def sample(self, rng: random.Random, space: Mapping[str, Any] | None = None) -> SRBlockConfig:
        """Draw widths per layer; with ``residual`` the last width is set to the head width."""
        space = space or self.search_space_example()
        length = space["widths"].get("length", {"min": 2, "max": 9})
        n = rng.randint(int(length["min"]), int(length["max"]))
        widths = [rng.choice(choices(space, "widths")) for _ in range(n)]
        residual = bool(rng.choice(choices(space, "residual"))) if "residual" in space else False
        if residual:
            widths[-1] = widths[0]
        data = {
            "scale": rng.choice(choices(space, "scale")),
            "height": rng.choice(choices(space, "height")),
            "width": rng.choice(choices(space, "width")),
            "kernel": rng.choice(choices(space, "kernel")),
            "widths": widths,
            "activation": rng.choice(choices(space, "activation")),
            "residual": residual,
        }
        return SRBlockConfig.model_validate(data)
