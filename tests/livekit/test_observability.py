"""Observability end to end: a real Prometheus scraping real `supervisor run` processes.

Two supervisors serve rooms on the session's livekit-server, as a user would run
them: `a` serves three rooms with a bot that echoes, answers data messages and
crashes on request (tests/helpers/crashing_bot.py) and a fourth with the talker bot
(its `lksup_bot_*` series), with per-room series capped at two rooms, and is an agent
worker for `obs-agent`, which a test dispatches to a room;
`b` runs `--workers 2`, one worker with an echo room and one with a room whose bot
never starts, so it ends quarantined. Each stands for a host (`host-a`, `host-b`):
a Prometheus finds the three endpoints in the files `supervisor targets` writes for
each, as a fleet's would, scrapes them every second and evaluates grafana/alerts.yml.
Simulated participants make the load; every check reads what Prometheus (or the
endpoint itself) reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from livekit import api

from actors.room import HOPS
from supervisor.livekit_server.server import LiveKitServer, free_port
from supervisor.process.workers import shard_of
from tests.helpers.cli_process import supervisor_command
from tests.helpers.crashing_bot import CRASH
from tests.helpers.participants import (
    collect_audio,
    data_inbox,
    join,
    publishing_tone,
    subscribed_audio_track,
)
from tests.helpers.probes import eventually
from tests.helpers.prometheus import (
    JOB,
    ROOT,
    Prometheus,
    Samples,
    alert_query,
    alert_rules,
    dashboard,
    get,
    scrape,
    substitute,
    targets,
    tool,
    variables,
)
from tests.helpers.speech import utterance

pytestmark = pytest.mark.anyio

KEY_ENV, SECRET_ENV = "OBSERVABILITY_TEST_KEY", "OBSERVABILITY_TEST_SECRET"
TALK_ROOM = "obs-talk"
A_ROOMS = ("obs-a", "obs-b", "obs-c", TALK_ROOM)
"""Supervisor a's rooms, in config order: the first two get per-room series; the last
runs the talker bot."""
TALKER = "supervisor.bots.talker:create_bot"
CRASH_ROOM = "obs-c"
B_BROKEN = "obs-broken"
OK_WORKER, BROKEN_WORKER = shard_of("obs-ok", 2), shard_of(B_BROKEN, 2)
assert OK_WORKER != BROKEN_WORKER, "b's rooms must land on different workers"
RATE_INTERVAL = "10s"
"""What `$__rate_interval` stands for here: a few of the test's 1 s scrapes."""


# --- supervisors under test -------------------------------------------------------------


def config_text(server: LiveKitServer, port: int, metrics: str, body: str) -> str:
    """A config for the session's server, on metrics port `port`; `metrics` adds keys
    to the [metrics] table, `body` the other tables."""
    return textwrap.dedent(f"""
        [livekit]
        url = "{server.url}"
        api_key_env = "{KEY_ENV}"
        api_secret_env = "{SECRET_ENV}"
        embedded_server = false

        [metrics]
        listen = "127.0.0.1:{port}"
        {metrics}
    """) + textwrap.dedent(body)


A_CONFIG = """
    [bot]
    factory = "tests.helpers.crashing_bot:create_bot"

    [supervision]
    backoff_initial_seconds = 0.1
    backoff_max_seconds = 1

    [dispatch]
    enabled = true
    agent_name = "obs-agent"
    idle_timeout_seconds = 1
""" + "".join(f'\n[[rooms]]\nname = "{name}"\n' for name in A_ROOMS[:-1]) + f"""
[[rooms]]
name = "{TALK_ROOM}"
bot = {{ factory = "{TALKER}" }}
"""

B_CONFIG = f"""
    [bot]
    factory = "supervisor.bots.echo:create_bot"

    [supervision]
    max_restarts = 1
    backoff_initial_seconds = 0.05
    quarantine_seconds = 120

    [[rooms]]
    name = "obs-ok"

    [[rooms]]
    name = "{B_BROKEN}"
    bot = {{ factory = "tests.helpers.crashing_bot:failing_bot" }}
"""


def free_ports(count: int) -> int:
    """A free port followed by `count - 1` free ones: the metrics ports of N workers."""
    while True:
        port = free_port()
        with contextlib.ExitStack() as probes:
            try:
                for offset in range(1, count):
                    probes.enter_context(socket.socket()).bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return port


@attrs.define
class SupervisorProcess:
    """`supervisor run` as a child process (with `workers` worker processes), its log in a file."""

    name: str
    workdir: Path
    server: LiveKitServer
    body: str
    metrics: str = ""
    workers: int = 1
    port: int = attrs.Factory(lambda self: free_ports(self.workers), takes_self=True)
    process: subprocess.Popen[bytes] | None = None

    def instance(self, worker: int = 0) -> str:
        """The `instance` label in Prometheus of this supervisor (or of one of its workers)."""
        return f"127.0.0.1:{self.port + worker}"

    @property
    def instances(self) -> list[str]:
        return [self.instance(worker) for worker in range(self.workers)]

    def url(self, worker: int = 0) -> str:
        return f"http://{self.instance(worker)}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"supervisor-{self.name}.log"

    @property
    def host(self) -> str:
        """The `host` label its targets get: each supervisor stands for a host."""
        return f"host-{self.name}"

    def _config(self) -> Path:
        config = self.workdir / f"{self.name}.toml"
        config.write_text(config_text(self.server, self.port, self.metrics, self.body))
        return config

    def discovery(self) -> Path:
        """Its targets file for Prometheus, written by `supervisor targets` as a host's
        deployment would."""
        command = ["targets", str(self._config()), "--workers", str(self.workers)]
        result = subprocess.run(
            supervisor_command(*command, "--host", self.host),
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        path = self.workdir / f"{self.host}.json"
        path.write_text(result.stdout)
        return path

    def start(self) -> None:
        config = self._config()
        env = {
            **os.environ,
            KEY_ENV: self.server.api_key,
            SECRET_ENV: self.server.api_secret,
            "PYTHONPATH": str(ROOT),
        }
        log = self.log_path.open("wb")
        workers = ("--workers", str(self.workers)) if self.workers > 1 else ()
        self.process = subprocess.Popen(
            supervisor_command("run", str(config), *workers),
            cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def wait(self, path: str, status: int, worker: int = 0, timeout: float = 60.0) -> str:
        """Poll an endpoint (of one worker) until it answers `status`; its body."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.process is not None, self.log_tail()
            assert self.process.poll() is None, self.log_tail()
            try:
                answer, text = get(self.url(worker) + path, timeout=2)
            # not listening yet, or, polled then, a connection to itself: Linux may give
            # a connect to a free local port that very port as its own, and the poll
            # then reads its own request back (BadStatusLine: "GET /healthz HTTP/1.1")
            except (OSError, http.client.HTTPException) as err:
                last = err
            else:
                if answer == status:
                    return text
                last = (answer, text)
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name}{path}: not {status} within {timeout} s ({last})\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def scrape(self, worker: int = 0) -> Samples:
        return scrape(self.url(worker))


@attrs.frozen
class Fleet:
    a: SupervisorProcess
    b: SupervisorProcess
    prometheus: Prometheus

    def value(self, expr: str) -> float | None:
        return self.prometheus.value(expr)


@pytest.fixture(scope="module")
def fleet(
    livekit_server: LiveKitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    tool("espeak-ng", "espeak-ng")  # the talker room's voice
    workdir = tmp_path_factory.mktemp("observability")
    a = SupervisorProcess("a", workdir, livekit_server, A_CONFIG, "max_room_series = 2")
    b = SupervisorProcess("b", workdir, livekit_server, B_CONFIG, workers=2)
    prometheus = Prometheus(workdir, [a.discovery(), b.discovery()])
    try:
        a.start()
        b.start()
        prometheus.start()
        a.wait("/readyz", 200)
        b.wait("/readyz", 200, worker=OK_WORKER)
        b.wait("/healthz", 200, worker=BROKEN_WORKER)
        yield Fleet(a, b, prometheus)
    finally:
        for process in (a, b):
            process.stop()
        prometheus.stop()


def on(process: SupervisorProcess, selector: str = "") -> str:
    """Label matchers for one supervisor's series, plus `selector`."""
    matchers = [f'job="{JOB}"', f'instance="{process.instance()}"', selector]
    return "{" + ", ".join(filter(None, matchers)) + "}"


# --- endpoints ------------------------------------------------------------------------------


async def test_health_and_readiness_endpoints(fleet: Fleet) -> None:
    a, b = fleet.a, fleet.b
    assert get(a.url() + "/healthz") == (200, "ok\n")
    ready = (
        f"ready: {len(A_ROOMS)} of {len(A_ROOMS)} room(s) running; "
        "agent worker registered, 0 dispatched room(s)\n"
    )
    assert get(a.url() + "/readyz") == (200, ready)
    # each worker of b answers for its own rooms: the broken one exceeds its restart
    # intensity and is quarantined, so its worker is never ready; the other one is
    assert get(b.url(OK_WORKER) + "/readyz") == (200, "ready: 1 of 1 room(s) running\n")
    await eventually(
        lambda: b.scrape(BROKEN_WORKER)["lksup_rooms", {"state": "failed"}],
        lambda v: v == 1,
        "failed",
    )
    assert get(b.url(BROKEN_WORKER) + "/readyz") == (
        503, f"not ready: 0 of 1 room(s) running; failed: {B_BROKEN}\n",
    )  # fmt: skip
    assert get(b.url(BROKEN_WORKER) + "/healthz") == (200, "ok\n")
    assert get(a.url() + "/nothing-here")[0] == 404


async def test_prometheus_finds_every_worker_from_the_hosts_targets_files(fleet: Fleet) -> None:
    """No hand list of ports: Prometheus reads each host's `supervisor targets` file and
    scrapes every worker, b's two included, each labelled with its host and worker."""
    a, b = fleet.a, fleet.b

    def up() -> dict[tuple[str, str], tuple[str, float]]:
        return {
            (r["metric"]["host"], r["metric"]["worker"]): (
                r["metric"]["instance"], float(r["value"][1]),
            )
            for r in fleet.prometheus.query(f'up{{job="{JOB}"}}')
        }  # fmt: skip

    every_worker = {
        (a.host, "0"): (a.instance(), 1.0),
        (b.host, "0"): (b.instance(0), 1.0),
        (b.host, "1"): (b.instance(1), 1.0),
    }
    await eventually(up, lambda found: found == every_worker, "every worker up")
    # the supervisor's own series carry the labels too: the fleet row sums by host
    by_host = f'sum by (host) (lksup_rooms_configured{{job="{JOB}"}})'
    rooms = {r["metric"]["host"]: float(r["value"][1]) for r in fleet.prometheus.query(by_host)}
    assert rooms == {a.host: len(A_ROOMS), b.host: 2}


def test_a_taken_metrics_port_stops_the_start_with_its_setting_named(
    fleet: Fleet, livekit_server: LiveKitServer
) -> None:
    """Two supervisors cannot share a metrics address: the second one says which key."""
    second = SupervisorProcess(
        "a-again", fleet.a.workdir, livekit_server, A_CONFIG, port=fleet.a.port
    )
    second.start()
    assert second.process is not None
    assert second.process.wait(timeout=60) == 1
    assert f"metrics.listen = '127.0.0.1:{fleet.a.port}'" in second.log_tail()
    assert get(fleet.a.url() + "/healthz")[0] == 200  # the first one is unaffected


def test_metrics_speak_openmetrics_to_who_asks(fleet: Fleet) -> None:
    import urllib.request

    request = urllib.request.Request(
        fleet.a.url() + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read().decode()
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "lksup_audio_latency_seconds_bucket" in body


def test_per_room_series_stop_at_the_cap(fleet: Fleet) -> None:
    samples = fleet.a.scrape()
    labelled = set(A_ROOMS[:2])
    assert samples.label_values("lksup_room_participants", "room") == labelled
    assert samples.label_values("lksup_room_audio_frames_in_total", "room") == labelled
    assert samples["lksup_metrics_room_series_refused_total"] == len(A_ROOMS) - 2
    assert samples["lksup_metrics_rooms_unlabelled"] == len(A_ROOMS) - 2
    assert samples["lksup_rooms_configured"] == len(A_ROOMS)  # the others count in the totals


# --- what participants do, as Prometheus sees it ----------------------------------------


async def test_participants_gauge_follows_participants_in_and_out(
    fleet: Fleet, livekit_server: LiveKitServer
) -> None:
    a = fleet.a
    total = f"sum(lksup_participants{on(a)})"
    joins, leaves = (f"sum(lksup_participant_{kind}_total{on(a)})" for kind in ("joins", "leaves"))
    await eventually(lambda: fleet.value(total), lambda v: v == 0, "participants before")
    joins_before, leaves_before = fleet.value(joins), fleet.value(leaves)
    async with (
        join(livekit_server, "obs-a", "ann"),
        join(livekit_server, "obs-a", "bob"),
        join(livekit_server, "obs-b", "cy"),
        join(livekit_server, CRASH_ROOM, "dee"),
    ):
        await eventually(lambda: fleet.value(total), lambda v: v == 4, "participants in all rooms")
        per_room = {
            r["metric"]["room"]: float(r["value"][1])
            for r in fleet.prometheus.query(f"lksup_room_participants{on(a)}")
        }
        assert per_room == {"obs-a": 2, "obs-b": 1}  # obs-c has no per-room series
    await eventually(lambda: fleet.value(total), lambda v: v == 0, "participants after leaving")
    assert fleet.value(joins) - joins_before == 4
    await eventually(lambda: fleet.value(leaves) - leaves_before, lambda v: v == 4, "leaves")


async def test_latency_histogram_counts_the_echoed_frames(
    fleet: Fleet, livekit_server: LiveKitServer
) -> None:
    async with join(livekit_server, "obs-b", "echo-listener") as room, publishing_tone(room):
        track = await subscribed_audio_track(room, "bot")
        await collect_audio(track, 0.5)  # the echo flows
        before = fleet.a.scrape()
        await collect_audio(track, 2.0)
        after = fleet.a.scrape()

    def delta(name: str, **labels: str) -> float:
        return after[name, labels] - before[name, labels]

    echoed = delta("lksup_audio_frames_out_total")
    timed = delta("lksup_audio_latency_seconds_count")
    assert echoed >= 50, f"only {echoed} frames echoed in 2 s"
    assert 0.9 * echoed <= timed <= echoed + 2, f"{timed} frames timed, {echoed} echoed"
    assert delta("lksup_audio_latency_seconds_bucket", le="1.0") == timed, "latencies over 1 s"
    buckets = sorted(
        (float(dict(labels)["le"]), after.values[name, labels] - before.values[name, labels])
        for name, labels in after.values
        if name == "lksup_audio_latency_seconds_bucket"
    )
    p50, p99 = (next(le for le, n in buckets if n >= q * timed) for q in (0.5, 0.99))
    mean_ms = delta("lksup_audio_latency_seconds_sum") / timed * 1000
    print(
        f"\naudio latency through the supervisor: p50 <= {p50 * 1000:g} ms, "
        f"p99 <= {p99 * 1000:g} ms ({timed:.0f} frames; mean {mean_ms:.1f} ms)"
    )
    # the same frames hop by hop: each hop times every one, and the hops add up to it
    hops = {hop: delta("lksup_audio_hop_seconds_count", hop=hop) for hop in HOPS}
    assert hops == dict.fromkeys(HOPS, timed), hops
    hops_ms = {hop: delta("lksup_audio_hop_seconds_sum", hop=hop) / timed * 1000 for hop in HOPS}
    assert sum(hops_ms.values()) == pytest.approx(mean_ms, rel=1e-3), hops_ms
    print("mean per hop: " + ", ".join(f"{hop} {ms:.2f} ms" for hop, ms in hops_ms.items()))
    seen = f"sum(lksup_audio_latency_seconds_count{on(fleet.a)})"
    await eventually(
        lambda: fleet.value(seen),
        lambda v: v is not None and v >= after["lksup_audio_latency_seconds_count"],
        "latency count in Prometheus",
    )
    by_hop = f"sum by (hop) (lksup_audio_hop_seconds_count{on(fleet.a)})"
    in_prometheus = await eventually(
        lambda: {r["metric"]["hop"]: float(r["value"][1]) for r in fleet.prometheus.query(by_hop)},
        lambda found: found.keys() == set(HOPS)
        and all(found[hop] >= after["lksup_audio_hop_seconds_count", {"hop": hop}] for hop in HOPS),
        "per-hop counts in Prometheus",
    )
    assert min(in_prometheus.values()) >= timed


async def test_data_messages_and_a_bot_crash_show_in_prometheus(
    fleet: Fleet, livekit_server: LiveKitServer
) -> None:
    a = fleet.a
    restarts = "sum(lksup_actor_restarts_total" + on(a, 'actor="pipeline"') + ")"
    data_in = f"sum by (kind) (lksup_data_messages_in_total{on(a)})"
    data_out = f"sum by (kind) (lksup_data_messages_out_total{on(a)})"

    def by_kind(expr: str) -> dict[str, float]:
        return {r["metric"]["kind"]: float(r["value"][1]) for r in fleet.prometheus.query(expr)}

    restarts_before = fleet.value(restarts)
    in_before, out_before = by_kind(data_in), by_kind(data_out)
    async with join(livekit_server, CRASH_ROOM, "crasher") as room:
        inbox = data_inbox(room)
        send = room.local_participant.publish_data
        await send(json.dumps({"hello": 1}).encode(), reliable=True)
        await send(json.dumps({"urgent": True}).encode(), reliable=True)  # answered lossy
        await send(b"\xff not json", reliable=True)
        for _ in range(2):
            await asyncio.wait_for(inbox.get(), timeout=10)  # both answers came back
        await send(json.dumps(CRASH).encode(), reliable=True)
        await eventually(
            lambda: fleet.value(restarts), lambda v: v >= restarts_before + 1, "pipeline restarts"
        )
    grown_in = await eventually(
        lambda: by_kind(data_in), lambda v: v["json"] - in_before["json"] >= 3, "data in"
    )
    assert grown_in["raw"] - in_before["raw"] == 1
    assert grown_in["oversized"] == in_before["oversized"]
    grown_out = by_kind(data_out)
    assert grown_out["reliable"] - out_before["reliable"] == 1
    assert grown_out["lossy"] - out_before["lossy"] == 1
    # the crash restarted the pipeline only: the room itself did not restart
    assert fleet.value("sum(lksup_actor_restarts_total" + on(a, 'actor="room"') + ")") == 0


async def test_a_dispatched_job_shows_on_the_dispatch_panels(
    fleet: Fleet, livekit_server: LiveKitServer
) -> None:
    a = fleet.a
    board = dashboard()
    values = {"job": JOB, "instance": a.instance(), "__rate_interval": RATE_INTERVAL}
    (p99,) = (
        substitute(expr, values) for title, expr in targets(board)
        if title == "Dispatch latency" and "0.99" in expr and "first_audio" in expr
    )  # fmt: skip
    async with api.LiveKitAPI(
        livekit_server.url, livekit_server.api_key, livekit_server.api_secret
    ) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="obs-dispatched"))
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name="obs-agent", room="obs-dispatched")
        )
        async with join(livekit_server, "obs-dispatched", "caller") as room, publishing_tone(room):
            track = await subscribed_audio_track(room, "bot")
            await collect_audio(track, 0.5)  # the echo: the bot's first audio is out
            rooms = f"sum(lksup_dispatch_rooms{on(a)})"
            await eventually(lambda: fleet.value(rooms), lambda v: v == 1, "dispatched rooms")
            seconds = await eventually(
                lambda: fleet.value(p99), lambda v: v is not None and math.isfinite(v), "p99"
            )
            print(f"\ndispatch latency to first audio, p99 on the dashboard: {seconds:.2f} s")
    ended = "sum(lksup_dispatch_jobs_ended_total" + on(a, 'status="succeeded"') + ")"
    await eventually(lambda: fleet.value(ended), lambda v: v == 1, "the job ended")


# --- the dashboard and the alert rules against live data ----------------------------------


async def test_every_dashboard_query_and_alert_expression_returns_data(
    fleet: Fleet, livekit_server: LiveKitServer
) -> None:
    prometheus = fleet.prometheus
    board = dashboard()
    values = {
        "job": JOB, "instance": ".+", "host": ".+", "room": ".+", "__rate_interval": RATE_INTERVAL
    }  # fmt: skip
    speech = utterance("Hello there, how are you today?", then_silent=3.0)
    async with (
        join(livekit_server, "obs-a", "speaker") as room,
        publishing_tone(room),
        join(livekit_server, TALK_ROOM, "talker") as talk,
        publishing_tone(talk, signal=speech),  # the talker answers each time: its series
    ):
        track = await subscribed_audio_track(room, "bot")
        await collect_audio(track, 0.5)
        frames = f"sum(rate(lksup_audio_frames_out_total{on(fleet.a)}[{RATE_INTERVAL}]))"
        await eventually(
            lambda: fleet.value(frames), lambda v: v is not None and v > 10, "echo rate"
        )
        responses = f"sum(lksup_bot_response_seconds_count{on(fleet.a)})"
        await eventually(lambda: fleet.value(responses), lambda v: v, "a talker's answer", 60)
        # both services' series, scraped long enough for a rate
        services = f"count(rate(lksup_bot_ttfb_seconds_count{on(fleet.a)}[{RATE_INTERVAL}]))"
        await eventually(lambda: fleet.value(services), lambda v: v == 2, "both its services")

        empty = [
            (title, expr) for title, expr in targets(board)
            if not prometheus.query(substitute(expr, values))
        ]  # fmt: skip
        assert empty == [], "dashboard queries without data"

        for name, var in variables(board).items():
            if var["type"] != "query":
                continue
            query = substitute(var["query"], values)
            metric, label = query[len("label_values(") : -1].rsplit(", ", 1)
            found = {s[label] for s in prometheus.api("series", **{"match[]": metric})}
            assert found, f"template variable {name}: no values"
        assert {*fleet.a.instances, *fleet.b.instances} <= {
            s["instance"] for s in prometheus.api("series", **{"match[]": "lksup_build_info"})
        }

        # some panels must show the load, not only exist
        latency = substitute(next(e for t, e in targets(board) if "histogram_quantile(0.99" in e
                                  and "audio_latency" in e), values)  # fmt: skip
        assert math.isfinite(fleet.value(latency) or math.nan), "no p99 audio latency"
        # the fleet view: sums over every scraped process (a, and each worker of b)
        assert fleet.value("sum(lksup_rooms_configured)") == len(A_ROOMS) + 2
        assert fleet.value(f'count(up{{job="{JOB}"}} == 1)') == 3
        assert fleet.value(f'count(count by (host) (up{{job="{JOB}"}}))') == 2  # hosts a, b

    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    # Prometheus loaded every rule the file has
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert prometheus.query(alert_query(rule["query"])), f"{rule['name']}: no data"

    # b's quarantined room is what LksupRoomsFailing is for: it is pending (for: 2m)
    pending = await eventually(
        lambda: [
            a["labels"]
            for a in prometheus.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "LksupRoomsFailing"
        ],
        bool,
        "LksupRoomsFailing",
    )
    assert [alert["instance"] for alert in pending] == [fleet.b.instance(BROKEN_WORKER)]
