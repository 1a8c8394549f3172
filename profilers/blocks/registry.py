"""Family name → family object, and the config identity (which needs the family to fill defaults)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from profilers.blocks.conv import ConvFamily
from profilers.blocks.family import BlockConfigError, BlockFamily
from profilers.blocks.mbconv import MBConvFamily
from profilers.blocks.sr_block import SRBlockFamily

FAMILIES: MappingProxyType[str, BlockFamily] = MappingProxyType(
    {family.name: family for family in (SRBlockFamily(), ConvFamily(), MBConvFamily())}
)


def get_family(name: str) -> BlockFamily:
    """The family called ``name``; an unknown name raises BlockConfigError listing the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES))
        raise BlockConfigError(f"unknown block family {name!r}; known families: {known}") from None


def canonical_json(family: str, config: BaseModel | Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON of a config (dicts are validated first so defaults are filled in)."""
    if not isinstance(config, BaseModel):
        config = get_family(family).parse(config)
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def config_hash(family: str, config: BaseModel | Mapping[str, Any]) -> str:
    """sha256 hex of ``"<family>:<canonical json>"`` — the config identity used by DB, cache and predictor."""
    return hashlib.sha256(f"{family}:{canonical_json(family, config)}".encode()).hexdigest()
