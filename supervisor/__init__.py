"""A multi-room LiveKit supervisor for pipecat voice bots."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("livekit-supervisor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"
