"""A new virtual phone bootstrapped in a farm of three: one call, wall time to an active predictor.

The farm: `latfarm`'s API with its in-process worker (as `latfarm serve --with-worker`) on a temporary
SQLite database, and four virtual phones of different microarchitectures, each in its own process. Three
of them (the peers) are profiled first with an ordinary job (`--peer-configs` sr_block configs of the
demo's space at min-mid-max clocks) and get an active predictor each. Then the fourth, a phone the farm has
never measured, is registered and bootstrapped with ONE call (`POST /v1/devices/{id}/bootstrap`): the
campaign measures a held-out set, picks configs in rounds (spread over the space and toward where the
peers' predictors disagree), trains, scores on its held-out set and stops at the target accuracy or a
budget. Printed: each round (configs measured, held-out share within ±10 %, minutes) and the outcome.
The baseline, in the same run and scored on the same held-out measurements: a *twin* of the new phone
(another virtual phone of the same profile: the same microarchitecture, its own run-to-run noise) profiled
with a plain job of as many *random* configs of the space as the campaign measured, and a predictor
trained on them from scratch (no picker, no peers).

Target (issue #14): the campaign reaches its target in under 15 minutes of wall time on this machine.
Every number comes from virtual phones (real onnxruntime runs on this host, priced by each profile's
microarchitecture); the phones and their rows say so.

    .venv/bin/python bench/bench_bootstrap.py [--target 0.9] [--peer-configs 120] [--new PROFILE]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from profilers.blocks import config_hash
from service import migrate
from service.app import create_app
from service.auth.service import create_token
from service.campaigns.models import Campaign
from service.client import LatfarmClient
from service.db import make_engine, make_sessionmaker
from service.demo import (
    DEMO_MAX_DEPTH,
    DEMO_OUTPUT,
    DEMO_RUNTIME,
    DEMO_WIDTHS,
    PhoneProcess,
    ServerThread,
    campaign_configs,
)
from service.jobs.worker import attach_background_worker
from service.settings import Settings

#: The demo's search space (`service.demo`) as a sampler space: 54×96 inputs upscaled 4×, 2–7 layers of
#: 4–32 channels — what the peers' job draws from too (`campaign_configs`).
DEMO_SAMPLER = {
    "scale": {"choices": [4]},
    "height": {"choices": [DEMO_OUTPUT[0] // 4]},
    "width": {"choices": [DEMO_OUTPUT[1] // 4]},
    "kernel": {"choices": [3]},
    "widths": {"length": {"min": 2, "max": DEMO_MAX_DEPTH + 1}, "choices": list(DEMO_WIDTHS)},
    "activation": {"choices": ["relu"]},
    "residual": {"choices": [False]},
}
PEERS = ("virtual-flagship", "virtual-midrange", "virtual-tablet")
NEW_PHONE = "virtual-lowend"


def _min_mid_max(freqs: list[int]) -> list[int]:
    ordered = sorted(freqs)
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]})


def _holdout(settings: Settings, campaign_id: int) -> list[dict]:
    """The campaign's held-out configs (kept in its row; the API shows the scores, not the set)."""
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            campaign = session.get(Campaign, campaign_id)
            assert campaign is not None
            return list(campaign.holdout)
    finally:
        engine.dispose()


def _holdout_medians(client: LatfarmClient, device_id: int, holdout: list[dict]) -> dict:
    """(config hash, kHz) → (config, the new phone's measured median ms) of the held-out configs."""
    configs = {config_hash("sr_block", c): c for c in holdout}
    rows = client.measurements(device=device_id, family="sr_block")
    rows = rows[rows["config_hash"].isin(list(configs)) & rows["valid"]]
    return {
        (h, int(f)): (configs[h], float(ms))
        for h, f, ms in zip(rows["config_hash"], rows["frequency_khz"], rows["median_ms"], strict=True)
    }


def _share_within(client: LatfarmClient, device_id: int, measured: dict) -> float:
    """Share of the held-out measurements `device_id`'s active predictor puts within ±10 %."""
    hits = []
    for (_, khz), (config, ms) in measured.items():
        predicted = client.predict(device_id, "sr_block", [config], frequency_khz=khz).latency_ms[0]
        hits.append(abs(predicted / ms - 1) <= 0.10)
    return float(np.mean(hits)) if hits else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9, help="held-out share within ±10 %% to reach")
    parser.add_argument("--max-configs", type=int, default=200)
    parser.add_argument("--max-minutes", type=float, default=15.0)
    parser.add_argument("--per-round", type=int, default=24)
    parser.add_argument("--holdout", type=int, default=40)
    parser.add_argument("--peer-configs", type=int, default=120)
    parser.add_argument("--new", default=NEW_PHONE, help="profile of the phone to bootstrap")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="latfarm-bootstrap-"))
    settings = Settings(
        database_url=f"sqlite:///{state / 'latfarm.db'}",
        state_dir=state / "service",
        log_level="WARNING",
        min_training_rows=20,
    )
    migrate.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        _, admin = create_token(session, "bench", ["admin"])
    engine.dispose()
    app = create_app(settings)
    attach_background_worker(app, settings)

    with contextlib.ExitStack() as stack:
        phones = {}
        for name, profile in (*((p, p) for p in PEERS), ("new", args.new), ("twin", args.new)):
            phone = PhoneProcess(profile, state / "phones" / name)
            stack.callback(phone.stop)
            phones[name] = phone.start()
        server = stack.enter_context(ServerThread(app))
        client = stack.enter_context(LatfarmClient(server.url, admin, timeout=120.0))

        started = time.monotonic()
        peer_ids = []
        for profile in PEERS:
            device = client.probe_device(client.register_device(phones[profile].serial, name=profile).id)
            peer_ids.append(device.id)
        configs = campaign_configs(args.peer_configs, args.seed)
        job = client.submit_job(
            "sr_block", configs=configs, devices=peer_ids, frequencies="min-mid-max", runtime=DEMO_RUNTIME
        )
        job = client.wait(job.id, poll_s=1.0)
        if job.status != "done":
            print(f"the peers' job ended {job.status}: {job.error}")
            return 1
        for profile, device_id in zip(PEERS, peer_ids, strict=True):
            predictor = client.wait_predictor(client.train_predictor("sr_block", device_id).id, poll_s=0.5)
            client.activate_predictor(predictor.id)
            print(
                f"peer {profile:<18} {len(configs)} configs × 3 clocks; predictor {predictor.id} holds "
                f"{predictor.metrics['within_10']:.1%} of its holdout within ±10 %"
            )
        print(f"farm of three peers ready in {(time.monotonic() - started) / 60:.1f} min\n")

        new = client.probe_device(client.register_device(phones["new"].serial, name=args.new).id)
        began = time.monotonic()
        campaign = client.start_campaign(
            new.id,
            "sr_block",
            target_accuracy=args.target,
            max_configs=args.max_configs,
            max_minutes=args.max_minutes,
            configs_per_round=args.per_round,
            holdout_size=args.holdout,
            runtime=DEMO_RUNTIME,
            space=DEMO_SAMPLER,
            seed=args.seed,
        )
        campaign = client.wait_campaign(campaign.id, poll_s=2.0)
        wall = (time.monotonic() - began) / 60
        print(f"bootstrap of {args.new} (device {new.id}), one call: {campaign.status}, {wall:.1f} min wall")
        print(
            f"{'round':>5} | {'configs':>7} | {'±10 % held out':>14} | {'MAPE':>6} | {'minutes':>7} | peers"
        )
        for r in campaign.rounds:
            if r.within_10 is None:
                continue
            print(
                f"{r.number:>5} | {r.configs_measured:>7} | {r.within_10:>14.1%} | {r.mape:>6.1f} | "
                f"{r.minutes:>7.1f} | {len(r.peers)}"
            )
        reached = campaign.status == "succeeded"
        campaign_ms = _holdout_medians(client, new.id, _holdout(settings, campaign.id))
        scored = [r for r in campaign.rounds if r.within_10 is not None]
        measured = scored[-1].configs_measured if scored else args.per_round

        # The baseline: a twin phone, as many random configs as the campaign measured, scratch training.
        twin = client.probe_device(client.register_device(phones["twin"].serial, name=f"{args.new} twin").id)
        began_twin = time.monotonic()
        random_configs = campaign_configs(measured, args.seed + 1)
        job = client.submit_job(
            "sr_block", configs=random_configs, devices=[twin.id], frequencies="min-mid-max",
            runtime=DEMO_RUNTIME,
        )  # fmt: skip
        client.wait(job.id, poll_s=1.0)
        scratch = client.wait_predictor(client.train_predictor("sr_block", twin.id).id, poll_s=0.5)
        client.activate_predictor(scratch.id)
        twin_minutes = (time.monotonic() - began_twin) / 60
        scratch_share = _share_within(client, twin.id, campaign_ms)
        best_share = scored[-1].within_10 if scored else float("nan")
        print(
            f"\n{'':<34} | {'configs':>7} | {'±10 % held out':>14} | {'minutes':>7}\n"
            f"{'bootstrap campaign (picker, peers)':<34} | {measured:>7} | {best_share:>14.1%} | "
            f"{wall:>7.1f}\n"
            f"{'random configs, scratch (twin)':<34} | {measured:>7} | {scratch_share:>14.1%} | "
            f"{twin_minutes:>7.1f}"
        )
        print(
            f"target {args.target:.0%} within ±10 % in < 15 min: "
            f"{'met' if reached and wall < 15 else 'NOT met'} ({campaign.status}, {wall:.1f} min)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
