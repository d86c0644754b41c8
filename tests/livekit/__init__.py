"""Every test that needs the real livekit-server: `conftest.py` marks them `livekit` and
runs them on asyncio (the rtc SDK is asyncio-only)."""
