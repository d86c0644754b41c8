"""`supervisor targets CONFIG`: this host's metrics endpoints, for Prometheus to find.

Each worker serves its metrics on the configured port plus its index
(`supervisor.process.workers`), and a hand-kept list of `host:port` pairs goes stale the
day a host gets more cores or a new host joins, so each host describes itself from the
config and worker count it runs with, in either of Prometheus' ways of finding targets
without a hand list: file-based discovery (a JSON target group per worker, labelled
`host` and `worker`, the default) or the SRV records of DNS discovery. The address is
what another machine dials (a loopback one is printed with a warning). How to wire
either into Prometheus: docs/observability/prometheus.md.
"""

from __future__ import annotations

import ipaddress
import json
import socket

import attrs

from supervisor.config import Config, ConfigError
from supervisor.process.workers import Shard

WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
SRV_TTL_SECONDS = 300


@attrs.frozen
class Target:
    """One worker's metrics endpoint and the labels Prometheus should give it."""

    host: str
    """The `host` label: which machine (the name a fleet view groups by)."""
    worker: int
    address: str
    """What Prometheus dials, without the port (an IPv6 address in brackets)."""
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return True


def _dialable(address: str) -> str:
    bare = address.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def _this_machine() -> str:
    """This machine's fully qualified name; its host name where resolving that only
    finds `localhost` (an /etc/hosts mapping the host name to 127.0.0.1)."""
    fqdn = socket.getfqdn()
    return socket.gethostname() if fqdn.split(".")[0] == "localhost" else fqdn


def host_targets(
    config: Config, workers: int, host: str | None = None, address: str | None = None
) -> list[Target]:
    """The metrics endpoint of each of this host's `workers` worker processes."""
    listen_host = config.metrics.host
    if address is None:
        address = _this_machine() if listen_host in WILDCARDS else listen_host
    if not address or any(c.isspace() or c in "/\"'" for c in address):
        raise ConfigError(f"--address {address!r}: expected a host name or an IP address")
    name = host if host is not None else socket.gethostname()
    if not name or any(c.isspace() for c in name):
        raise ConfigError(f"--host {name!r}: expected a name without spaces")
    return [
        Target(name, index, _dialable(address), Shard(index, workers).metrics(config.metrics).port)
        for index in range(workers)
    ]


def is_loopback(target: Target) -> bool:
    bare = target.address.strip("[]")
    return bare == "localhost" or (_is_ip(bare) and ipaddress.ip_address(bare).is_loopback)


def file_sd(targets: list[Target]) -> str:
    """Prometheus' file-based discovery format: one target group per worker."""
    groups = [
        {"targets": [t.endpoint], "labels": {"host": t.host, "worker": str(t.worker)}}
        for t in targets
    ]
    return json.dumps(groups, indent=2) + "\n"


def srv_records(targets: list[Target], name: str) -> str:
    """Zone-file lines: one SRV record per worker under `name` (e.g.
    `_lksup._tcp.fleet.example.`), equal priority and weight: Prometheus scrapes them all."""
    if not name.endswith(".") or not name.startswith("_"):
        raise ConfigError(
            f"--srv {name!r}: expected a fully qualified SRV name such as "
            "'_lksup._tcp.fleet.example.' (a leading underscore, a final dot)"
        )
    lines = []
    for target in targets:
        if _is_ip(target.address):
            raise ConfigError(
                f"--address {target.address!r}: an SRV record's target must be a host name "
                "(RFC 2782), not an IP address"
            )
        fqdn = target.address if target.address.endswith(".") else target.address + "."
        lines.append(f"{name} {SRV_TTL_SECONDS} IN SRV 0 0 {target.port} {fqdn}")
    return "\n".join(lines) + "\n"
