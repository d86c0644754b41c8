"""The pipecat internals the room transport reads, checked by name.

`RoomInputTransport.audio_backlog` reads `BaseInputTransport._audio_in_queue` and
`_audio_task` (pipecat has no public view of the input's own audio queue, which VAD
and filters work through). A pipecat release that renames or reshapes them must fail
here, saying which, and not show up as a backlog silently read as 0 in a live room.
`pyproject.toml` pins pipecat to the minor version they were read from; moving the pin
means reading `BaseInputTransport` again and updating this test with it.
"""

from __future__ import annotations

import inspect

from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_transport import TransportParams


def test_the_input_keeps_its_audio_queue_and_task_where_the_backlog_reads_them() -> None:
    fresh = BaseInputTransport(TransportParams(audio_in_enabled=True))
    assert fresh._audio_task is None, "BaseInputTransport no longer starts without an audio task"
    created = inspect.getsource(BaseInputTransport._create_audio_task)
    assert "self._audio_in_queue = asyncio.Queue()" in created, created
    assert "self._audio_task = " in created, created
    queued = inspect.getsource(BaseInputTransport.push_audio_frame)
    assert "self._audio_in_queue.put(" in queued, queued
