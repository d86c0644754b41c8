"""The try-it page's token endpoint, its rules apart from HTTP (`supervisor.web`):
who gets a token, for which room, with which grants, and how often."""

from __future__ import annotations

from typing import Any

import pytest
from livekit import api

from supervisor.config import DispatchConfig, MetricsConfig, WebConfig
from supervisor.livekit_server.access import Credentials
from supervisor.web import KnownRooms, Refusal, TokenBuckets, TokenMinter

CREDENTIALS = Credentials("ws://127.0.0.1:7880", "APIkey", "a-secret-of-32-characters-or-more!")
KNOWN = KnownRooms(frozenset({"lobby"}), frozenset({"bot"}))
ASK = {"room": "lobby", "identity": "alice"}


def minter(
    listen: str = "127.0.0.1:9464", secret: str = "", **dispatch: Any
) -> TokenMinter:
    return TokenMinter(
        WebConfig(access_secret_env="WEB_SECRET" if secret else "", access_secret=secret),
        MetricsConfig(listen=listen),
        DispatchConfig(**dispatch),
        CREDENTIALS,
    )


def claims(answer: dict[str, str]) -> api.Claims:
    return api.TokenVerifier(CREDENTIALS.api_key, CREDENTIALS.api_secret).verify(answer["token"])


def refused(gate: TokenMinter, body: Any, known: KnownRooms = KNOWN) -> Refusal:
    with pytest.raises(Refusal) as caught:
        gate.mint(body, known)
    return caught.value


def test_a_participant_token_for_a_served_room_and_nothing_more() -> None:
    answer = minter().mint(ASK, KNOWN)
    assert answer["url"] == CREDENTIALS.url
    assert (answer["room"], answer["identity"]) == ("lobby", "alice")
    grants = claims(answer).video
    assert grants is not None
    assert (grants.room_join, grants.room) == (True, "lobby")
    assert (grants.can_publish, grants.can_subscribe, grants.can_publish_data) == (True,) * 3
    admin = (grants.room_admin, grants.room_create, grants.room_list, grants.room_record)
    assert not any(admin)
    assert not grants.agent


def test_off_a_loopback_address_only_with_an_access_secret() -> None:
    assert refused(minter(listen="0.0.0.0:9464"), ASK).status == 403
    open_gate = minter(listen="0.0.0.0:9464", secret="sesame")
    assert refused(open_gate, ASK).status == 401
    wrong = refused(open_gate, {**ASK, "secret": "open"})
    assert wrong.status == 401
    assert "sesame" not in wrong.reason
    assert open_gate.mint({**ASK, "secret": "sesame"}, KNOWN)["identity"] == "alice"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ([], 400, "JSON object"),
        ({"room": "lobby"}, 400, "identity"),
        ({"room": "lobby", "identity": "a b"}, 400, "identity"),
        ({"room": "lobby", "identity": "x" * 65}, 400, "identity"),
        ({"room": "lob/by", "identity": "alice"}, 400, "room"),
        ({"room": "lobby", "identity": "bot"}, 400, "a bot's"),
        ({"room": "elsewhere", "identity": "alice"}, 404, "no bot serves"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(body: Any, status: int, reason: str) -> None:
    refusal = refused(minter(), body)
    assert refusal.status == status
    assert reason in refusal.reason


def test_with_dispatch_any_room_and_with_an_agent_name_the_token_asks_for_it() -> None:
    automatic = minter(enabled=True).mint({**ASK, "room": "fresh"}, KNOWN)
    assert claims(automatic).room_config is None
    named = minter(enabled=True, agent_name="support").mint({**ASK, "room": "fresh"}, KNOWN)
    config = claims(named).room_config
    assert config is not None
    assert [agent.agent_name for agent in config.agents] == ["support"]


def test_each_address_gets_its_tokens_per_minute_then_waits() -> None:
    now = [0.0]
    buckets = TokenBuckets(3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(20.0)  # a token comes back every 20 s
    assert buckets.take("b") == 0.0  # another address has its own
    now[0] = 20.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
