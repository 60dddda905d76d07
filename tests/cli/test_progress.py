"""The progress bar: one redrawn line on a terminal, at most one line per 10% otherwise."""

import io

from moshi_mlx.cli.progress import Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_log_mode_prints_deciles_and_a_final_line():
    s = io.StringIO()
    with Progress(100, label="enc", unit="frames", stream=s) as bar:
        for _ in range(100):
            bar.update(1)
    lines = s.getvalue().splitlines()
    assert 2 <= len(lines) <= 11
    assert lines[-1].startswith("enc: [") and "100.0% 100/100 frames" in lines[-1]


def test_tty_mode_redraws_one_line():
    s = _Tty()
    with Progress(10, stream=s, min_interval=0.0) as bar:
        bar.update(5)
    out = s.getvalue()
    assert out.count("\n") == 1 and out.count("\r") == 2 and "50.0%" in out


def test_unknown_total():
    s = io.StringIO()
    with Progress(None, unit="frames", stream=s) as bar:
        bar.update(3)
    assert "3 frames" in s.getvalue()
