"""The try-it page: talk to a room's bot from a browser, the way LiveKit's playground
lets people try an agent, served by the metrics listener at `/`.

The page (`index.html`, `app.js`) lists the rooms from `/status`, fetches a join token
from `POST /web/token` and connects with livekit-client, LiveKit's JavaScript SDK,
pinned in `package.json` and installed beside it by the set-up (`make web`, docs/quickstart.md):
served from this folder, never fetched from a CDN.

The token endpoint mints tokens with the server's API secret, so it answers only:

- on a loopback listen address, or with `[web] access_secret_env` set, and then only to
  a request that presents that secret (compared in constant time);
- for a room this process serves, or any well-formed room name when automatic dispatch
  would bring a bot to it (with an `agent_name`, the token asks for that agent);
- for a well-formed identity that is not a bot's;
- `tokens_per_minute` times per client address (a token bucket per address).

A token is a participant's: join that one room, publish, subscribe, send data, for
`TOKEN_TTL`. Never an admin grant (room create, list, record, admin). Refusals are
JSON `{"error": ...}` with 400, 401, 403, 404 or 429, and never echo the secret.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web
from livekit import api

from supervisor.config import DispatchConfig, MetricsConfig, WebConfig
from supervisor.livekit_server.access import Credentials
from supervisor.process.rooms import RoomSet

log = logging.getLogger("supervisor")

FOLDER = Path(__file__).resolve().parent
CLIENT = FOLDER / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"
"""livekit-client's browser build, installed by `make web` (`npm ci` in this folder)."""
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript"}
TOKEN_TTL = timedelta(minutes=30)
IDENTITY = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
ROOM = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
MAX_BODY = 4096
ADDRESSES_KEPT = 10_000
"""Client addresses whose token buckets are kept; the fullest are forgotten first."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tokens_off(web: WebConfig, metrics: MetricsConfig) -> str | None:
    """Why no request can have a token, whoever asks; None: some can."""
    if not web.access_secret and not _loopback(metrics.host):
        return (
            f"metrics.listen = {metrics.listen!r} is not a loopback address and "
            "web.access_secret_env names no secret: the token endpoint is off"
        )
    return None


class Refusal(Exception):
    """A token request refused: its HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@attrs.define
class TokenBuckets:
    """`per_minute` tokens a client address may take per minute, refilled evenly."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = attrs.field(factory=dict)
    """address -> (tokens left, when counted)."""

    def take(self, address: str) -> float:
        """0 when `address` may have one more; else the seconds until it may."""
        now = self.clock()
        left, counted = self._buckets.get(address, (float(self.per_minute), now))
        left = min(float(self.per_minute), left + (now - counted) * self.per_minute / 60)
        if left < 1:
            self._buckets[address] = (left, now)
            return (1 - left) * 60 / self.per_minute
        self._buckets[address] = (left - 1, now)
        if len(self._buckets) > ADDRESSES_KEPT:
            fullest = max(self._buckets, key=lambda a: self._buckets[a][0])
            del self._buckets[fullest]
        return 0.0


@attrs.frozen
class KnownRooms:
    """What the token endpoint needs to know of the rooms, read on the supervisor's loop."""

    rooms: frozenset[str]
    bot_identities: frozenset[str]


@attrs.frozen
class TokenMinter:
    """The token endpoint's rules (see the module docstring), apart from HTTP."""

    web: WebConfig
    metrics: MetricsConfig
    dispatch: DispatchConfig
    credentials: Credentials

    def mint(self, body: Any, known: KnownRooms) -> dict[str, str]:
        """The answer to one token request's JSON body; `Refusal` when refused."""
        closed = tokens_off(self.web, self.metrics)
        if closed is not None:
            raise Refusal(403, closed)
        if not isinstance(body, dict):
            raise Refusal(400, "expected a JSON object with room and identity")
        if self.web.access_secret:
            offered = body.get("secret")
            if not isinstance(offered, str) or not hmac.compare_digest(
                offered.encode(), self.web.access_secret.encode()
            ):
                raise Refusal(401, "the access secret is missing or wrong")
        room, identity = body.get("room"), body.get("identity")
        if not isinstance(room, str) or not ROOM.match(room):
            raise Refusal(400, "room: expected 1-128 letters, digits, '.', '_' or '-'")
        if not isinstance(identity, str) or not IDENTITY.match(identity):
            raise Refusal(400, "identity: expected 1-64 letters, digits, '.', '_' or '-'")
        if identity in known.bot_identities:
            raise Refusal(400, f"identity: {identity!r} is a bot's")
        dispatched = self.dispatch.enabled  # a new room's first participant brings a bot
        if room not in known.rooms and not dispatched:
            raise Refusal(404, f"room: no bot serves {room!r} here")
        grants = api.VideoGrants(
            room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True
        )
        token = (
            api.AccessToken(self.credentials.api_key, self.credentials.api_secret)
            .with_identity(identity)
            .with_name(identity)
            .with_grants(grants)
            .with_ttl(TOKEN_TTL)
        )
        if dispatched and self.dispatch.agent_name and room not in known.rooms:
            agent = api.RoomAgentDispatch(agent_name=self.dispatch.agent_name)
            token = token.with_room_config(api.RoomConfiguration(agents=[agent]))
        return {
            "url": self.web.livekit_url or self.credentials.url,
            "token": token.to_jwt(),
            "room": room,
            "identity": identity,
        }


def known_rooms(room_set: RoomSet) -> KnownRooms:
    """The rooms a try-it page may join now, and the identities their bots use."""
    config = room_set.config
    rooms = {room.name for room in config.rooms}
    rooms |= {job.room for job in room_set.dispatched.values()}
    bots = {room.bot.identity for room in config.rooms} | {config.dispatch_bot.identity}
    return KnownRooms(frozenset(rooms), frozenset(bots))


def add_playground(
    app: web.Application,
    minter: TokenMinter,
    known_now: Callable[[], Awaitable[KnownRooms | None]],
) -> None:
    """Serve the page at `/` and its token endpoint at `/web/token` on `app`.

    `known_now` reads the rooms on the supervisor's loop; None while that loop is stalled
    (the request is then refused with 503)."""
    buckets = TokenBuckets(minter.web.tokens_per_minute)
    closed = tokens_off(minter.web, minter.metrics)
    if closed is not None:
        log.warning("try-it page: %s", closed)

    def page_file(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(FOLDER / name, headers={"Content-Type": PAGE_FILES[name]})

        return serve

    async def client(request: web.Request) -> web.StreamResponse:
        if not CLIENT.exists():
            return web.Response(status=503, text="livekit-client is missing: run `make web`\n")
        return web.FileResponse(CLIENT, headers={"Content-Type": "text/javascript"})

    async def token(request: web.Request) -> web.Response:
        address = request.remote or "?"
        wait = buckets.take(address)
        if wait:
            return _refused(429, f"too many token requests: try again in {wait:.0f} s",
                            {"Retry-After": str(max(1, round(wait)))})
        try:
            if request.content_length is not None and request.content_length > MAX_BODY:
                raise Refusal(400, f"expected a body of at most {MAX_BODY} bytes")
            try:
                body = json.loads(await request.content.read(MAX_BODY))
            except ValueError as err:
                raise Refusal(400, f"expected a JSON object: {err}") from err
            rooms = await known_now()
            if rooms is None:
                return _refused(503, "the supervisor's event loop did not answer in time")
            answer = minter.mint(body, rooms)
        except Refusal as refusal:
            log.info("try-it page: a token request from %s refused (%d): %s",
                     address, refusal.status, refusal.reason)
            return _refused(refusal.status, refusal.reason)
        log.info("[%s] try-it page: a token for %s (from %s)",
                 answer["room"], answer["identity"], address)
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    app.router.add_get("/", page_file("index.html"))
    app.router.add_get("/web/app.js", page_file("app.js"))
    app.router.add_get("/web/livekit-client.js", client)
    app.router.add_post("/web/token", token)


def _refused(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)
