"""bench/aec_oracle.py: the canceller told the exact residual echo after a change during double
talk (docs/echo-cancellation.md, session 12) must be the canceller itself, with only that
estimate replaced, and leave the canceller as it was afterwards."""

import numpy as np

from bench import aec_oracle, aec_room
from bench.room import speech_like
from moshi_mlx.audio import echo_filter


def test_the_truth_about_the_residual_echo_helps_and_is_then_forgotten():
    moshi = np.array(speech_like(12.0, seed=3, f0=(100.0, 140.0)), np.float32) * 0.3
    # rectified: aec_room marks the user as speaking where their 20 ms mean is away from 0
    user = np.abs(np.array(speech_like(4.0, seed=5, f0=(180.0, 260.0)), np.float32)) * 0.3
    room = aec_room.Room("4 cm", 20.0, 0.45, 3.0, move_cm=4.0, seed=6)
    drive = aec_room.Drive(move_at=4.0, dt_start=6.0, dt_move_at=8.0)
    process, suppressor = echo_filter.KalmanEchoFilter.process, echo_filter.ResidualSuppressor
    res = aec_oracle.second_after_change(moshi, user, room, drive)
    assert res["block"][0] > res["canceller"][0] + 0.5, res
    assert res["frame"][0] > res["block"][0] - 0.5, res
    assert abs(res["block"][1]) < 1.0 and abs(res["frame"][1]) < 1.0, res  # the user kept
    assert echo_filter.KalmanEchoFilter.process is process and echo_filter.ResidualSuppressor is suppressor
    again = aec_oracle.second_after_change(moshi, user, room, drive, modes=("canceller",))
    assert again["canceller"] == res["canceller"], (again, res)  # nothing of the truth left behind


def test_the_truth_starts_in_the_filter_block_that_holds_the_change():
    """`_Truth.start` is a sample: the filter's 20 ms blocks before the one holding it keep the
    filter's own estimate, that block and those after it get the truth (it counted the runtime's
    80 ms blocks against the filter's 20 ms ones: the truth began at a quarter of the time)."""
    rng = np.random.default_rng(1)
    block, start = 480, 10 * 480 + 100
    echo = rng.standard_normal(20 * block).astype(np.float32)
    f = echo_filter.KalmanEchoFilter(block, 4 * block)
    told = []
    with aec_oracle.told_the_truth(aec_oracle._Truth(echo, start, "block")):
        for j in range(14):
            ref = rng.standard_normal(block).astype(np.float32)
            _, y = f.process(ref, echo[j * block : (j + 1) * block])
            r = echo[j * block : (j + 1) * block] - (0.0 if f.worse else y)
            spec = np.fft.rfft(np.concatenate([np.zeros(block, np.float32), r]))
            told.append(bool(np.allclose(f.residual, spec.real**2 + spec.imag**2, rtol=1e-4)))
    assert told == [False] * 10 + [True] * 4
