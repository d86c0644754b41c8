"""A test bot for dispatched rooms: the echo bot that also tells the room its job.

On start it sets the bot's participant metadata to the job it serves (`RoomTransport.job`
as JSON: id, room, dispatch metadata, participant), which a participant reads from the room, as a
real bot would read a backend's instructions from the dispatch metadata.
"""

from __future__ import annotations

import json

from pipecat.pipeline.worker import PipelineWorker

from actors.room import RoomTransport
from supervisor.bots import echo


def create_bot(transport: RoomTransport) -> PipelineWorker:
    worker = echo.create_bot(transport)
    job = transport.job

    @transport.event_handler("on_connected")
    async def on_connected(transport: RoomTransport) -> None:
        if job is not None:
            await transport.set_metadata(
                json.dumps(
                    {
                        "job": job.id,
                        "room": job.room,
                        "metadata": job.metadata,
                        "participant": job.participant,
                    }
                )
            )

    return worker
