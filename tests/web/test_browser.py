"""The page in a real headless Chromium (Debian's, installed by scripts/setup_browser.sh) with a
fake microphone playing a WAV file, against `python -m moshi_mlx.local_web --model random-tiny`:
Moshi's voice is played (non-silent), the transcript and the lag are shown, a second page is
told "busy" while the first goes on, the recording holds both sides, and the server logged one
session. In CI (MOSHI_REQUIRE_BROWSER=1) a missing Chromium is a failure, elsewhere a skip."""

import asyncio
import json
import os

import pytest

from .browser import Chromium, find_chromium, fake_microphone_wav, web_server

PAGE_READY = (
    "document.readyState === 'complete' && window.moshiStats !== undefined "
    "&& document.getElementById('settings').elements.length > 0"
)
CLICK_START = "document.getElementById('start').click()"
STATS = "JSON.stringify(window.moshiStats)"
# the downloaded recording, read back: peak of each channel (left: microphone, right: Moshi)
RECORDING_PEAKS = """(async () => {
  const href = document.getElementById('recording').href;
  const buf = await (await fetch(href)).arrayBuffer();
  const v = new DataView(buf);
  const pcm = new Int16Array(buf, 44);
  let l = 0, r = 0;
  for (let i = 0; i + 1 < pcm.length; i += 2) { l = Math.max(l, Math.abs(pcm[i])); r = Math.max(r, Math.abs(pcm[i + 1])); }
  return {riff: String.fromCharCode(v.getUint8(0), v.getUint8(1), v.getUint8(2), v.getUint8(3)),
          channels: v.getUint16(22, true), rate: v.getUint32(24, true), frames: pcm.length / 2, left: l, right: r};
})()"""


def _chromium_or_skip() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("MOSHI_REQUIRE_BROWSER"):
            pytest.fail("MOSHI_REQUIRE_BROWSER is set but no Chromium is installed (scripts/setup_browser.sh)")
        pytest.skip("no Chromium here (scripts/setup_browser.sh installs it)")
    return path


async def _stats(page) -> dict:
    return json.loads(await page.evaluate(STATS))


def test_conversation_in_headless_chromium(tmp_path):
    chromium = _chromium_or_skip()
    wav = tmp_path / "mic.wav"
    fake_microphone_wav(wav)
    log_path = tmp_path / "server.log"

    async def drive(url: str) -> dict:
        async with Chromium(wav, executable=chromium) as browser:
            page = await browser.open(url)
            await page.wait_for(PAGE_READY, 60)
            await page.evaluate(CLICK_START, user_gesture=True)
            # a few seconds of conversation: Moshi's voice played and its text shown
            await page.wait_for(
                "moshiStats.state.startsWith('live') && moshiStats.nonSilentSamples > "
                "moshiStats.sampleRate && moshiStats.textEvents >= 5",
                90,
            )
            await page.wait_for("moshiStats.lagMs !== null", 30)
            first = await _stats(page)
            shown = await page.evaluate(
                "[document.getElementById('transcript').textContent, document.getElementById('lag').textContent]"
            )

            # a second page, while the first is talking
            other = await browser.open(url)
            await other.wait_for(PAGE_READY, 60)
            await other.evaluate(CLICK_START, user_gesture=True)
            await other.wait_for("moshiStats.busy === true", 60)
            busy = await _stats(other)
            notice = await other.evaluate("document.getElementById('notice').textContent")

            # the first is undisturbed
            before = await _stats(page)
            await page.wait_for(
                f"moshiStats.blocksReceived > {before['blocksReceived'] + 25} "
                f"&& moshiStats.textEvents > {before['textEvents']}",
                60,
            )
            after = await _stats(page)

            # stop: the recording of both sides is offered
            await page.evaluate("document.getElementById('stop').click()", user_gesture=True)
            await page.wait_for("!document.getElementById('download').hidden", 30)
            peaks = await page.evaluate(RECORDING_PEAKS)
            return {
                "first": first,
                "shown": shown,
                "busy": busy,
                "notice": notice,
                "after": after,
                "peaks": peaks,
                "console": page.console + other.console,
            }

    with web_server(log_path=log_path) as url:
        r = asyncio.run(drive(url))
    log = log_path.read_text()

    first = r["first"]
    assert first["errors"] == [], r["console"]
    assert first["peak"] > 1000  # int16: Moshi's voice (noise, from the demo model) is audible
    assert first["session"] == 1 and first["blocksSent"] > 10 and first["blocksReceived"] > 10
    transcript, lag = r["shown"]
    assert len(transcript.strip()) >= 10  # the demo model's text (its tiny tokenizer), shown live
    assert lag.endswith(" ms")
    assert r["busy"]["busy"] and r["busy"]["state"] == "busy" and r["busy"]["session"] is None
    assert "already in a conversation" in r["notice"]
    assert r["after"]["state"].startswith("live") and r["after"]["errors"] == []
    p = r["peaks"]
    assert p["riff"] == "RIFF" and p["channels"] == 2 and p["frames"] > p["rate"]  # over a second recorded
    assert p["left"] > 1000 and p["right"] > 1000  # the fake microphone and Moshi, both recorded

    assert log.count("session 1 started") == 1 and "session 2" not in log, log
    assert "busy: refused a second client" in log and "session 1 ended" in log, log


# the lag bar for a lag (server, browser) in ms, the page's own drawing (showLag) with the info it
# read from /api/info; max_lag_ms given: as if the server had that bound
LAG_BAR = """((server, browser, maxLagMs) => {
  if (maxLagMs !== undefined) info.max_lag_ms = maxLagMs;
  moshiStats.serverLagMs = server; moshiStats.browserLagMs = browser; showLag();
  return [moshiStats.lagScaleMs, document.getElementById('lagbar').style.width];
})"""


def test_lag_bar_scales_without_lag_control(tmp_path):
    """With --max-lag-ms off the lag is unbounded: the bar scales to the largest lag seen (from
    1 s, doubling), not to the 400 ms the page fell back to (where 700 ms filled it); with a
    bound, to the bound plus the browser's 240 ms queue."""
    chromium = _chromium_or_skip()
    wav = tmp_path / "mic.wav"
    fake_microphone_wav(wav, seconds=1.0)

    async def drive(url: str) -> dict:
        async with Chromium(wav, executable=chromium) as browser:
            page = await browser.open(url)
            await page.wait_for(PAGE_READY, 60)
            bars = {"info": await page.evaluate("info.max_lag_ms")}
            for name, args in (("small", "60, 40"), ("700", "600, 100"), ("2500", "2400, 100"), ("back", "300, 50")):
                bars[name] = await page.evaluate(f"{LAG_BAR}({args})")
            bars["bound"] = await page.evaluate(f"{LAG_BAR}(220, 100, 400)")
            return bars

    with web_server("--max-lag-ms", "off", log_path=tmp_path / "server.log") as url:
        bars = asyncio.run(drive(url))
    assert bars["info"] is None  # /api/info: lag control off
    assert bars["small"] == [1000, "10%"]
    assert bars["700"] == [1000, "70%"]
    assert bars["2500"] == [4000, "62.5%"]
    assert bars["back"] == [4000, "8.75%"]  # the largest lag seen stays the scale
    assert bars["bound"] == [640, "50%"]
