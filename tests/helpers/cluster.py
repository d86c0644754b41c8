"""A LiveKit cluster for tests: Redis and two livekit-server nodes in multi-node mode.

Redis is Debian's `redis-server` (`make test` installs it when it is missing and it
runs as root); without it a cluster test is skipped with the reason, except under CI
(`CI` set), where that is a failure. It runs on a free loopback port with no
persistence, and the nodes (`supervisor.livekit_server.server.LiveKitServer`, each on its own
ports, with the same key and secret) share it: LiveKit then places each room on a node
and routes signalling and agent jobs between them, so a participant or a worker may
connect to either node for any room.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from supervisor.livekit_server.server import (
    LOOPBACK,
    LiveKitServer,
    ServerSettings,
    exit_waiter,
    free_port,
    spawn,
    stop_in_order,
)


def redis_binary() -> str:
    """The path of `redis-server`; skip the test (fail under CI) without it."""
    path = shutil.which("redis-server")
    if path is None:
        message = (
            "redis-server is not installed: `make test` installs Debian's redis-server as root"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def redis_ping(port: int) -> bool:
    """Whether a Redis answers PING on the loopback `port` (the inline protocol)."""
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


@attrs.define
class Redis:
    """One redis-server on loopback, in memory only (`--save ""`, no append-only file)."""

    log_path: Path
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        argv = [
            redis_binary(),
            *("--bind", LOOPBACK, "--port", str(self.port)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--dir", str(self.log_path.parent)),
        ]
        self.process = spawn(argv, env=dict(os.environ), log_path=self.log_path)
        deadline = time.monotonic() + timeout
        while not redis_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on {self.address}:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        stop_in_order(process.send_signal, exit_waiter(process), timeout=5)


@attrs.define
class Cluster:
    """Redis and the livekit-server nodes sharing it; `nodes[i].url` is node i's URL.

    Every node has the same key and secret, so one token is good on any of them, as
    behind a load balancer.
    """

    redis: Redis
    nodes: list[LiveKitServer]

    @property
    def api_key(self) -> str:
        return self.nodes[0].api_key

    @property
    def api_secret(self) -> str:
        return self.nodes[0].api_secret


@contextlib.contextmanager
def running_cluster(folder: Path, nodes: int = 2) -> Iterator[Cluster]:
    """Redis, then `nodes` livekit-server nodes in multi-node mode; all stopped on exit."""
    redis = Redis(log_path=folder / "redis.log")
    redis.start()
    cluster = Cluster(redis, [])
    try:
        settings = ServerSettings.generate(redis_address=redis.address)
        for index in range(nodes):
            node = LiveKitServer(settings, log_path=folder / f"livekit-node-{index}.log")
            cluster.nodes.append(node)
            node.start()
            settings = settings.another_node()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop()
        redis.stop()


NODE_ID = re.compile(r'starting LiveKit server\t.*"nodeID": "(\w+)"')
ROOM_PLACED = re.compile(r'selected node for room\t\{"room": "([^"]+)", "selectedNodeID": "(\w+)"')
JOB_ASSIGNED = re.compile(r'assigned job to worker\t.*"room": "([^"]+)"')


def _logged(cluster: Cluster, pattern: re.Pattern[str]) -> list[tuple[str, int, re.Match[str]]]:
    """Every node's log lines matching `pattern`, oldest first: (timestamp, node, match)."""
    found = []
    for index, node in enumerate(cluster.nodes):
        for line in node.log_path.read_text(errors="replace").splitlines():
            if match := pattern.search(line):
                found.append((line.split("\t", 1)[0], index, match))
    return sorted(found, key=lambda entry: entry[:2])


def node_ids(cluster: Cluster) -> list[str]:
    """Each node's id, as its log says (a node gets a new one each time it starts)."""
    ids = {index: match[1] for _, index, match in _logged(cluster, NODE_ID)}
    return [ids[index] for index in range(len(cluster.nodes))]


def room_nodes(cluster: Cluster) -> dict[str, int]:
    """The index of the node each room was last placed on, as the nodes logged it."""
    index = {node_id: i for i, node_id in enumerate(node_ids(cluster))}
    placed = _logged(cluster, ROOM_PLACED)
    return {match[1]: index[match[2]] for _, _, match in placed if match[2] in index}


def assigning_nodes(cluster: Cluster) -> dict[str, int]:
    """The node that assigned each room's last job to a worker: the node the bot joined
    through, wherever the room lives (the nodes' logs say)."""
    return {match[1]: index for _, index, match in _logged(cluster, JOB_ASSIGNED)}
