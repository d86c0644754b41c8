"""A LiveKit node's own CPU per room, in a two-node cluster, idle and talking.

`python -m benchmarks.cluster_cpu [--rooms 10] [--seconds 20]` starts the test
cluster (`tests/helpers/cluster.py`: Redis and two livekit-server nodes), one
`supervisor run` host with `[dispatch]` registered with both, and N callers (the rtc
SDK in this process), each creating its room by joining node A, where each room is
placed (`CreateRoom` with its node id). It reads each node's CPU time (/proc) over
three windows: no rooms, N rooms with the callers silent (the bot there, nobody
talking), and N rooms with every caller publishing a tone that the bot echoes. Per
room is the window's CPU over the no-room window's, divided by N, in % of one core.
The bot joins through the node that assigned its job, so node B's share is the
signalling it relays (and its agent dispatch) for rooms that live on node A.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import anyio
from livekit import api, rtc

from benchmarks.process_tree import cpu_seconds
from supervisor.process.rtc_shutdown import release_rtc
from tests.helpers.cli_process import SupervisorConfig, serving
from tests.helpers.cluster import Cluster, node_ids, running_cluster
from tests.helpers.participants import join, publishing_tone, subscribed_audio_track


async def node_cpu(cluster: Cluster, seconds: float) -> list[float]:
    """Each node's CPU over the next `seconds`, in % of one core."""
    pids = [node.pid for node in cluster.nodes if node.pid is not None]
    before, started = [cpu_seconds(pid) for pid in pids], time.perf_counter()
    await anyio.sleep(seconds)
    elapsed = time.perf_counter() - started
    return [100 * (cpu_seconds(pid) - b) / elapsed for pid, b in zip(pids, before, strict=True)]


async def measure(cluster: Cluster, folder: Path, rooms: int, seconds: float) -> dict:
    a, b = cluster.nodes
    config = SupervisorConfig(
        a,
        rooms=(),
        dispatch={"enabled": True, "idle_timeout_seconds": 5, "drain_seconds": 2},
        cluster_urls=(b.url,),
    )
    await anyio.Path(folder).mkdir()
    result: dict = {"rooms": rooms, "seconds": seconds}
    async with serving(folder, config) as (run, _):
        for node in cluster.nodes:
            await run.wait_for(rf"registered as worker \S+ with {node.url}", timeout=30)
        result["no_rooms"] = await node_cpu(cluster, seconds)
        ids = node_ids(cluster)
        async with contextlib.AsyncExitStack() as stack:
            lk = await stack.enter_async_context(api.LiveKitAPI(a.url, a.api_key, a.api_secret))
            callers: list[rtc.Room] = []
            for i in range(rooms):
                name = f"cpu-{i}"
                await lk.room.create_room(api.CreateRoomRequest(name=name, node_id=ids[0]))
                callers.append(await stack.enter_async_context(join(a, name, "caller")))
            for room in callers:
                await subscribed_audio_track(room, "bot", timeout=60)
            result["idle"] = await node_cpu(cluster, seconds)
            for room in callers:
                await stack.enter_async_context(publishing_tone(room, 440.0))
            await anyio.sleep(2)  # the echoes start
            result["talking"] = await node_cpu(cluster, seconds)
    for phase in ("idle", "talking"):
        pairs = zip(result[phase], result["no_rooms"], strict=True)
        result[f"{phase}_per_room"] = [(used - base) / rooms for used, base in pairs]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_cpu")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cluster-cpu-"))
    with running_cluster(folder) as cluster:
        result = anyio.run(measure, cluster, folder / "host", args.rooms, args.seconds)
    release_rtc()
    print(json.dumps(result, indent=2))
    print(
        "per room, % of one core (node A hosts the rooms, node B relays): idle "
        + ", ".join(f"{v:.2f}" for v in result["idle_per_room"])
        + "; talking "
        + ", ".join(f"{v:.2f}" for v in result["talking_per_room"])
    )


if __name__ == "__main__":
    main()
