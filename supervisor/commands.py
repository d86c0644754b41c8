"""The commands that report and exit: `check` (what a config would run), `targets`
(this host's metrics endpoints for Prometheus) and `token` (a join token)."""

from __future__ import annotations

import sys
from datetime import timedelta

from supervisor.config import Config
from supervisor.dispatch.fleet import fleet_room, probe_url
from supervisor.livekit_server.access import join_token
from supervisor.livekit_server.source import for_token
from supervisor.observability.targets import file_sd, host_targets, is_loopback, srv_records
from supervisor.process.recycle import describe
from supervisor.web import tokens_off


def _web_line(config: Config) -> str:
    web = config.web
    if not web.enabled:
        return "try-it page: off"
    if web.access_secret:
        tokens = f"tokens for requests presenting ${web.access_secret_env}"
    elif tokens_off(web, config.metrics):
        tokens = "no tokens: the listen address is not loopback and no access secret is set"
    else:
        tokens = "tokens on loopback"
    return (f"try-it page: http://{config.metrics.listen}/ ({tokens}, "
            f"{web.tokens_per_minute} a minute per client)")


def check(config: Config) -> None:
    """Report what a valid config would run, without connecting anywhere."""
    print(f"config OK: {len(config.rooms)} room(s) on {config.livekit.url}")
    if config.livekit.cluster_urls:
        print(f"  cluster: also {', '.join(config.livekit.cluster_urls)} (the agent worker "
              "registers with every node)")
    print(f"  bot: {config.bot.factory} as {config.bot.identity!r}, "
          f"{config.bot.audio_in_sample_rate} Hz in, {config.bot.audio_out_sample_rate} Hz out, "
          f"{config.bot.audio_frame_ms} ms frames, VAD {'on' if config.bot.vad else 'off'}")
    sv = config.supervision
    print(f"  supervision: {sv.max_restarts} restarts within {sv.within_seconds:g} s per room, "
          f"backoff {sv.backoff_initial_seconds:g}..{sv.backoff_max_seconds:g} s, "
          f"quarantine {sv.quarantine_seconds:g} s, shutdown {sv.shutdown_timeout_seconds:g} s")
    mt = config.metrics
    per_room = (
        f"per-room series for up to {mt.max_room_series} rooms"
        if mt.per_room_labels
        else "no per-room series"
    )
    print(f"  metrics: http://{mt.listen}/metrics (and /healthz, /readyz, /status), {per_room}")
    wd = config.watchdog
    print(f"  watchdog: a loop stalled {wd.stall_seconds:g} s is logged and fails /healthz; "
          f"with --workers, a worker stalled {wd.restart_after_seconds:g} s is restarted")
    ds = config.dispatch
    if ds.enabled:
        offers = f"jobs for agent {ds.agent_name!r}" if ds.agent_name else "every new room"
        per = {"room": "a bot per room", "participant": "a bot per participant who joins",
               "publisher": "a bot per participant who publishes"}[ds.job_type]
        limit = f"{ds.max_duration_seconds:g} s" if ds.max_duration_seconds else "none"
        print(f"  dispatch: {offers}, {per}, up to {ds.max_rooms} job(s) or load "
              f"{ds.load_threshold:g}; accept hook {ds.accept or 'none'}; bot leaves "
              f"{ds.idle_timeout_seconds:g} s after the last participant; max duration {limit}; "
              f"drain {ds.drain_seconds:g} s")
        bot = config.dispatch_bot
        same = " (the [bot])" if ds.bot is None else ""
        print(f"  dispatched rooms' bot: {bot.factory}{same}, identity {bot.identity!r}"
              + (" plus the job's id" if ds.job_type != "room" else ""))
        print(f"  fleet: {fleet_room(ds.agent_name)!r}, restoring the jobs of a worker silent "
              f"{ds.restore_after_seconds:g} s whose probe does not answer; this one's probe "
              f"{probe_url(config)}" if ds.restore else "  fleet: off (restore = false)")
        print("  on SIGTERM: running jobs handed over to the fleet (handoff)" if ds.handoff
              else f"  on SIGTERM: running jobs go on here up to drain {ds.drain_seconds:g} s")
        if ds.checkpoint:
            print("  each job's offered state in the fleet record: a restore resumes it")
    else:
        print("  dispatch: off")
    print(f"  recycle: {describe(config)}")
    print(f"  {_web_line(config)}")
    for room in config.rooms:
        extras = [f"bot {room.bot.factory}"] if room.bot != config.bot else []
        extras += ["end-to-end encrypted"] if room.e2ee_key else []
        print(f"  room {room.name}{' (' + ', '.join(extras) + ')' if extras else ''}")


def print_targets(
    config: Config, workers: int, host: str | None, address: str | None, srv: str | None
) -> None:
    """This host's metrics endpoints on stdout, for Prometheus (`observability.targets`)."""
    found = host_targets(config, workers, host, address)
    if any(map(is_loopback, found)):
        print(f"supervisor: warning: {found[0].address} is a loopback address: only a "
              f"Prometheus on this host can scrape it (metrics.listen = "
              f"{config.metrics.listen!r}; for a fleet, listen on this host's address or "
              "0.0.0.0, or pass --address)", file=sys.stderr)
    print(srv_records(found, srv) if srv else file_sd(found), end="")


def token(config: Config, room: str, identity: str, ttl_hours: float) -> None:
    """Print a join token and the URL, for a person joining from a browser client."""
    credentials = for_token(config.livekit)
    jwt = join_token(credentials, room, identity, timedelta(hours=ttl_hours))
    print(f"url:   {credentials.url}")
    print(f"token: {jwt}")
