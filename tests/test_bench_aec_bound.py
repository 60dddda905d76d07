"""bench/aec_bound.py: the oracle behind the limit on double talk after a move (docs/echo-
cancellation.md) must subtract the path the room really had before the move."""

import numpy as np
import pytest

from bench import aec_bound, aec_room
from bench.room import speech_like


def test_the_old_path_is_the_rooms_own():
    """A 2 cm move leaves most of the echo to the exact old path (more than 7.6 cm does), and
    that path then leaves the ideal mask more to work with than the microphone does."""
    moshi = np.array(speech_like(22.0, seed=3, f0=(100.0, 140.0)), np.float32) * 0.3
    # rectified: aec_room marks the user as speaking where their 20 ms mean is away from 0
    user = np.abs(np.array(speech_like(4.0, seed=5, f0=(180.0, 260.0)), np.float32)) * 0.3
    small = aec_bound.room_second_after_move(
        moshi, user, aec_room.Room("2 cm", 20.0, 0.45, 3.0, move_cm=2.0, seed=6), hops=(240,)
    )
    large = aec_bound.room_second_after_move(
        moshi, user, aec_room.Room("7.6 cm", 10.0, 0.8, -3.0, move_cm=7.6, seed=8), hops=(240,)
    )
    assert 8.0 <= small["old_path_removes_db"] <= 30.0, small  # the old path, not the new one
    assert small["old_path_removes_db"] > large["old_path_removes_db"] + 3.0, (small, large)
    assert small["ideal_mask_after_old_path_db"] > small["ideal_mask_20ms_db"] + 1.0, small


def test_a_user_starting_just_after_a_change_is_scored_from_their_first_words():
    """Where the user starts 0.4 s after a change made while Moshi talked alone (no change in
    the double talk), the bound is over the user's first second and the old path is the one
    before that change: it leaves part of the new echo, not none (nor fails on the double
    talk's absent change)."""
    moshi = np.array(speech_like(22.0, seed=3, f0=(100.0, 140.0)), np.float32) * 0.3
    user = np.abs(np.array(speech_like(4.0, seed=5, f0=(180.0, 260.0)), np.float32)) * 0.3
    room = aec_room.Room("2 cm", 20.0, 0.45, 3.0, move_cm=2.0, seed=6)
    drive = aec_room.Drive(move_at=7.0, dt_start=7.4, dt_move_at=float("inf"))
    res = aec_bound.room_second_after_move(moshi, user, room, drive, hops=(240,))
    assert 8.0 <= res["old_path_removes_db"] <= 30.0, res
    assert res["ideal_mask_after_old_path_db"] > res["ideal_mask_20ms_db"] + 1.0, res


def test_the_best_gain_bounds_every_mask_and_an_exact_echo_estimate_falls_short_of_it():
    """The phase-sensitive mask is per bin the gain in [0, 1] nearest the user's voice, so it
    scores at least the ideal ratio mask; a suppressor that subtracts the echo's exact power
    (the best of the usual kind) scores at most it, and more after the old path than on the
    microphone."""
    moshi = np.array(speech_like(22.0, seed=3, f0=(100.0, 140.0)), np.float32) * 0.3
    user = np.abs(np.array(speech_like(4.0, seed=5, f0=(180.0, 260.0)), np.float32)) * 0.3
    res = aec_bound.room_second_after_move(
        moshi, user, aec_room.Room("4 cm", 20.0, 0.45, 3.0, move_cm=4.0, seed=6), hops=(240,)
    )
    for where in ("20ms", "after_old_path"):
        assert res[f"best_mask_{where}_db"] >= res[f"ideal_mask_{where}_db"], res
        assert res[f"subtract_mask_{where}_db"] <= res[f"best_mask_{where}_db"], res
    assert res["subtract_mask_after_old_path_db"] > res["subtract_mask_20ms_db"] + 1.0, res


def test_an_unknown_mask_is_refused():
    x = np.zeros(4800, np.float32)
    with pytest.raises(ValueError, match="unknown mask kind"):
        aec_bound.ideal_mask_snr(x, x, np.ones(2400, bool), 240, kind="binary")
