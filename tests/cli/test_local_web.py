"""`moshi-web`'s argument errors: one line, exit code 2, before or instead of serving."""

import socket

import pytest

from moshi_mlx.cli.local_web import main, parser


def test_flags_are_local_model_and_sampling_flags_plus_server():
    args = parser().parse_args(["-q", "4", "--temp", "0.5", "--seed", "3"])
    assert (args.quantized, args.temp, args.seed, args.host, args.port, args.max_lag_ms) == (4, 0.5, 3, "127.0.0.1", 8998, 400.0)


@pytest.mark.parametrize("argv, match", [
    (["--port", "70000"], "--port must be in 0..65535"),
    (["--max-lag-ms", "0"], "--max-lag-ms must be positive"),
    (["--temp", "-1"], "--temp must be >= 0, got -1"),  # the shared flag checks (moshi_mlx.validation)
    (["--top-p", "2"], "--top-p must be in [0, 1], got 2"),
    (["--temp", "9"], "sampling flags: setting 'temp' must be between 0 and 5"),
])
def test_bad_values_are_one_line(argv, match, capsys):
    assert main(["--model", "random-tiny", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and match in err[-1], err
    assert "Traceback" not in "\n".join(err)


def test_port_in_use_is_one_line(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["--model", "random-tiny", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "--port" in err, err
