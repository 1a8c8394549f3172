"""CPU clusters from cpufreq sysfs, and pinning one cluster to one frequency with a guaranteed restore.

A cluster is a cpufreq policy (``/sys/devices/system/cpu/cpufreq/policyN``, N = its first CPU) with
``related_cpus``, ``scaling_available_frequencies`` and ``scaling_available_governors``. Clusters are
named by ascending maximum frequency: two → ``little``, ``big``; three → ``little``, ``mid``, ``big``;
more → ``cluster0``…; ``policyN`` is accepted everywhere too.

Pinning (root only): save governor/min/max; widen max to the top of the table, then min = max = f
(that order is valid whatever the saved limits were); then governor ``userspace`` + ``scaling_setspeed``
or, without userspace, ``performance`` (with min = max it runs at f). ``scaling_cur_freq`` is read back;
a mismatch (e.g. thermal capping) is reported, not hidden. The saved state is restored on exit —
on success, on exceptions and on KeyboardInterrupt alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydantic import BaseModel

from profilers.adb.errors import FrequencyPinError, ProfilerError
from profilers.adb.session import DeviceSession
from profilers.adb.sysfs import has_su, is_root_shell, list_dir, read_file, read_files, write_file

CPUFREQ_ROOT = "/sys/devices/system/cpu/cpufreq"


class Cluster(BaseModel):
    """One CPU cluster (one cpufreq policy)."""

    name: str
    policy: str
    cpus: list[int]
    frequencies_khz: list[int]
    governors: list[str]

    @property
    def path(self) -> str:
        """The policy's sysfs directory."""
        return f"{CPUFREQ_ROOT}/{self.policy}"

    @property
    def taskset_mask(self) -> str:
        """Hex affinity mask of the cluster's CPUs, as ``taskset`` takes it."""
        return format(sum(1 << cpu for cpu in self.cpus), "x")


def _parse_cpus(text: str) -> list[int]:
    cpus: set[int] = set()
    for part in text.replace(",", " ").split():
        if "-" in part:
            a, b = part.split("-", 1)
            cpus.update(range(int(a), int(b) + 1))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def _cluster_names(count: int) -> list[str]:
    if count == 2:
        return ["little", "big"]
    if count == 3:
        return ["little", "mid", "big"]
    return [f"cluster{i}" for i in range(count)]


def discover_clusters(session: DeviceSession) -> list[Cluster]:
    """The phone's clusters, sorted and named by ascending maximum frequency."""
    policies = sorted(
        (p for p in list_dir(session, CPUFREQ_ROOT) if p.startswith("policy") and p[6:].isdigit()),
        key=lambda p: int(p[6:]),
    )
    files = (
        "related_cpus",
        "scaling_available_frequencies",
        "scaling_available_governors",
        "cpuinfo_max_freq",
    )
    paths = [f"{CPUFREQ_ROOT}/{p}/{f}" for p in policies for f in files]
    values = read_files(session, paths)
    raw = []
    for p in policies:
        base = f"{CPUFREQ_ROOT}/{p}"
        cpus_text = values[f"{base}/related_cpus"]
        if not cpus_text:
            continue
        freqs = sorted({int(f) for f in (values[f"{base}/scaling_available_frequencies"] or "").split()})
        if not freqs and values[f"{base}/cpuinfo_max_freq"]:
            freqs = [int(values[f"{base}/cpuinfo_max_freq"] or 0)]
        governors = (values[f"{base}/scaling_available_governors"] or "").split()
        raw.append((p, _parse_cpus(cpus_text), freqs, governors))
    raw.sort(key=lambda r: (max(r[2], default=0), int(r[0][6:])))
    names = _cluster_names(len(raw))
    return [
        Cluster(name=name, policy=p, cpus=cpus, frequencies_khz=freqs, governors=govs)
        for name, (p, cpus, freqs, govs) in zip(names, raw, strict=True)
    ]


def resolve_cluster(clusters: list[Cluster], name: str) -> Cluster:
    """The cluster called ``name`` (or ``policyN``); FrequencyPinError listing the known names."""
    for cluster in clusters:
        if name in (cluster.name, cluster.policy):
            return cluster
    known = ", ".join(f"{c.name} ({c.policy})" for c in clusters) or "none"
    raise FrequencyPinError(f"unknown cluster {name!r}; this phone has: {known}")


def read_current_khz(session: DeviceSession, cluster: Cluster) -> int | None:
    """``scaling_cur_freq`` of the cluster now (None when unreadable)."""
    value = read_file(session, f"{cluster.path}/scaling_cur_freq")
    return int(value) if value and value.isdigit() else None


@dataclass
class PinnedClock:
    """What a pin of a clock (a CPU cluster's, a GPU's or NPU's) achieved: requested and read-back kHz."""

    requested_khz: int
    observed_khz: int | None
    saved: dict[str, str] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """True when the clock read back after pinning was the requested one."""
        return self.observed_khz == self.requested_khz


@dataclass
class PinnedFrequency(PinnedClock):
    """A CPU cluster's pin (``scaling_cur_freq`` read back)."""

    cluster: Cluster = field(kw_only=True)


def root_mode(session: DeviceSession) -> str | None:
    """``"shell"`` when adb runs as root, ``"su"`` when ``su`` works, ``None`` on an unrooted phone."""
    if is_root_shell(session):
        return "shell"
    if has_su(session):
        return "su"
    return None


@contextmanager
def pin_frequency(
    session: DeviceSession,
    cluster: Cluster | str,
    khz: int,
    *,
    clusters: list[Cluster] | None = None,
    root: str | None = "detect",
) -> Iterator[PinnedFrequency]:
    """Pin ``cluster`` to ``khz`` for the ``with`` body and restore governor/min/max afterwards."""
    if isinstance(cluster, str):
        cluster = resolve_cluster(clusters if clusters is not None else discover_clusters(session), cluster)
    if khz not in cluster.frequencies_khz:
        raise FrequencyPinError(
            f"{khz} kHz is not a frequency of cluster {cluster.name}; available: {cluster.frequencies_khz}"
        )
    mode = root_mode(session) if root == "detect" else root
    if mode is None:
        raise FrequencyPinError("pinning needs root; this phone has neither a root adbd nor su")
    use_su = mode == "su"
    base = cluster.path
    saved_paths = [f"{base}/scaling_governor", f"{base}/scaling_min_freq", f"{base}/scaling_max_freq"]
    saved_values = read_files(session, saved_paths)
    if any(v is None for v in saved_values.values()):
        raise FrequencyPinError(f"cannot read the cpufreq state of {cluster.policy}: {saved_values}")
    saved = {path.rsplit("/", 1)[1]: str(value) for path, value in saved_values.items()}

    def restore() -> None:
        write_file(session, f"{base}/scaling_governor", saved["scaling_governor"], use_su=use_su)
        write_file(session, f"{base}/scaling_max_freq", cluster.frequencies_khz[-1], use_su=use_su)
        write_file(session, f"{base}/scaling_min_freq", saved["scaling_min_freq"], use_su=use_su)
        write_file(session, f"{base}/scaling_max_freq", saved["scaling_max_freq"], use_su=use_su)

    try:
        write_file(session, f"{base}/scaling_max_freq", cluster.frequencies_khz[-1], use_su=use_su)
        write_file(session, f"{base}/scaling_min_freq", khz, use_su=use_su)
        write_file(session, f"{base}/scaling_max_freq", khz, use_su=use_su)
        if "userspace" in cluster.governors:
            write_file(session, f"{base}/scaling_governor", "userspace", use_su=use_su)
            write_file(session, f"{base}/scaling_setspeed", khz, use_su=use_su)
        else:
            write_file(session, f"{base}/scaling_governor", "performance", use_su=use_su)
        pinned = PinnedFrequency(khz, read_current_khz(session, cluster), saved, cluster=cluster)
    except BaseException as exc:
        restore_after(restore, exc, "the cpufreq state")
        raise
    try:
        yield pinned
    except BaseException as exc:
        restore_after(restore, exc, "the cpufreq state")
        raise
    restore()


def restore_after(restore: Callable[[], None], exc: BaseException, what: str) -> None:
    """Run `restore` while `exc` (an error or Ctrl-C) propagates; a failing restore becomes a note on it.

    A failing restore must not mask the original error; `what` names the restored state in the note.
    """
    try:
        restore()
    except ProfilerError as restore_exc:
        exc.add_note(f"latfarm: restoring {what} also failed: {restore_exc}")
