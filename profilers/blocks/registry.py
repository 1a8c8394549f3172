"""Family name → family object."""

from __future__ import annotations

from types import MappingProxyType

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
