"""The phone's sandboxed filesystem: virtual paths map into `state_dir/rootfs`; sysfs/procfs come from soc.py.

Every virtual path is normalised against `/` before use, so `..` can never climb above the phone's root, and
the host path it maps to is resolved (symlinks included) and must stay inside the root: a symlink pointing out
of the sandbox reads as "Permission denied". The shell user may write only below its writable directories;
root (through `su`) may write anywhere in the rootfs and to the writable sysfs files.

Storage quota: the profile's `storage_free_bytes` bounds what the rootfs holds. A push streams into a temp
file whose bytes are *reserved* first (`reserve`, under one lock with every other write), so concurrent
pushes can never together store more than the quota; the reservation turns into the stored file in one
locked step (`commit_push`). A host OSError (a name too long, a full host disk) surfaces as `FsError` with the
errno text a phone would print, never as an unhandled exception.
"""

from __future__ import annotations

import functools
import os
import posixpath
import shutil
import stat as stat_mod
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from profilers.virtual_phone.errors import VirtualPhoneError
from profilers.virtual_phone.soc import Soc
from profilers.virtual_phone.sysfs import SysfsNode, SysfsWriteError

STANDARD_DIRS = ("/data/local/tmp", "/sdcard", "/system/bin", "/vendor", "/proc", "/sys", "/dev", "/etc")
SHELL_WRITABLE = ("/data/local/tmp", "/sdcard")
VIRTUAL_ROOTS = ("/sys", "/proc")
#: Temporary files of pushes in flight carry this in their name (their bytes count through reservations).
PUSH_TMP_MARKER = ".latfarm-push-"

_P = ParamSpec("_P")
_T = TypeVar("_T")


class FsError(VirtualPhoneError):
    """A filesystem operation failed; the message is the errno text a phone would print."""


def _host_errors(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn a host OSError inside `method` into the FsError a phone would report (its errno text)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except FsError:
            raise
        except OSError as exc:
            raise FsError(os.strerror(exc.errno) if exc.errno else "I/O error") from None

    return wrapper


@dataclass(frozen=True)
class FileStat:
    """What `stat`/sync STAT report: full st_mode (type + permissions), size and mtime."""

    mode: int
    size: int
    mtime: int

    @property
    def is_dir(self) -> bool:
        """True for directories."""
        return stat_mod.S_ISDIR(self.mode)


class Filesystem:
    """The phone's files: host-backed below `root`, simulated below /sys and /proc."""

    def __init__(self, root: Path, soc: Soc, storage_free_bytes: int) -> None:
        self.root = root
        self.soc = soc
        self.storage_free_bytes = storage_free_bytes
        self._quota_lock = threading.RLock()
        self._reserved = 0
        self._pushes_in_flight: set[str] = set()  # host paths of their temporary files
        for d in STANDARD_DIRS:
            (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self._root_real = os.path.realpath(root)
        self._virtual_dirs = self._collect_virtual_dirs(soc.nodes)

    @staticmethod
    def _collect_virtual_dirs(nodes: dict[str, SysfsNode]) -> dict[str, set[str]]:
        dirs: dict[str, set[str]] = {}
        for path in nodes:
            parent, name = posixpath.split(path)
            while True:
                dirs.setdefault(parent, set()).add(name)
                if parent == "/":
                    break
                parent, name = posixpath.split(parent)
        return dirs

    # -- paths ----------------------------------------------------------------------------------------------
    @staticmethod
    def normalize(path: str, cwd: str = "/") -> str:
        """An absolute, normalised virtual path; `..` stops at `/`."""
        joined = posixpath.join(cwd, path) if path else cwd
        norm = posixpath.normpath("/" + joined.lstrip("/"))
        return "/" if norm in ("//", "/.") else norm.replace("//", "/")

    def host(self, vpath: str) -> Path:
        """The host path behind a (normalised) virtual path, refusing anything resolving outside the root."""
        candidate = os.path.join(self._root_real, vpath.lstrip("/"))
        real = os.path.realpath(candidate)
        if real != self._root_real and not real.startswith(self._root_real + os.sep):
            raise FsError("Permission denied")
        return Path(candidate)

    def node(self, vpath: str) -> SysfsNode | None:
        """The simulated sysfs/procfs file at `vpath`, if any."""
        return self.soc.nodes.get(vpath)

    @staticmethod
    def _is_virtual(vpath: str) -> bool:
        return any(vpath == r or vpath.startswith(r + "/") for r in VIRTUAL_ROOTS)

    # -- queries --------------------------------------------------------------------------------------------
    @_host_errors
    def stat(self, vpath: str) -> FileStat:
        """Mode, size and mtime; raises FsError("No such file or directory") when missing."""
        if self.node(vpath) is not None:
            return FileStat(stat_mod.S_IFREG | 0o644, 4096, 0)
        if vpath in self._virtual_dirs:
            return FileStat(stat_mod.S_IFDIR | 0o755, 0, 0)
        if self._is_virtual(vpath):
            raise FsError("No such file or directory")
        st = os.stat(self.host(vpath))  # ENOENT, ENOTDIR, ENAMETOOLONG...: FsError (see _host_errors)
        return FileStat(st.st_mode, st.st_size, int(st.st_mtime))

    def exists(self, vpath: str) -> bool:
        """True when `vpath` exists (escapes count as missing)."""
        try:
            self.stat(vpath)
        except FsError:
            return False
        return True

    @_host_errors
    def listdir(self, vpath: str) -> list[str]:
        """Names in a directory, sorted."""
        if vpath in self._virtual_dirs:
            names = set(self._virtual_dirs[vpath])
            if vpath == "/":
                names |= set(os.listdir(self.host("/")))
            return sorted(names)
        st = self.stat(vpath)
        if not st.is_dir:
            raise FsError("Not a directory")
        return sorted(os.listdir(self.host(vpath)))

    @_host_errors
    def read(self, vpath: str) -> bytes:
        """The content of a file."""
        node = self.node(vpath)
        if node is not None:
            return (node.read() + "\n").encode()
        st = self.stat(vpath)
        if st.is_dir:
            raise FsError("Is a directory")
        return self.host(vpath).read_bytes()

    # -- changes --------------------------------------------------------------------------------------------
    def check_writable(self, vpath: str, as_root: bool) -> None:
        """Raise FsError unless the current user may create or change `vpath`."""
        if self._is_virtual(vpath):
            node = self.node(vpath)
            if node is None:
                raise FsError(
                    "No such file or directory" if vpath not in self._virtual_dirs else "Is a directory"
                )
            if not as_root or node.write is None:
                raise FsError("Permission denied")
            return
        if not as_root and not any(vpath == d or vpath.startswith(d + "/") for d in SHELL_WRITABLE):
            raise FsError("Permission denied" if vpath.startswith("/data") else "Read-only file system")
        self.host(vpath)

    @_host_errors
    def write(
        self, vpath: str, data: bytes, *, append: bool = False, as_root: bool = False, mode: int = 0o644
    ) -> None:
        """Create/overwrite (or append to) a file, or store a value into a writable sysfs file."""
        self.check_writable(vpath, as_root)
        node = self.node(vpath)
        if node is not None:
            assert node.write is not None
            try:
                node.write(data.decode(errors="replace").strip())
            except SysfsWriteError as exc:
                raise FsError(str(exc)) from exc
            return
        host = self.host(vpath)
        if host.is_dir():
            raise FsError("Is a directory")
        if not host.parent.is_dir():
            raise FsError("No such file or directory")
        with self._quota_lock:  # the check and the write are one step against concurrent pushes
            growth = len(data) if append or not host.exists() else len(data) - host.stat().st_size
            if growth > self.free_bytes():
                raise FsError("No space left on device")
            new = not host.exists()
            with open(host, "ab" if append else "wb") as fh:
                fh.write(data)
            if new:
                os.chmod(host, mode | 0o600)

    @_host_errors
    def mkdir(self, vpath: str, *, parents: bool = False, as_root: bool = False) -> None:
        """Create a directory (`mkdir -p` with parents=True)."""
        self.check_writable(vpath, as_root)
        host = self.host(vpath)
        if host.exists():
            if parents and host.is_dir():
                return
            raise FsError("File exists")
        if not parents and not host.parent.is_dir():
            raise FsError("No such file or directory")
        host.mkdir(parents=parents, exist_ok=parents)

    @_host_errors
    def remove(self, vpath: str, *, recursive: bool = False, as_root: bool = False) -> None:
        """Delete a file (or, with recursive=True, a whole tree)."""
        self.check_writable(vpath, as_root)
        if vpath in SHELL_WRITABLE or vpath == "/":
            raise FsError("Permission denied")
        host = self.host(vpath)
        if host.is_symlink() or host.is_file():
            host.unlink()
        elif host.is_dir():
            if not recursive:
                raise FsError("Is a directory")
            shutil.rmtree(host)
        else:
            raise FsError("No such file or directory")

    @_host_errors
    def chmod(self, vpath: str, mode: int, *, as_root: bool = False) -> None:
        """Change permission bits (the host keeps owner read/write so the phone can still serve the file)."""
        self.check_writable(vpath, as_root)
        host = self.host(vpath)
        if not host.exists():
            raise FsError("No such file or directory")
        os.chmod(host, (mode & 0o7777) | 0o600)

    def used_bytes(self) -> int:
        """Bytes stored in the rootfs (pushes in flight count through their reservations instead)."""
        total = 0
        with self._quota_lock:
            in_flight = set(self._pushes_in_flight)
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                path = os.path.join(dirpath, f)
                if path in in_flight:  # counted by its reservation (a stored file's name never exempts it)
                    continue
                try:
                    total += os.lstat(path).st_size
                except OSError:
                    continue
        return total

    def free_bytes(self) -> int:
        """What is left of the profile's storage after the files stored and the bytes reserved by pushes."""
        with self._quota_lock:
            return max(0, self.storage_free_bytes - self.used_bytes() - self._reserved)

    def begin_push(self, tmp: Path) -> None:
        """A push starts writing `tmp` (inside the rootfs): its bytes count through `reserve` from now on."""
        with self._quota_lock:
            self._pushes_in_flight.add(str(tmp))

    def reserve(self, minimum: int, ahead: int = 0) -> int:
        """Reserve at least `minimum` bytes (and up to `ahead` more if free) for a push; the bytes granted.

        Raises FsError("No space left on device") when not even `minimum` is free. Reserving ahead keeps a
        push from walking the rootfs for every 64 KiB chunk.
        """
        with self._quota_lock:
            free = self.free_bytes()
            if minimum > free:
                raise FsError("No space left on device")
            granted = min(free, minimum + ahead)
            self._reserved += granted
            return granted

    def end_push(self, tmp: Path, reserved: int) -> None:
        """A push failed or was abandoned: its temporary file goes, and its reservation with it."""
        with self._quota_lock:
            tmp.unlink(missing_ok=True)
            self._pushes_in_flight.discard(str(tmp))
            self._reserved = max(0, self._reserved - reserved)

    @_host_errors
    def commit_push(self, tmp: Path, vpath: str, reserved: int) -> None:
        """Move a finished push's temporary file to `vpath` and drop its reservation, as one step."""
        with self._quota_lock:
            os.replace(tmp, self.host(vpath))
            self._pushes_in_flight.discard(str(tmp))
            self._reserved = max(0, self._reserved - reserved)
