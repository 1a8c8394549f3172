"""``mbconv``: the inverted-residual block of MobileNetV2/V3, ProxylessNAS, FBNet and Once-for-All.

Layout for input ``1×cin×H×W`` with ``hidden = cin * expand_ratio`` (batch norm folded into conv
biases, as deployed):

- ``expand``: conv 1×1 cin→hidden + activation (skipped when ``expand_ratio == 1``);
- ``dw``: depthwise conv k×k, stride s, groups = hidden, + activation;
- ``se`` (optional, MobileNetV3/OFA style): GlobalAveragePool → conv 1×1 hidden→r + ReLU →
  conv 1×1 r→hidden → HardSigmoid → Mul, with ``r = make_divisible(hidden // 4, 8)``;
- ``project``: conv 1×1 hidden→cout, linear;
- identity skip ``+ input`` when ``stride == 1 and cin == cout``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from profilers.blocks.family import BlockFamily, choices
from profilers.blocks.graph import CostTracer, Shape

MAX_CHANNELS = 1024
MAX_SIDE = 1024


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` without losing more than 10 % (MobileNet's rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class MBConvConfig(BaseModel):
    """One inverted-residual block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cin: StrictInt = Field(ge=1, le=MAX_CHANNELS)
    cout: StrictInt = Field(ge=1, le=MAX_CHANNELS)
    height: StrictInt = Field(ge=1, le=MAX_SIDE)
    width: StrictInt = Field(ge=1, le=MAX_SIDE)
    expand_ratio: StrictInt = Field(default=6, ge=1, le=8)
    kernel: Literal[3, 5, 7] = 3
    stride: Literal[1, 2] = 1
    se: bool = False
    activation: Literal["relu", "hswish"] = "relu"

    @property
    def hidden(self) -> int:
        """Channels after expansion."""
        return self.cin * self.expand_ratio

    @property
    def has_skip(self) -> bool:
        """Identity shortcut exists only when the shapes match."""
        return self.stride == 1 and self.cin == self.cout


class MBConvFamily(BlockFamily):
    """The ``mbconv`` family."""

    name: ClassVar[str] = "mbconv"
    config_model: ClassVar[type[BaseModel]] = MBConvConfig
    max_depth: ClassVar[int] = 1

    def input_shape(self, config: MBConvConfig) -> Shape:
        """``1×cin×H×W``."""
        return (1, config.cin, config.height, config.width)

    def describe(self, config: MBConvConfig, builder: CostTracer) -> str:
        """Expand, depthwise, squeeze-excite, project, skip."""
        act = "relu" if config.activation == "relu" else "hardswish"
        hidden = config.hidden
        x = builder.input
        if config.expand_ratio != 1:
            x = builder.conv(x, "expand.conv", hidden, 1)
            x = builder.activation(x, "expand.act", act)
        x = builder.conv(x, "dw.conv", hidden, config.kernel, stride=config.stride, groups=hidden)
        x = builder.activation(x, "dw.act", act)
        if config.se:
            reduced = make_divisible(hidden // 4, 8)
            s = builder.global_average_pool(x, "se.pool")
            s = builder.conv(s, "se.reduce", reduced, 1)
            s = builder.activation(s, "se.relu", "relu")
            s = builder.conv(s, "se.expand", hidden, 1)
            s = builder.activation(s, "se.gate", "hardsigmoid")
            x = builder.mul(x, s, "se.scale")
        x = builder.conv(x, "project.conv", config.cout, 1)
        if config.has_skip:
            x = builder.add(x, builder.input, "skip")
        return x

    def search_space_example(self) -> dict[str, Any]:
        """An OFA-like stage: 24→24 or 24→32 channels at 56×56, ratios {3,4,6}, kernels {3,5,7}."""
        return {
            "cin": {"choices": [24]},
            "cout": {"choices": [24, 32]},
            "height": {"choices": [56]},
            "width": {"choices": [56]},
            "expand_ratio": {"choices": [3, 4, 6]},
            "kernel": {"choices": [3, 5, 7]},
            "stride": {"choices": [1, 2]},
            "se": {"choices": [False, True]},
            "activation": {"choices": ["relu", "hswish"]},
        }

    def sample(self, rng: random.Random, space: Mapping[str, Any] | None = None) -> MBConvConfig:
        """Draw each field independently from its choices."""
        space = space or self.search_space_example()
        data = {name: rng.choice(choices(space, name)) for name in MBConvConfig.model_fields if name in space}
        return MBConvConfig.model_validate(data)
