"""The supervisor's configuration: `schema` declares every key once, `parse` reads a
`config.toml` against it, `writer` writes one (for tests and benchmarks), and
`python -m supervisor.config.reference` prints the reference generated from the schema
(committed as docs/reference/configuration.md)."""

from supervisor.config.parse import ConfigError, load_config, parse_config
from supervisor.config.schema import (
    EVENT_LOOPS,
    JOB_TYPES,
    BotConfig,
    Config,
    DispatchConfig,
    LimitsConfig,
    LiveKitConfig,
    MetricsConfig,
    RecycleConfig,
    RoomConfig,
    RuntimeConfig,
    SupervisionConfig,
    WatchdogConfig,
    WebConfig,
)
from supervisor.config.writer import config_toml

__all__ = [
    "EVENT_LOOPS",
    "JOB_TYPES",
    "BotConfig",
    "Config",
    "ConfigError",
    "DispatchConfig",
    "LimitsConfig",
    "LiveKitConfig",
    "MetricsConfig",
    "RecycleConfig",
    "RoomConfig",
    "RuntimeConfig",
    "SupervisionConfig",
    "WatchdogConfig",
    "WebConfig",
    "config_toml",
    "load_config",
    "parse_config",
]
