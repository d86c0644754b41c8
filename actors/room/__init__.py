"""One LiveKit room as an actor tree, and the pipecat transport a bot sees of it."""

from actors.room.room import room_spec
from actors.room.settings import BotFactory, RoomSettings
from actors.room.stats import RoomStats
from actors.room.transport import RoomTransport

__all__ = ["BotFactory", "RoomSettings", "RoomStats", "RoomTransport", "room_spec"]
