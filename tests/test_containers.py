"""docker-compose.yml and the Dockerfile run `latfarm` commands the CLI really has, with valid arguments."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _compose_commands() -> dict[str, list[str]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {
        name: spec["command"] if isinstance(spec["command"], list) else shlex.split(spec["command"])
        for name, spec in compose["services"].items()
        if "command" in spec and spec.get("build")
    }


def test_compose_has_the_farm() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "api", "worker"} <= set(services)
    assert "healthcheck" in services["postgres"] and compose["volumes"]
    phones = [c for c in _compose_commands().values() if c[1:2] == ["phone"]]
    assert len(phones) >= 2


@pytest.mark.parametrize("service_name", sorted(_compose_commands()))
def test_compose_command_parses_with_the_cli(service_name: str) -> None:
    command = _compose_commands()[service_name]
    assert command[0] == "latfarm"
    build_parser().parse_args(command[1:])  # exits (SystemExit) on an unknown command or argument


def test_dockerfile_default_command_parses_with_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd_line = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    command = yaml.safe_load(cmd_line.removeprefix("CMD "))
    assert command[:2] == ["latfarm", "serve"]
    build_parser().parse_args(command[1:])
    assert "USER latfarm" in dockerfile and dockerfile.count("FROM ") >= 2


def test_compose_phones_are_reachable_only_from_the_farm() -> None:
    """Virtual phones are unauthenticated ADB servers: on an internal network, never published on the host."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services, networks = compose["services"], compose.get("networks", {})
    phones = [name for name, command in _compose_commands().items() if command[1:2] == ["phone"]]
    for name in phones:
        spec = services[name]
        assert "ports" not in spec and spec.get("network_mode") is None, name
        assert spec.get("networks"), f"{name} would join the default network"
        assert all((networks.get(n) or {}).get("internal") is True for n in spec["networks"]), name
    phone_nets = {n for name in phones for n in services[name]["networks"]}
    for client in ("api", "worker"):
        assert phone_nets <= set(services[client].get("networks", [])), client


def test_dockerfile_copies_every_package_the_wheel_ships() -> None:
    """The image installs `.` from what the Dockerfile copies: every top-level package must be there (the demo
    imports its search from `service.sr_search`, nothing from `examples/`)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    top_level = {pattern.rstrip("*").split(".")[0] for pattern in include["include"]}
    copied = {
        line.split()[1].rstrip("/")
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
    }
    assert top_level <= copied, top_level - copied
    assert (ROOT / "service" / "sr_search.py").exists()
