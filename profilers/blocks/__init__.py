"""Search-space families as ONNX models with cost counts.

from profilers.blocks import get_family, config_hash
fam = get_family("sr_block")
cfg = fam.parse({"scale": 2, "height": 360, "width": 640, "widths": [16, 16, 16]})
model_bytes = fam.to_onnx(cfg)            # deterministic: same config → same sha256
fam.costs(cfg).flops                      # 2 × MACs; see graph.py for what is counted
config_hash("sr_block", cfg)              # the config identity used by DB, cache, predictor
"""

from __future__ import annotations

from profilers.blocks.conv import ConvConfig
from profilers.blocks.family import BlockConfigError, BlockFamily
from profilers.blocks.graph import Costs, LayerCost
from profilers.blocks.mbconv import MBConvConfig
from profilers.blocks.registry import FAMILIES, canonical_json, config_hash, get_family
from profilers.blocks.sr_block import SRBlockConfig

__all__ = [
    "FAMILIES",
    "BlockConfigError",
    "BlockFamily",
    "ConvConfig",
    "Costs",
    "LayerCost",
    "MBConvConfig",
    "SRBlockConfig",
    "canonical_json",
    "config_hash",
    "get_family",
]
