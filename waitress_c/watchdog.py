"""The hung-request check (the ``timeout`` setting).

A thread of the serving process asks the server's core every
``timeout / 4`` seconds (but at least once a second) which of its worker
threads have been inside the application on one request for longer than
``timeout`` (``Server.busy_requests``: a lock-free read of one record per
thread, dispatch.c).  Each such request is logged once, as a warning, with
its method, path and age.  When every thread is on such a request, the
process can serve nobody: ``on_hung`` is called once with them (a worker
process tells its supervisor, which replaces it; a single server has
nothing to replace it with and only logs).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional, Set, Tuple

from waitress_c.access_log import escape

__all__ = ["HungWatch", "describe"]

logger = logging.getLogger("waitress_c")

# (method, path, age in seconds, key): what busy_requests() lists.
Stuck = Tuple[str, str, float, int]


def describe(stuck: List[Stuck]) -> str:
    """The stuck requests for a log line: ``GET /a (31 s), POST /b (40 s)``."""
    return ", ".join(
        "%s %s (%.1f s)" % (escape(method), escape(path), age)
        for method, path, age, _ in sorted(stuck, key=lambda s: -s[2])
    )


class HungWatch:
    """Checks ``core`` (a ``_core.Server``) for requests in the application
    for longer than ``timeout`` seconds, from a daemon thread, until
    ``stop()``."""

    def __init__(
        self,
        core,
        timeout: float,
        on_hung: Optional[Callable[[List[Stuck]], None]] = None,
    ) -> None:
        self.core = core
        self.timeout = timeout
        self.interval = min(1.0, max(0.05, timeout / 4))
        self.on_hung = on_hung
        self._logged: Set[int] = set()  # keys of the requests stuck now
        self._hung = False  # on_hung was called
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="waitress_c-watch", daemon=True
        )

    def start(self) -> "HungWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # pragma: no cover - never stop watching
                logger.exception("Hung-request check failed")

    def check(self) -> None:
        """One look: log the requests newly found stuck, and call on_hung
        the first time every thread is on one."""
        threads, stuck = self.core.busy_requests(self.timeout)
        keys = set()
        for s in stuck:
            keys.add(s[3])
            if s[3] not in self._logged:
                logger.warning(
                    "Request in the application for more than %g s "
                    "(timeout): %s", self.timeout, describe([s]),
                )
        # A request no longer listed has ended (its key never returns).
        self._logged = keys
        if len(stuck) < threads:
            self._hung = False  # a thread is free again: ready to report
        elif stuck and not self._hung:
            self._hung = True
            if self.on_hung is not None:
                self.on_hung(stuck)
            else:
                logger.warning(
                    "Every thread (%d) is stuck in the application: no "
                    "request is served until one returns", threads,
                )
