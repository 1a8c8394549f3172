"""Block configs take integers strictly: JSON `true`, `"3"` or `3.0` is not a kernel size or a width."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from profilers.blocks import get_family

VALID = {
    "conv": {"kernel": 3, "cin": 8, "cout": 8, "height": 8, "width": 8},
    "sr_block": {"scale": 2, "height": 8, "width": 8, "widths": [8, 8]},
    "mbconv": {"cin": 8, "cout": 8, "height": 8, "width": 8},
}


@pytest.mark.parametrize("family", sorted(VALID))
@pytest.mark.parametrize("bad", [True, False, "3", 3.0])
def test_an_integer_field_refuses_non_integers(family: str, bad: object) -> None:
    fam = get_family(family)
    fam.parse(VALID[family])  # the valid one parses
    for field in ("height", "width", "cin"):
        if field not in VALID[family]:
            continue
        with pytest.raises(ValidationError, match=field):
            fam.parse({**VALID[family], field: bad})
    if family == "conv":
        with pytest.raises(ValidationError, match="kernel"):
            fam.parse({**VALID[family], "kernel": bad})
    if family == "sr_block":
        with pytest.raises(ValidationError, match="widths"):
            fam.parse({**VALID[family], "widths": [8, bad]})
