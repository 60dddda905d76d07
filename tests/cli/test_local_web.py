"""`moshi-web`'s argument errors: one line, exit code 2, before or instead of serving."""

import socket

import pytest

from moshi_mlx.cli.local_web import main, parser


def test_flags_are_local_model_and_sampling_flags_plus_server():
    args = parser().parse_args(["-q", "4", "--temp", "0.5", "--seed", "3"])
    assert (args.quantized, args.temp, args.seed, args.host, args.port, args.max_lag_ms) == (
        4,
        0.5,
        3,
        "127.0.0.1",
        8998,
        400.0,
    )


def test_max_lag_off_is_accepted_as_by_local_and_translate():
    """`--max-lag-ms off` lifts the bound in moshi-web too (it was 'invalid float value'): the
    three live tools parse the flag with one function (cli/flags.py add_max_lag_arg)."""
    from moshi_mlx.cli import local, translate

    for tool in (local, translate):
        assert tool.parser().parse_args(["--max-lag-ms", "off"]).max_lag_ms is None
    assert parser().parse_args(["--max-lag-ms", "off"]).max_lag_ms is None
    assert parser().parse_args(["--max-lag-ms", "250"]).max_lag_ms == 250.0


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--max-lag-ms", "0"], "--max-lag-ms must be > 0, got 0"),
        (["--max-lag-ms", "nan"], "--max-lag-ms must be a finite number"),
        (["--host", ""], "--host is empty"),  # it listened on every interface, printing http://:8998/
        (["--temp", "-1"], "--temp must be >= 0, got -1"),  # the shared flag checks (moshi_mlx.validation)
        (["--top-p", "2"], "--top-p must be in [0, 1], got 2"),
        (["--temp", "9"], "sampling flags: setting 'temp' must be between 0 and 5"),
    ],
)
def test_bad_values_are_one_line(argv, match, capsys):
    assert main(["--model", "random-tiny", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and match in err[-1], err
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize(
    "value, match", [("-5", "--slow-step-ms must be >= 0, got -5"), ("nan", "--slow-step-ms must be a finite number")]
)
def test_slow_step_ms_is_range_checked(value, match, capsys):
    """The hidden test flag --slow-step-ms is checked as moshi-local's is (it took any float: a
    negative or NaN delay went to the server). Parsed only: on the old code main() would serve."""
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--slow-step-ms", value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err


def test_port_in_use_is_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["--model", "random-tiny", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "--port" in err, err


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_a_host_open_to_the_network_is_said(host, capsys, monkeypatch):
    """--host 0.0.0.0 opens the port to the network (no password): one NOTE line says so before
    the model loads; the default host says nothing."""
    import moshi_mlx.web.server

    served = []
    monkeypatch.setattr(moshi_mlx.web.server, "serve", lambda engine, host, port, **kw: served.append((host, port)))
    assert main(["--model", "random-tiny", "--host", host, "--port", "0"]) == 0
    assert served == [(host, 0)]
    notes = [line for line in capsys.readouterr().err.splitlines() if "listens beyond this machine" in line]
    if host == "0.0.0.0":
        assert len(notes) == 1 and notes[0].startswith("NOTE: --host 0.0.0.0") and "no password" in notes[0], notes
    else:
        assert notes == []


def test_sigterm_mid_conversation_stops_cleanly(tmp_path):
    """The server is stopped (SIGTERM) while a client is talking: the conversation is
    closed, the log says so, exit code 143 and one line, no traceback."""
    import asyncio
    import json
    import signal
    import subprocess
    import sys
    import threading

    import aiohttp
    import numpy as np

    log = tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moshi_mlx.local_web", "--model", "random-tiny", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        url = lines[0].split()[1]

        async def talk():
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(url + "api/ws")
                await ws.send_str(json.dumps({"type": "start", "sample_rate": 24000}))
                block = (np.zeros(1920, "<i2")).tobytes()
                got = 0
                while got < 10:
                    await ws.send_bytes(block)
                    while (await ws.receive(timeout=30)).type != aiohttp.WSMsgType.BINARY:
                        pass
                    got += 1
                proc.send_signal(signal.SIGTERM)  # while the conversation runs
                while (await ws.receive(timeout=30)).type not in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    pass

        asyncio.run(talk())
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "session 1 started" in text and "session 1 ended" in text, text
    assert "interrupted (SIGTERM)" in text.splitlines()[-1] and "Traceback" not in text, text
