"""Virtual phones on free ports and device sessions to them, shared by the adb tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from profilers.adb import DeviceSession
from profilers.virtual_phone import VirtualPhone


@pytest.fixture(scope="session")
def adb_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA key for the whole test session (generating one takes a moment)."""
    return tmp_path_factory.mktemp("adbkey") / "adbkey"


@pytest.fixture
def start_phone(tmp_path: Path) -> Iterator[Callable[..., VirtualPhone]]:
    """Start virtual phones (``profile=…``, ``rooted=…``, ``faults=…``); all are stopped at teardown."""
    phones: list[VirtualPhone] = []

    def start(profile: str = "virtual-flagship", **kwargs: Any) -> VirtualPhone:
        phone = VirtualPhone(profile=profile, state_dir=tmp_path / f"phone{len(phones)}", port=0, **kwargs)
        phone.start()
        phones.append(phone)
        return phone

    yield start
    for phone in phones:
        phone.stop()


@pytest.fixture
def phone(start_phone: Callable[..., VirtualPhone]) -> VirtualPhone:
    """A healthy rooted 3-cluster virtual flagship."""
    return start_phone()


@pytest.fixture
def connect(adb_key: Path) -> Iterator[Callable[..., DeviceSession]]:
    """Open device sessions to a virtual phone; all are closed at teardown."""
    sessions: list[DeviceSession] = []

    def open_session(phone: VirtualPhone, **kwargs: Any) -> DeviceSession:
        kwargs.setdefault("command_timeout_s", 30.0)
        kwargs.setdefault("connect_timeout_s", 5.0)
        session = DeviceSession.connect(f"127.0.0.1:{phone.port}", key_path=adb_key, **kwargs)
        sessions.append(session)
        return session

    yield open_session
    for session in sessions:
        session.close()


@pytest.fixture
def session(phone: VirtualPhone, connect: Callable[..., DeviceSession]) -> DeviceSession:
    """A session to the healthy flagship."""
    return connect(phone)
