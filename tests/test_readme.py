"""The README keeps its promises: the two commands first, and every setting in the configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = re.search(r"```(?:\w+)?\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert README.index(first_block.group(0)) < README.index("\n## ")


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"\| `(LATFARM_[A-Z0-9_]+)` \|", README))
    expected = {f"LATFARM_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "add these to the README's configuration table"
    assert documented - expected == set(), "the README documents settings that do not exist"
