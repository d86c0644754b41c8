"""Built-in bots that need no outside service, and loading a bot named in config."""

from __future__ import annotations

import importlib

from actors.room.settings import BotFactory


class BotLoadError(Exception):
    """The configured `module:function` does not name a callable."""


def load_bot(path: str) -> BotFactory:
    """Import the factory `module:function` names, at start-up, so a typo fails early."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BotLoadError(f"cannot import module {module_name!r}: {err}") from err
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise BotLoadError(f"module {module_name!r} has no callable {attribute!r}")
    return factory
