"""``conv``: a single convolution operator — the per-operator lookup table of FBNet-style searches.

The block is one Conv node (with bias, 'same' padding ``kernel // 2``) on a ``1×cin×H×W`` input;
``groups == cin == cout`` gives a depthwise conv.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator

from profilers.blocks.family import BlockFamily, choices, odd_kernel
from profilers.blocks.graph import CostTracer, Shape

MAX_CHANNELS = 2048
MAX_SIDE = 2048


class ConvConfig(BaseModel):
    """One conv operator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kernel: StrictInt = Field(ge=1, le=11)
    cin: StrictInt = Field(ge=1, le=MAX_CHANNELS)
    cout: StrictInt = Field(ge=1, le=MAX_CHANNELS)
    height: StrictInt = Field(ge=1, le=MAX_SIDE)
    width: StrictInt = Field(ge=1, le=MAX_SIDE)
    stride: StrictInt = Field(default=1, ge=1, le=4)
    groups: StrictInt = Field(default=1, ge=1, le=MAX_CHANNELS)

    @field_validator("kernel")
    @classmethod
    def _kernel_odd(cls, value: int) -> int:
        return odd_kernel(value)

    @field_validator("groups")
    @classmethod
    def _groups_divide(cls, value: int, info: ValidationInfo) -> int:
        cin, cout = info.data.get("cin"), info.data.get("cout")
        if cin is not None and cin % value:
            raise ValueError(f"groups ({value}) must divide cin ({cin})")
        if cout is not None and cout % value:
            raise ValueError(f"groups ({value}) must divide cout ({cout})")
        return value


class ConvFamily(BlockFamily):
    """The ``conv`` family."""

    name: ClassVar[str] = "conv"
    config_model: ClassVar[type[BaseModel]] = ConvConfig
    max_depth: ClassVar[int] = 1

    def input_shape(self, config: ConvConfig) -> Shape:
        """``1×cin×H×W``."""
        return (1, config.cin, config.height, config.width)

    def describe(self, config: ConvConfig, builder: CostTracer) -> str:
        """One Conv node."""
        return builder.conv(
            builder.input, "conv", config.cout, config.kernel, stride=config.stride, groups=config.groups
        )

    def search_space_example(self) -> dict[str, Any]:
        """Common mobile operator shapes (``groups`` of -1 means depthwise: ``groups = cin = cout``)."""
        return {
            "kernel": {"choices": [1, 3, 5]},
            "cin": {"choices": [16, 32, 64]},
            "cout": {"choices": [16, 32, 64]},
            "height": {"choices": [28, 56]},
            "width": {"choices": [28, 56]},
            "stride": {"choices": [1, 2]},
            "groups": {"choices": [1, -1]},
        }

    def sample(self, rng: random.Random, space: Mapping[str, Any] | None = None) -> ConvConfig:
        """Draw one operator; a depthwise draw (``groups == -1``) forces ``cout = groups = cin``."""
        space = space or self.search_space_example()
        data = {name: rng.choice(choices(space, name)) for name in ConvConfig.model_fields if name in space}
        if data.get("groups") == -1:
            data["cout"] = data["groups"] = data["cin"]
        return ConvConfig.model_validate(data)
