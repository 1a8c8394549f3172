"""`latfarm campaigns start|show|list|cancel` against the served app (both engines): the rounds table."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from service.cli import main
from service.demo import ServerThread
from tests.service.campaigns.conftest import Drive


@pytest.fixture
def server(app) -> Iterator[ServerThread]:
    with ServerThread(app) as running:
        yield running


def _cli(
    capsys: pytest.CaptureFixture[str], server: ServerThread, token: str, *argv: str
) -> tuple[int, str, str]:
    action, *rest = argv
    status = main(["campaigns", action, "--url", server.url, "--token", token, *rest])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_start_show_list_and_cancel_print_the_rounds(
    capsys: pytest.CaptureFixture[str],
    server: ServerThread,
    make_headers: Callable[..., dict[str, str]],
    make_device: Callable[..., int],
    drive: Drive,
) -> None:
    token = make_headers("profile", "read")["Authorization"].removeprefix("Bearer ")
    device = make_device()
    status, out, err = _cli(capsys, server, token, "start", "--device", "999")
    assert status == 1 and "device 999 does not exist" in err
    status, _, err = _cli(capsys, server, token, "start", "--device", str(device), "--max-minutes", "0")
    assert status == 1 and "max_minutes" in err

    status, out, _ = _cli(
        capsys, server, token, "start", "--device", str(device), "--per-round", "8", "--holdout", "10",
        "--max-configs", "60", "--runs", "3",
    )  # fmt: skip
    assert status == 0 and "running" in out and "no peers" in out
    campaign_id = int(out.split()[0])
    finished = drive.run(campaign_id)

    status, out, _ = _cli(capsys, server, token, "show", str(campaign_id))
    lines = out.splitlines()
    assert status == 0 and lines[0].split()[:2] == [str(campaign_id), finished.status.value]
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["round", "phase"])
    rows = [line.split() for line in lines[header + 1 :]]
    rounds = drive.rounds(campaign_id)
    assert [int(r[0]) for r in rows] == [r.number for r in rounds]
    assert [int(r[3]) for r in rows] == [r.configs_measured for r in rounds]
    last = rounds[-1]
    assert last.within_10 is not None and f"{100 * last.within_10:.1f}" in lines[-1]

    status, out, _ = _cli(capsys, server, token, "list", "--device", str(device))
    assert status == 0 and out.split()[0] == str(campaign_id)
    status, _, err = _cli(capsys, server, token, "cancel", str(campaign_id))
    assert status == 1 and "only a running one cancels" in err
