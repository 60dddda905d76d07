"""Regenerate docs/web.png: the page in headless Chromium a few seconds into a conversation
with the demo model (fake microphone), settings open.

    PYTHONPATH=. .venv/bin/python scripts/web_screenshot.py [docs/web.png]
"""

import asyncio
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.web.browser import Chromium, fake_microphone_wav, web_server  # noqa: E402


async def shoot(url: str, wav: str, out: str) -> None:
    async with Chromium(wav) as browser:
        page = await browser.open(url)
        await page.wait_for(
            "window.moshiStats !== undefined && document.getElementById('settings').elements.length", 60
        )
        await page.evaluate("document.getElementById('settings-box').open = true")
        await page.evaluate("document.getElementById('start').click()", user_gesture=True)
        await page.wait_for("moshiStats.textEvents >= 40 && moshiStats.lagMs !== null", 90)
        await browser.screenshot(page, out, width=820, height=700)


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "docs/web.png"
    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "mic.wav")
        fake_microphone_wav(wav)
        with web_server(log_path=os.path.join(tmp, "server.log")) as url:
            asyncio.run(shoot(url, wav, out))
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
