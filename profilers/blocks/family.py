"""The interface every search-space family implements, and the helpers its families share.

A family owns a pydantic config model and one ``describe(config, builder)`` method that lays the
block out on a builder: :class:`~profilers.blocks.graph.CostTracer` for cost counts (shapes and
arithmetic only), its subclass :class:`~profilers.blocks.graph.GraphBuilder` for ONNX bytes — both from
that one description.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from profilers.blocks.graph import Costs, CostTracer, GraphBuilder, Shape


class BlockConfigError(ValueError):
    """A family name or a config that cannot be turned into a block."""


class BlockFamily(ABC):
    """A search-space family: validated configs → deterministic ONNX bytes and cost counts."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    max_depth: ClassVar[int]

    def parse(self, data: Mapping[str, Any] | BaseModel) -> BaseModel:
        """Validate a dict (or re-validate a model) into this family's config; raises ValidationError."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return self.config_model.model_validate(data)

    @abstractmethod
    def input_shape(self, config: Any) -> Shape:
        """The NCHW input shape of the block."""

    @abstractmethod
    def describe(self, config: Any, builder: CostTracer) -> str:
        """Lay the block out on ``builder``; return the name of the output tensor."""

    @abstractmethod
    def search_space_example(self) -> dict[str, Any]:
        """A small default sampling space: ``{field: {"choices": [...]}}`` (list fields add ``length``)."""

    @abstractmethod
    def sample(self, rng: random.Random, space: Mapping[str, Any] | None = None) -> BaseModel:
        """Draw one valid config from ``space`` (default: :meth:`search_space_example`)."""

    def to_onnx(self, config: Any) -> bytes:
        """Serialised ONNX model of the block; same config → same bytes."""
        config = self._ensure(config)
        builder = GraphBuilder(self.name, self.input_shape(config), with_weights=True)
        output = self.describe(config, builder)
        return builder.to_bytes(output)

    def costs(self, config: Any) -> Costs:
        """FLOPs (2×MACs), params and activation bytes, per layer and total (no ONNX built, no weights)."""
        config = self._ensure(config)
        tracer = CostTracer(self.name, self.input_shape(config))
        self.describe(config, tracer)
        return tracer.costs()

    def _ensure(self, config: Any) -> BaseModel:
        if isinstance(config, self.config_model):
            return config
        return self.parse(config)


def odd_kernel(value: int) -> int:
    """A kernel size check for every family's validator: same padding needs a centre tap."""
    if value % 2 == 0:
        raise ValueError("kernel must be odd (same padding needs a centre tap)")
    return value


def choices(space: Mapping[str, Any], field: str) -> list[Any]:
    """The ``choices`` list of one field of a sampling space, with a clear error when missing."""
    try:
        values = list(space[field]["choices"])
    except (KeyError, TypeError) as exc:
        raise BlockConfigError(f"search space field {field!r} needs a non-empty 'choices' list") from exc
    if not values:
        raise BlockConfigError(f"search space field {field!r} has an empty 'choices' list")
    return values
