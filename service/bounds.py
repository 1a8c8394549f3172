"""The bounds every request field respects, so a value the schema admits is one both databases can store.

The invariant: whatever passes validation fits its column on SQLite *and* PostgreSQL, so no hostile value
reaches the database to fail there as a 500. Integers stay within a 32-bit INTEGER (PostgreSQL's `integer`
stops at 2³¹−1, SQLite at 2⁶³−1: the narrower wins), a boolean is never taken for an integer, strings hold
no NUL (PostgreSQL's text refuses it), datetimes stay within the years 1-9999 once taken to UTC, floats are
finite (JSON has no NaN/∞, and JSONB refuses them) and free-form JSON objects are NUL-free, finite and at
most `MAX_JSON_DEPTH` deep. Each is one `Annotated` type, shown in the OpenAPI schema (minimum/maximum,
pattern): body integers are strict (`DbInt`, `DbId`, `StrictInt` with a field's own bounds), path and
query integers are parsed from text (`PathId`, `QueryInt`, `Cursor`); `Text` and `Timestamp` serve all.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, ConfigDict, Strict, StrictInt, StringConstraints

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "MAX_JSON_DEPTH",
    "REQUEST_BODY",
    "Cursor",
    "DbId",
    "DbInt",
    "JsonObject",
    "PathId",
    "QueryInt",
    "StrictInt",
    "Text",
    "Timestamp",
    "exactly_one_of",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
#: Free-form JSON (configs, sampler spaces) nests a few levels; deeper is refused, not recursed into.
MAX_JSON_DEPTH = 32

#: The config of every request body: unknown fields refused, floats finite.
REQUEST_BODY = ConfigDict(extra="forbid", allow_inf_nan=False)


#: A body integer that fits an INTEGER column on both engines; strict, so JSON `true` is no integer (Python's
#: bool is an int) and neither is `"5"`. A field with its own, tighter `Field(ge=, le=)` uses `StrictInt`
#: instead: bounds given twice are not combined, the last one given wins.
DbInt = Annotated[int, Strict(), Ge(INT32_MIN), Le(INT32_MAX)]
#: A row id in a body (`device`, `device_id`, `devices`): positive, within an INTEGER column, strict.
DbId = Annotated[int, Strict(), Ge(1), Le(INT32_MAX)]
#: A row id in a path or query (parsed from text, so not strict).
PathId = Annotated[int, Ge(1), Le(INT32_MAX)]
#: An integer query filter (`frequency_khz`) within an INTEGER column.
QueryInt = Annotated[int, Ge(INT32_MIN), Le(INT32_MAX)]
#: A keyset cursor: the last id seen (0 or absent: from the start).
Cursor = Annotated[int, Ge(0), Le(INT32_MAX)]
#: A string without NUL characters (PostgreSQL stores none).
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]


def _representable_in_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        try:
            value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("lies outside the years 1-9999 once taken to UTC") from None
    return value


#: A datetime that stays within the years 1-9999 once taken to UTC, as every stored one is.
Timestamp = Annotated[dt.datetime, AfterValidator(_representable_in_utc)]


def _storable_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings must not contain NUL characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise ValueError("keys must not contain NUL characters")
            _storable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item, depth + 1)


def _checked_object(value: dict[str, Any]) -> dict[str, Any]:
    _storable_json(value)
    return value


#: A free-form JSON object stored in a JSON column: NUL-free, finite, at most `MAX_JSON_DEPTH` deep.
JsonObject = Annotated[dict[str, Any], AfterValidator(_checked_object)]


def exactly_one_of(*rules: dict[str, str]) -> dict[str, Any]:
    """JSON-schema text for "exactly one of these fields is given (non-null)", one rule per dict of
    `{field: JSON type}`; for a model's `json_schema_extra`, beside the validator that enforces it."""
    return {
        "allOf": [
            {
                "oneOf": [
                    {"required": [name], "properties": {name: {"type": kind}}} for name, kind in rule.items()
                ]
            }
            for rule in rules
        ]
    }
