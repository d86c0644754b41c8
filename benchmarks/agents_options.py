"""The livekit-agents workers' options, from the environment: shared by
`agents_echo.py` and `agents_voice.py`, which run in livekit-agents' own venv (`make
agents-venv`) and import it as a sibling script (`from agents_options import ...`), so it
imports nothing of this project.

The agents CLI owns the command line, so a worker's options come from variables named
`<PREFIX>_<OPTION>`, each left at livekit-agents' default when unset: that default is
what a user gets, the variables are what a user would tune.

- `_EXECUTOR`: `process` (a process per job, the default on Linux) or `thread`
- `_LOAD_THRESHOLD`: the load above which the worker reports itself full (0.7)
- `_IDLE_PROCESSES`: job processes kept warm (the machine's core count)
- `_LOAD`: `machine` (the default: the whole machine's, or container's, CPU, so other
  work on the machine makes the worker full) or `worker` (the CPU of the worker's own
  process tree, jobs included, over the last LOAD_WINDOW seconds: what the supervisor's
  `[dispatch] load_threshold` measures, and what a user sharing a machine with other
  services would write as `load_fnc`)
- `_HTTP_PORT`: its health-check port (8081 in `start` mode)
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

import psutil
from livekit.agents import JobExecutorType

LOAD_WINDOW = 2.5
"""As livekit-agents' own load: a moving average over 2.5 s."""


class WorkerLoad:
    """The worker's own process tree's share of the machine's cores, over the last
    LOAD_WINDOW seconds. livekit-agents calls it from executor threads, every 0.5 s and
    at each job request: a window, not the time since the last call, keeps a burst of
    requests from reading a few milliseconds' noise."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._lock = threading.Lock()

    def _cpu_seconds(self) -> float:
        total = 0.0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:  # a job process that just ended
                continue
            total += times.user + times.system
        return total

    def __call__(self) -> float:
        now, used = time.monotonic(), self._cpu_seconds()
        with self._lock:
            self._samples.append((now, used))
            while len(self._samples) > 2 and now - self._samples[1][0] >= LOAD_WINDOW:
                self._samples.popleft()
            then, before = self._samples[0]
        if now - then <= 0:
            return 0.0
        return min(1.0, max(0.0, (used - before) / (now - then) / self._cores))


def server_options(prefix: str) -> dict[str, Any]:
    """The AgentServer keyword arguments the `<prefix>_*` variables set; livekit-agents'
    own defaults for the rest."""
    options: dict[str, Any] = {}
    if executor := os.environ.get(f"{prefix}_EXECUTOR"):
        options["job_executor_type"] = JobExecutorType(executor)
    if threshold := os.environ.get(f"{prefix}_LOAD_THRESHOLD"):
        options["load_threshold"] = float(threshold)
    if idle := os.environ.get(f"{prefix}_IDLE_PROCESSES"):
        options["num_idle_processes"] = int(idle)
    if os.environ.get(f"{prefix}_LOAD") == "worker":
        options["load_fnc"] = WorkerLoad()
    if port := os.environ.get(f"{prefix}_HTTP_PORT"):
        options["port"] = int(port)
    return options
