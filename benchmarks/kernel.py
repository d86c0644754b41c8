"""Actor kernel throughput beside the bare primitives it is built on, in one run.

    python benchmarks/kernel.py [--messages 50000] [--repeats 5]

Measures, on each backend, messages per second through `tell` between two actors and
`ask` round trips per second, and the same traffic through a bare anyio memory object
stream and (on asyncio) a bare `asyncio.Queue`. Every path carries the same pre-built
pipecat frames, so frame construction is not part of any figure. Prints medians over
the repeats and the kernel's ratio to each baseline; shared machines are noisy, so read
the ratios, not the absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pipecat.frames.frames import DataFrame

from actors import (
    Actor,
    ActorRef,
    ChildSpec,
    MailboxSpec,
    Supervisor,
    WhichChildrenFrame,
    open_actor,
)


@dataclass
class Payload(DataFrame):
    n: int = 0


@dataclass
class Go(DataFrame):
    """Tells the producer actor to send every frame to the consumer."""

    frames: list[Payload]
    target: ActorRef


class Consumer(Actor):
    def __init__(self) -> None:
        self.expected = 0
        self.count = 0
        self.done = anyio.Event()

    async def receive(self, frame: Any) -> Any:
        if isinstance(frame, Go):  # a reset: count the next batch
            self.expected, self.count, self.done = len(frame.frames), 0, anyio.Event()
            return self.done
        self.count += 1
        if self.count == self.expected:
            self.done.set()
        return frame.n


class Producer(Actor):
    async def receive(self, frame: Any) -> Any:
        tell = frame.target.tell
        for payload in frame.frames:
            await tell(payload)


async def kernel_tell(frames: list[Payload]) -> float:
    specs = [
        ChildSpec("consumer", Consumer, mailbox=MailboxSpec(capacity=1024)),
        ChildSpec("producer", Producer),
    ]
    async with open_actor(ChildSpec("bench", lambda: Supervisor(specs))) as sup:
        consumer, producer = (info.ref for info in await sup.ask(WhichChildrenFrame()))
        done = await consumer.ask(Go(frames, consumer))
        start = time.perf_counter()
        await producer.tell(Go(frames, consumer))
        await done.wait()
        return time.perf_counter() - start


async def kernel_ask(frames: list[Payload]) -> float:
    async with open_actor(ChildSpec("consumer", Consumer)) as consumer:
        start = time.perf_counter()
        for payload in frames:
            await consumer.ask(payload)
        return time.perf_counter() - start


async def stream_tell(frames: list[Payload]) -> float:
    send, receive = anyio.create_memory_object_stream[Payload](1024)

    async def consume() -> None:
        async with receive:
            async for _ in receive:
                pass

    async with anyio.create_task_group() as tg:
        start = time.perf_counter()
        tg.start_soon(consume)
        async with send:
            for payload in frames:
                await send.send(payload)
    return time.perf_counter() - start


async def stream_ask(frames: list[Payload]) -> float:
    send, receive = anyio.create_memory_object_stream[Any](1)
    reply_send, reply_receive = anyio.create_memory_object_stream[int](1)

    async def serve() -> None:
        async with receive, reply_send:
            async for payload in receive:
                await reply_send.send(payload.n)

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        start = time.perf_counter()
        async with send, reply_receive:
            for payload in frames:
                await send.send(payload)
                await reply_receive.receive()
    return time.perf_counter() - start


async def queue_tell(frames: list[Payload]) -> float:
    queue: asyncio.Queue[Payload | None] = asyncio.Queue(1024)

    async def consume() -> None:
        while await queue.get() is not None:
            pass

    start = time.perf_counter()
    consumer = asyncio.create_task(consume())
    for payload in frames:
        await queue.put(payload)
    await queue.put(None)
    await consumer
    return time.perf_counter() - start


async def queue_ask(frames: list[Payload]) -> float:
    queue: asyncio.Queue[tuple[Payload, asyncio.Future[int]] | None] = asyncio.Queue()

    async def serve() -> None:
        while (item := await queue.get()) is not None:
            item[1].set_result(item[0].n)

    server = asyncio.create_task(serve())
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for payload in frames:
        future = loop.create_future()
        await queue.put((payload, future))
        await future
    elapsed = time.perf_counter() - start
    await queue.put(None)
    await server
    return elapsed


Measure = Callable[[list[Payload]], Awaitable[float]]


def median_rate(measure: Measure, backend: str, frames: list[Payload], repeats: int) -> float:
    return statistics.median(
        len(frames) / anyio.run(measure, frames, backend=backend) for _ in range(repeats)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    args = parser.parse_args()
    frames = [Payload(i) for i in range(args.messages)]
    asks = frames[: max(1, args.messages // 5)]
    print(f"{args.messages} tells, {len(asks)} asks, median of {args.repeats} runs")
    print(f"{'backend':8} {'what':5} {'kernel/s':>10} {'stream/s':>10} {'queue/s':>10}"
          f" {'vs stream':>9} {'vs queue':>9}")
    for backend in args.backends:
        for what, kernel, stream, queue, batch in (
            ("tell", kernel_tell, stream_tell, queue_tell, frames),
            ("ask", kernel_ask, stream_ask, queue_ask, asks),
        ):
            k = median_rate(kernel, backend, batch, args.repeats)
            s = median_rate(stream, backend, batch, args.repeats)
            q = median_rate(queue, backend, batch, args.repeats) if backend == "asyncio" else None
            queue_rate, vs_queue = ("-", "-") if q is None else (f"{q:.0f}", f"{k / q:.2f}")
            print(
                f"{backend:8} {what:5} {k:10.0f} {s:10.0f} {queue_rate:>10} "
                f"{k / s:9.2f} {vs_queue:>9}"
            )


if __name__ == "__main__":
    main()
