"""The two-lane mailbox on its own: priority, order, overflow policies, closing."""

from __future__ import annotations

import anyio
import pytest

from actors import (
    ActorStoppedError,
    FrameDroppedError,
    MailboxFullError,
    MailboxSpec,
    Overflow,
)
from actors.mailbox import STOP, Mailbox, Reply, Request

pytestmark = pytest.mark.anyio


def mailbox(
    capacity: int = 4, overflow: Overflow = Overflow.BLOCK, timeout: float = 5.0
) -> Mailbox:
    return Mailbox(MailboxSpec(capacity, overflow, timeout), "/test")


async def drain(box: Mailbox, n: int) -> list:
    return [await box.get() for _ in range(n)]


async def test_system_lane_is_served_first_and_keeps_order() -> None:
    box = mailbox()
    await box.put_data("d1")
    box.put_system("s1")
    await box.put_data("d2")
    box.put_system("s2")
    assert await drain(box, 4) == ["s1", "s2", "d1", "d2"]


async def test_system_lane_never_drops_beyond_capacity() -> None:
    box = mailbox(capacity=2, overflow=Overflow.DROP_OLDEST)
    for i in range(100):
        box.put_system(i)
    assert await drain(box, 100) == list(range(100))
    assert box.dropped == 0


async def test_drop_oldest_keeps_the_newest_and_counts() -> None:
    box = mailbox(capacity=3, overflow=Overflow.DROP_OLDEST)
    for i in range(10):
        await box.put_data(i)
    assert box.stats.dropped == 7
    assert box.stats.depth == 3
    assert await drain(box, 3) == [7, 8, 9]


async def test_dropped_request_fails_its_asker() -> None:
    box = mailbox(capacity=1, overflow=Overflow.DROP_OLDEST)
    reply = Reply()
    await box.put_data(Request("first", reply))
    await box.put_data("second")
    assert reply.done
    with pytest.raises(FrameDroppedError):
        reply.result()


async def test_block_policy_waits_for_room() -> None:
    box = mailbox(capacity=1)
    await box.put_data("a")
    sent = anyio.Event()

    async def sender() -> None:
        await box.put_data("b")
        sent.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await anyio.sleep(0.05)
        assert not sent.is_set(), "a full blocking lane must make the sender wait"
        assert await box.get() == "a"
        await sent.wait()
        assert await box.get() == "b"
    assert box.dropped == 0


async def test_block_policy_times_out_with_a_clear_error() -> None:
    box = mailbox(capacity=1, timeout=0.05)
    await box.put_data("a")
    with pytest.raises(MailboxFullError, match="/test"):
        await box.put_data("b")
    with pytest.raises(MailboxFullError):
        box.put_data_nowait("b")
    assert await box.get() == "a"


async def test_stop_comes_after_queued_control_and_before_data() -> None:
    box = mailbox()
    await box.put_data("d")
    box.put_system("s")
    box.request_stop()
    assert await drain(box, 2) == ["s", STOP]
    assert await box.get() == "d"


async def test_stop_wakes_a_waiting_reader() -> None:
    box = mailbox()

    async def stop_later() -> None:
        await anyio.sleep(0.01)
        box.request_stop()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_later)
        with anyio.fail_after(5):
            assert await box.get() is STOP


async def test_close_answers_queued_requests_and_counts_dead_letters() -> None:
    box = mailbox()
    replies = [Reply(), Reply()]
    box.put_system(Request("s", replies[0]))
    await box.put_data(Request("d", replies[1]))
    await box.put_data("plain")
    box.close()
    for reply in replies:
        with pytest.raises(ActorStoppedError):
            reply.result()
    await box.put_data("late")
    box.put_system("late")
    assert box.stats.dead_letters == 5
    assert box.stats.depth == 0


async def test_close_releases_a_blocked_sender() -> None:
    box = mailbox(capacity=1)
    await box.put_data("a")
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.put_data, "b")
        await anyio.sleep(0.01)
        box.close()
    assert box.stats.dead_letters == 2


def test_spec_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="'capacity' must be >= 1"):
        MailboxSpec(capacity=0)
    with pytest.raises(ValueError, match="'send_timeout' must be > 0"):
        MailboxSpec(send_timeout=0)
    with pytest.raises(TypeError):
        MailboxSpec(overflow="drop")  # type: ignore[arg-type]
