"""A real headless Chromium driven over the Chrome DevTools Protocol, and the web server in a
subprocess, for the page's tests and for `scripts/web_screenshot.py`. No selenium or chromedriver: one WebSocket per page (aiohttp,
already a dependency) and a handful of CDP commands.

Flags: a closed network (no first-run, sync, component updates, background requests or QUIC),
a fresh profile, and a fake microphone that plays a WAV file, with the permission prompt
answered yes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("MOSHI_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_flags(user_data_dir: str, fake_mic_wav: str | None) -> list[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--metrics-recording-only",
        "--no-default-browser-check",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        f"--user-data-dir={user_data_dir}",
        "--remote-debugging-port=0",
        "--window-size=900,900",
    ]
    if fake_mic_wav:
        flags += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_mic_wav}",
        ]
    return flags


class CdpError(RuntimeError):
    pass


class Page:
    """One tab: send CDP commands, evaluate JavaScript."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self._id = 0
        self.console: list[str] = []

    async def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self._id += 1
        my_id = self._id
        await self.ws.send_str(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        return await asyncio.wait_for(self._reply(my_id, method), timeout)

    async def _reply(self, my_id: int, method: str) -> dict:
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise CdpError(f"DevTools connection closed during {method}")
            data = json.loads(msg.data)
            if data.get("id") == my_id:
                if "error" in data:
                    raise CdpError(f"{method}: {data['error']}")
                return data.get("result", {})
            if data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(data["params"]["exceptionDetails"])[:500])

    async def evaluate(self, expression: str, user_gesture: bool = False):
        r = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True, "userGesture": user_gesture},
        )
        if "exceptionDetails" in r:
            raise CdpError(
                f"{expression[:60]}: {r['exceptionDetails'].get('text')} "
                f"{r['exceptionDetails'].get('exception', {}).get('description', '')}"
            )
        return r.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.25):
        """Poll until the expression is truthy; returns its value (TimeoutError after `timeout`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"still false after {timeout:g} s: {expression}")
            await asyncio.sleep(interval)


class Chromium:
    """`async with Chromium(fake_mic_wav=...) as browser: page = await browser.open(url)`."""

    def __init__(self, fake_mic_wav: str | os.PathLike | None = None, executable: str | None = None):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError("no Chromium found (scripts/setup_browser.sh installs Debian's)")
        self.fake_mic_wav = None if fake_mic_wav is None else os.fspath(fake_mic_wav)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._profile: tempfile.TemporaryDirectory | None = None
        self._http: aiohttp.ClientSession | None = None
        self._pages: list[Page] = []
        self.stderr_lines: list[str] = []

    async def __aenter__(self) -> "Chromium":
        self._profile = tempfile.TemporaryDirectory(prefix="moshi-chromium-", ignore_cleanup_errors=True)
        # its own process group, so its helper processes go with it
        self.proc = subprocess.Popen(
            [self.executable, *chromium_flags(self._profile.name, self.fake_mic_wav), "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._read_port(), 60)
        except BaseException:
            self._kill()
            raise
        # keep draining stderr so Chromium never blocks on a full pipe
        loop.run_in_executor(None, self._drain)
        self._http = aiohttp.ClientSession()
        return self

    async def _read_port(self) -> None:
        loop = asyncio.get_running_loop()
        while self.port is None:
            line = await loop.run_in_executor(None, self.proc.stderr.readline)
            if not line:
                raise CdpError("Chromium exited before DevTools listened:\n" + "".join(self.stderr_lines[-20:]))
            self.stderr_lines.append(line)
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                self.port = int(m.group(1))

    def _drain(self) -> None:
        for line in self.proc.stderr:
            if len(self.stderr_lines) < 2000:
                self.stderr_lines.append(line)

    async def open(self, url: str) -> Page:
        async with self._http.put(f"http://127.0.0.1:{self.port}/json/new?{url}") as r:
            target = await r.json(content_type=None)
        ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        self._pages.append(page)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        return page

    async def screenshot(self, page: Page, path: str | os.PathLike, width: int = 820, height: int = 720) -> None:
        import base64

        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        r = await page.send("Page.captureScreenshot", {"format": "png"})
        Path(path).write_bytes(base64.b64decode(r["data"]))

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # helpers still running (renderers, zygote)
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    async def __aexit__(self, *exc) -> None:
        for page in self._pages:
            await page.ws.close()
        if self._http is not None:
            await self._http.close()
        self._kill()


@contextlib.contextmanager
def web_server(*extra: str, log_path: str | os.PathLike, timeout: float = 120.0):
    """`python -m moshi_mlx.local_web --model random-tiny --port 0 ...` in a subprocess; yields its
    URL. Stopped with SIGINT (as Ctrl-C would), so its log ends with the session summaries."""
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moshi_mlx.local_web", "--model", "random-tiny", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        m = re.search(r"http://\S+", lines[0]) if lines else None
        if m is None:
            raise RuntimeError(
                f"the server printed no URL (exit code {proc.poll()}):\n" + Path(log_path).read_text()[-2000:]
            )
        yield m.group(0)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def fake_microphone_wav(path: str | os.PathLike, seconds: float = 4.0, rate: int = 48_000) -> None:
    """A voice-like signal (a 140 Hz buzz with formant-ish harmonics, syllables every 0.25 s,
    pauses every second) as 16-bit WAV, for Chromium's fake audio capture."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 2 * t), 0, None) * ((t % 1.0) < 0.7)
    x = 0.25 * buzz / np.max(np.abs(buzz)) * syllables
    sf.write(os.fspath(path), x.astype(np.float32), rate, subtype="PCM_16")
