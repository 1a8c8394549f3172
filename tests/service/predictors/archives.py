"""Snapshot archives taken apart and put back together, for tests that tamper with them."""

from __future__ import annotations

import io
import tarfile


def members(archive: bytes) -> dict[str, bytes]:
    """Each member's bytes by name."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def pack(contents: dict[str, bytes]) -> bytes:
    """A tar archive of these members, in this order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
