"""`LeaseHeartbeat`: renews a lease from a thread, every third of its length, until stopped or lost.

A lease in the database (a phone and its batch of tasks, a predictor's training) lapses unless its holder
renews it, and the holder's own thread is busy with the work the lease guards (a benchmark, an XGBoost
fit). A failed renewal because the database is briefly away is retried at the next beat; a renewal that
reports the lease gone (`renew()` returns False) ends the heartbeat and sets `lost`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

_log = logging.getLogger("latfarm.worker")


class LeaseHeartbeat:
    """`with LeaseHeartbeat(renew, lease_seconds): work()`; `renew()` says whether the lease is held."""

    def __init__(
        self, renew: Callable[[], bool], lease_seconds: float, name: str = "latfarm-heartbeat"
    ) -> None:
        self.lost = False
        self._renew = renew
        self._interval = max(lease_seconds / 3, 0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._renew():
                    self.lost = True
                    return
            except DBAPIError:
                _log.warning("%s could not reach the database; retrying", self._thread.name, exc_info=True)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
