"""Samplers that turn a search space into configs: `grid`, `random` and `sobol`, all seeded and deterministic.

A space maps config fields to value specs: a constant, `{"choices": [...]}` or an integer range
`{"min", "max", "step"?}`; a list field (sr_block's `widths`) adds `"length"` (a constant, `{"min","max"}`
or `{"choices"}`), and each position draws from the same values. Every field becomes one or more
dimensions: the grid is a mixed-radix number over them (so `n` evenly spaced points need no enumeration of
a huge product), random draws each dimension uniformly, sobol maps a scrambled Sobol' point onto them.
`uncertainty` is drawn here as `candidates` random configs; the per-device ranking by the active
predictor's band is in `service.jobs.service` (it needs a session).
Draws the family rejects (e.g. a residual whose last width differs from the head's) are skipped and
duplicates are dropped, so a sampler may return fewer than `n` configs from a small space.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from profilers.blocks import BlockFamily, config_hash
from service.jobs.schemas import SamplerSpec
from service.problems import InvalidInputError

_LOC = ["body", "sampler", "space"]
_MAX_VALUES = 100_000
#: Random and Sobol' draws per wanted config before giving up on reaching `n` distinct valid ones.
_DRAWS_PER_CONFIG = 8


@dataclass(frozen=True)
class _Field:
    """One field of the space: its values and, for list fields, the allowed lengths."""

    name: str
    values: list[Any]
    lengths: list[int] | None = None

    @property
    def options(self) -> int:
        """How many distinct settings of this field exist (a list field: every length, every position)."""
        if self.lengths is None:
            return len(self.values)
        return sum(len(self.values) ** length for length in self.lengths)

    def option(self, index: int) -> Any:
        """The `index`-th setting in grid order (list fields: shorter lists first, last position fastest)."""
        if self.lengths is None:
            return self.values[index]
        base = len(self.values)
        for length in self.lengths:
            block = base**length
            if index < block:
                digits = []
                for _ in range(length):
                    index, digit = divmod(index, base)
                    digits.append(self.values[digit])
                return digits[::-1]
            index -= block
        raise IndexError(index)


def _values(name: str, spec: dict[str, Any]) -> list[Any]:
    loc: list[str | int] = [*_LOC, name]
    if "choices" in spec:
        values = spec["choices"]
        if not isinstance(values, list) or not values:
            raise InvalidInputError.at([*loc, "choices"], "choices must be a non-empty list")
        return list(values)
    if "min" in spec or "max" in spec:
        try:
            low, high, step = int(spec["min"]), int(spec["max"]), int(spec.get("step", 1))
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError.at(loc, "a range needs integer min and max (and optional step)") from None
        if step < 1 or high < low:
            raise InvalidInputError.at(loc, "a range needs min <= max and step >= 1")
        if (high - low) // step + 1 > _MAX_VALUES:
            raise InvalidInputError.at(loc, f"a range may hold at most {_MAX_VALUES} values")
        return list(range(low, high + 1, step))
    raise InvalidInputError.at(loc, "give choices: [...] or an integer range min/max")


def _lengths(name: str, spec: Any) -> list[int]:
    loc: list[str | int] = [*_LOC, name, "length"]
    if isinstance(spec, int) and not isinstance(spec, bool):
        lengths = [spec]
    elif isinstance(spec, dict) and "choices" in spec and isinstance(spec["choices"], list):
        lengths = spec["choices"]
    elif isinstance(spec, dict) and {"min", "max"} <= set(spec):
        lengths = list(range(int(spec["min"]), int(spec["max"]) + 1))
    else:
        raise InvalidInputError.at(loc, "length must be an integer, {min, max} or {choices}")
    if not lengths or not all(isinstance(n, int) and 1 <= n <= 64 for n in lengths):
        raise InvalidInputError.at(loc, "lengths must be integers between 1 and 64")
    return sorted(set(lengths))


def parse_space(family: BlockFamily, space: dict[str, Any]) -> list[_Field]:
    """The fields of `space`, checked against the family's config model (unknown or missing fields: 422)."""
    model_fields = family.config_model.model_fields
    fields: list[_Field] = []
    for name, spec in space.items():
        if name not in model_fields:
            known = ", ".join(sorted(model_fields))
            raise InvalidInputError.at([*_LOC, name], f"{family.name} has no field {name!r}; fields: {known}")
        if not isinstance(spec, dict):
            fields.append(_Field(name, [spec]))
            continue
        unknown = set(spec) - {"choices", "min", "max", "step", "length"}
        if unknown:
            raise InvalidInputError.at([*_LOC, name], f"unknown keys {sorted(unknown)} in a value spec")
        lengths = _lengths(name, spec["length"]) if "length" in spec else None
        fields.append(_Field(name, _values(name, spec), lengths))
    for name, info in model_fields.items():
        if info.is_required() and name not in space:
            raise InvalidInputError.at([*_LOC, name], f"{family.name} needs {name!r}; add it to the space")
    return fields


def planned_count(spec: SamplerSpec, fields: list[_Field]) -> int:
    """An upper bound of the configs `spec` yields per device, computed without drawing any (task cap)."""
    if spec.strategy == "grid":
        size = grid_size(fields)
        return size if spec.n is None else min(spec.n, size)
    return int(spec.n or 0)


def grid_size(fields: list[_Field]) -> int:
    """Points of the full grid (Python ints: no overflow however large)."""
    size = 1
    for field in fields:
        size *= field.options
    return size


def _grid_point(fields: list[_Field], index: int) -> dict[str, Any]:
    point: dict[str, Any] = {}
    for field in reversed(fields):
        index, digit = divmod(index, field.options)
        point[field.name] = field.option(digit)
    return point


def _grid(spec: SamplerSpec, fields: list[_Field]) -> Iterator[dict[str, Any]]:
    size = grid_size(fields)
    if spec.n is None or spec.n >= size:
        indices: Iterator[int] = iter(range(size))
    else:
        # n evenly spaced points of the product, so a subset still spans every field.
        indices = (i * size // spec.n for i in range(spec.n))
    for index in indices:
        yield _grid_point(fields, index)


def _random(spec: SamplerSpec, fields: list[_Field]) -> Iterator[dict[str, Any]]:
    rng = random.Random(spec.seed)
    for _ in range(int(spec.n or 0) * _DRAWS_PER_CONFIG):
        point: dict[str, Any] = {}
        for field in fields:
            if field.lengths is None:
                point[field.name] = rng.choice(field.values)
            else:
                point[field.name] = [rng.choice(field.values) for _ in range(rng.choice(field.lengths))]
        yield point


def _sobol(spec: SamplerSpec, fields: list[_Field]) -> Iterator[dict[str, Any]]:
    from scipy.stats import qmc

    dims = sum(1 if f.lengths is None else 1 + max(f.lengths) for f in fields)
    engine = qmc.Sobol(d=dims, scramble=True, seed=spec.seed)
    with warnings.catch_warnings():
        # Balance properties want powers of two; any n is still a valid low-discrepancy prefix.
        warnings.simplefilter("ignore")
        points = engine.random(int(spec.n or 0) * _DRAWS_PER_CONFIG)

    def pick(values: list[Any], u: float) -> Any:
        return values[min(int(u * len(values)), len(values) - 1)]

    for row in points:
        point: dict[str, Any] = {}
        d = 0
        for field in fields:
            if field.lengths is None:
                point[field.name] = pick(field.values, row[d])
                d += 1
            else:
                length = pick(field.lengths, row[d])
                point[field.name] = [pick(field.values, u) for u in row[d + 1 : d + 1 + length]]
                d += 1 + max(field.lengths)
        yield point


def candidate_configs(family: BlockFamily, spec: SamplerSpec) -> list[BaseModel]:
    """The random candidates an uncertainty sampler ranks: `spec.candidate_count` draws with its seed."""
    draw = spec.model_copy(update={"strategy": "random", "n": spec.candidate_count, "candidates": None})
    return sample_configs(family, draw)


def sample_configs(family: BlockFamily, spec: SamplerSpec) -> list[BaseModel]:
    """Distinct valid configs drawn by `spec` (at most `n`); 422 at the sampler when none is valid."""
    if spec.strategy == "uncertainty":
        raise ValueError("an uncertainty sampler ranks candidate_configs() per device; it has no single draw")
    fields = parse_space(family, spec.space)
    draw = {"grid": _grid, "random": _random, "sobol": _sobol}[spec.strategy]
    wanted = planned_count(spec, fields)
    seen: set[str] = set()
    configs: list[BaseModel] = []
    first_error: str | None = None
    for point in draw(spec, fields):
        try:
            config = family.parse(point)
        except ValidationError as exc:
            first_error = first_error or "; ".join(e["msg"] for e in exc.errors()[:3])
            continue
        digest = config_hash(family.name, config)
        if digest in seen:
            continue
        seen.add(digest)
        configs.append(config)
        if len(configs) >= wanted:
            break
    if not configs:
        raise InvalidInputError.at(
            ["body", "sampler"], f"the space yields no valid {family.name} config ({first_error})"
        )
    return configs
