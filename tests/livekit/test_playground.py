"""The try-it page in a real Chromium against a real `supervisor run` and livekit-server.

Chromium's fake microphone plays a 440 Hz tone from a WAV file; the page joins the
echo bot's room and measures the bot's audio with WebAudio (`#bot-level`'s
`data-peak-hz`), then the data bot's room, where a data message must come back. The
token endpoint's refusals are checked over HTTP on the same process. Chromium is
Debian's (`make chromium`), driven by playwright without a browser download.
"""

from __future__ import annotations

import array
import math
import os
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from supervisor.livekit_server.server import LiveKitServer
from tests.helpers.cli_process import REPO_ROOT, SupervisorConfig, serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DATA_BOT = "supervisor.bots.data:create_bot"
SCREENSHOT = os.environ.get("LKSUP_PLAYGROUND_SCREENSHOT")
"""Where to save the page once it hears the bot (docs/assets/try-it.png), if set."""

if not Path(CHROMIUM).exists():
    reason = "chromium is missing: `make chromium` installs Debian's package"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)
if not (REPO_ROOT / "supervisor/web/node_modules/livekit-client").exists():
    reason = "livekit-client is missing: `make web` installs it"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.async_api import Page, async_playwright  # noqa: E402


def tone_wav(path: Path, hz: float = 440.0, seconds: float = 4.0, rate: int = 48_000) -> Path:
    samples = array.array(
        "h", (int(9000 * math.sin(2 * math.pi * hz * n / rate)) for n in range(int(seconds * rate)))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    """A Chromium page whose microphone plays a 440 Hz tone (looped)."""
    wav = tone_wav(tmp_path / "tone.wav")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def join(page: Page, room: str) -> None:
    await page.fill("#room", room)
    await page.click("#join")
    await page.wait_for_function(
        "document.querySelector('#status').textContent.startsWith('in ')", timeout=30_000
    )


@pytest.mark.anyio
async def test_a_browser_hears_the_echo_bot_and_talks_to_the_data_bot(
    tmp_path: Path, livekit_server: LiveKitServer, page: Page
) -> None:
    config = SupervisorConfig(
        livekit_server, rooms=("web-echo", "web-data"), room_bots={"web-data": DATA_BOT}
    )
    async with serving(tmp_path, config) as (run, _):
        await page.goto(config.metrics_url + "/")
        await page.wait_for_selector("#rooms td:text-is('web-data')")  # listed from /status
        await join(page, "web-echo")
        await page.wait_for_function(
            "Math.abs(Number(document.querySelector('#bot-level').dataset.peakHz) - 440) < 30",
            timeout=30_000,
        )
        assert "bot" in await page.inner_text("#participants")
        if SCREENSHOT:
            await page.screenshot(path=SCREENSHOT, full_page=True)
        await page.click("#leave")
        await join(page, "web-data")
        await page.fill("#text", "hello bot")
        await page.click("#send")
        await page.wait_for_function(
            "document.querySelector('#messages').textContent.includes('\"reply_to\"')",
            timeout=30_000,
        )
        replies = await page.inner_text("#messages")
        assert '"text": "hello bot"' in replies, replies
        assert run.matches(r"\[web-echo\] try-it page: a token for guest-")


@pytest.mark.anyio
async def test_the_token_endpoint_refuses_what_it_must(
    tmp_path: Path, livekit_server: LiveKitServer
) -> None:
    config = SupervisorConfig(livekit_server, rooms=("web-only",), web={"tokens_per_minute": 4})
    async with (
        serving(tmp_path, config),
        aiohttp.ClientSession(config.metrics_url) as http,
    ):
        asked = [
            ({"room": "web-only", "identity": "alice"}, 200),
            ({"room": "web-only", "identity": "bad identity"}, 400),
            ({"room": "web-only", "identity": "bot"}, 400),
            ({"room": "nowhere", "identity": "alice"}, 404),
            ({"room": "web-only", "identity": "alice"}, 429),  # the fifth in a minute
        ]
        for body, status in asked:
            async with http.post("/web/token", json=body) as response:
                answer = await response.json()
                assert response.status == status, answer
        assert "Retry-After" in response.headers
        async with http.get("/web/livekit-client.js") as response:
            assert response.status == 200
            assert "LivekitClient" in await response.text()
