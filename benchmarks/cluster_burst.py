"""How livekit-server v1.13.5 routes a burst of agent jobs in a two-node cluster.

`python -m benchmarks.cluster_burst [--rooms 20] [--max-rooms N] [--every-node]`
starts the test cluster (`tests/helpers/cluster.py`: Redis and two livekit-server
nodes), one `supervisor run` host per node registered with that node only (or, with
`--every-node`, with both: `[livekit] cluster_urls`), creates `--rooms` rooms at once
through both nodes' APIs, and prints which host's bot joined each room, and which
rooms got none.

What it shows (see docs/scaling/cluster.md): a job goes to the node whose workers
claim the most spare load (psrpc affinity, highest wins, from loads reported every
2.5 s), and only that node's workers are tried. Registered with one node each, the
whole burst goes to one host; with `--max-rooms` below the burst, that host declines
the rest and those rooms get no bot at all, though the other host is idle.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections import Counter
from pathlib import Path

import anyio
from livekit import api

from supervisor.process.rtc_shutdown import release_rtc
from tests.helpers.cli_process import SupervisorConfig, SupervisorProcess, serving
from tests.helpers.cluster import Cluster, running_cluster

SETTLE_SECONDS = 10.0
"""How long the rooms are given to get their bot (they get it within a second or two)."""


async def burst(cluster: Cluster, folder: Path, rooms: int, max_rooms: int, every: bool) -> None:
    names = [f"burst-{i}" for i in range(rooms)]
    async with contextlib.AsyncExitStack() as stack:
        hosts: list[SupervisorProcess] = []
        for index, node in enumerate(cluster.nodes):
            others = tuple(n.url for n in cluster.nodes if n is not node) if every else ()
            config = SupervisorConfig(
                node,
                rooms=(),
                dispatch={"enabled": True, "max_rooms": max_rooms, "drain_seconds": 1},
                cluster_urls=others,
            )
            await anyio.Path(folder / f"host-{index}").mkdir(parents=True)
            run, _ = await stack.enter_async_context(serving(folder / f"host-{index}", config))
            await run.wait_for(r"registered as worker", count=len(others) + 1, timeout=30)
            hosts.append(run)
        apis = [
            await stack.enter_async_context(api.LiveKitAPI(n.url, n.api_key, n.api_secret))
            for n in cluster.nodes
        ]
        async with anyio.create_task_group() as tasks:
            for i, name in enumerate(names):
                lk = apis[i % len(apis)]
                tasks.start_soon(lk.room.create_room, api.CreateRoomRequest(name=name))
        await anyio.sleep(SETTLE_SECONDS)
        served = {
            name: [i for i, run in enumerate(hosts) if run.matches(rf"\[{name}\] joined as bot")]
            for name in names
        }
        spread = Counter(i for takers in served.values() for i in takers)
        missing = [name for name, takers in served.items() if not takers]
        mode = "every node" if every else "one node each"
        print(f"{rooms} rooms at once, hosts registered with {mode}, max_rooms {max_rooms}:")
        print(f"  rooms per host: {[spread[i] for i in range(len(hosts))]}")
        print(f"  rooms without a bot: {len(missing)} {missing}")
        async with anyio.create_task_group() as tasks:
            for name in names:
                tasks.start_soon(apis[0].room.delete_room, api.DeleteRoomRequest(room=name))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_burst")
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--max-rooms", type=int, default=100)
    parser.add_argument("--every-node", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cluster-burst-"))
    with running_cluster(folder) as cluster:
        anyio.run(burst, cluster, folder, args.rooms, args.max_rooms, args.every_node)
    release_rtc()


if __name__ == "__main__":
    main()
