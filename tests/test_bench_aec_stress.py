"""bench/aec_stress.py's busy-device feeder: every block handed exactly once and in order,
late but never early, with stalls that release their blocks back to back (the bench's
figures mean nothing if its feeder loses, repeats or reorders blocks)."""

import numpy as np
import pytest

from bench import aec_room, aec_stress


def _check(events, n_blocks, out_lat, hidden_s, feed):
    times = [t for _, _, t in events]
    assert times == sorted(times)  # delivered in time order
    for kind in ("ref", "cap"):
        idx = [j for k, j, _ in events if k == kind]
        assert idx == list(range(len(idx)))  # each block once, in order, none skipped
        t = np.array([tt for k, _, tt in events if k == kind])
        if kind == "ref":
            ideal = np.arange(len(idx)) * aec_room.BLOCK / aec_room.SR - out_lat - hidden_s
        else:
            ideal = (np.arange(len(idx)) + 1) * aec_room.BLOCK / aec_room.SR + aec_room.IN_LAT
        late = 1000.0 * (t - ideal)
        assert late.min() >= -1e-9  # never early
        assert late.max() <= aec_stress.STALL_MS[1] + aec_stress.JITTER_MAX_MS + 1.0
        np.testing.assert_allclose(late, feed.delays_ms[kind][: len(idx)], atol=1e-9)
    assert sum(k == "cap" for k, _, _ in events) == n_blocks and events[-1][0] == "cap"


def test_jittered_feed_hands_every_block_once_in_order():
    n = 400  # 32 s of 80 ms blocks
    for seed in range(3):
        for out_lat, hidden_s in ((0.02, 0.04), (0.06, -0.035)):
            feed = aec_stress.JitterFeed(seed)
            events = list(feed(n, out_lat, hidden_s))
            _check(events, n, out_lat, hidden_s, feed)
            assert events == list(aec_stress.JitterFeed(seed)(n, out_lat, hidden_s))  # reproducible
    # the jitter is there: typical lateness a few ms, stalls release blocks back to back
    d = np.concatenate(list(feed.delays_ms.values()))
    assert 1.0 < np.median(d) < aec_stress.JITTER_MAX_MS
    cap = np.array([t for k, _, t in events if k == "cap"])
    assert np.sum(np.diff(cap) < 0.01) >= 1  # a burst: two capture blocks within 10 ms


def test_punctual_feed_hands_the_reference_before_the_capture_it_plays_in():
    events = list(aec_room.ideal_feed(50, 0.02, 0.012))
    _check(events, 50, 0.02, 0.012, type("F", (), {"delays_ms": {"ref": np.zeros(60), "cap": np.zeros(60)}})())
    handed = 0
    for kind, j, t in events:
        if kind == "ref":
            handed += 1
        else:  # every block handed to the output by then (its callback time <= t), and no later one
            due = np.arange(60) * aec_room.BLOCK / aec_room.SR - 0.02 - 0.012 <= t
            assert handed == int(np.sum(due))


def test_the_canceller_clock_is_the_feed_s_and_is_restored():
    feed = aec_stress.JitterFeed(0)
    real = aec_stress.echo_mod.time
    with aec_stress.sim_clock(feed):
        for _, _, t in feed(5, 0.02, 0.0):
            assert aec_stress.echo_mod.time.monotonic() == t
    assert aec_stress.echo_mod.time is real


@pytest.mark.parametrize(("key", "sign"), [("volume", 1.0), ("volume-up-dt", -1.0)])
def test_the_volume_room_turns_the_echo_up_and_back(key, sign):
    """The `volume` room's echo is the same path, louder by its drawn volume_db between the
    first change and the one made during double talk (`volume-up-dt`: quieter, so the change
    made during double talk turns it up)."""
    from bench.room import speech_like

    room, dr, _ = aec_stress.Case(next(r for r in aec_stress.ROOMS if r.key == key), 3).draw()
    assert room.changes and not room.move_cm and 3.0 <= sign * room.volume_db <= 9.0
    moshi = np.array(speech_like(20.0, seed=3), np.float32) * 0.3
    sig = aec_room.signals(moshi, np.zeros(aec_room.SR, np.float32), room, dr)
    sr, m, d = aec_room.SR, int(dr.move_at * aec_room.SR), int(dr.dt_move_at * aec_room.SR)
    tail = sr // 2  # past the reverberation of what was played before the change
    quiet = aec_room.signals(
        moshi,
        np.zeros(sr, np.float32),
        aec_room.Room("same", room.delay_ms, room.rt60_s, room.drr_db, seed=room.seed),
        dr,
    )
    up = 20 * np.log10(np.std(sig.echo[m + tail : d]) / np.std(quiet.echo[m + tail : d]))
    assert abs(up - room.volume_db) < 0.1, (up, room.volume_db)
    np.testing.assert_allclose(sig.echo[d + tail : d + 2 * sr], quiet.echo[d + tail : d + 2 * sr], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sig.echo[:m], quiet.echo[:m], rtol=1e-4, atol=1e-6)


def test_the_rooms_beyond_the_issues_are_their_own_and_draw_like_the_others():
    """--beyond's rooms have keys of their own (a result is never filed under another room)
    and draw a room and a drive per seed as the issue's rooms do."""
    keys = [r.key for r in aec_stress.ROOMS + aec_stress.BEYOND]
    assert len(keys) == len(set(keys)), keys
    for st in aec_stress.BEYOND:
        room, drive, drawn = aec_stress.Case(st, 300).draw()
        assert room.name == f"{st.key}#300" and room.move_cm == st.move_cm and room.ser_db == st.ser_db, room
        assert drawn["user"] and drawn["moshi"], drawn
    with pytest.raises(SystemExit):
        aec_stress.main(["--beyond", "--rooms", "no-such-room", "--seeds", "1"])


def test_the_shoebox_rooms_draw_a_laptop_or_desk_geometry_and_move_its_microphone():
    """--shoebox's rooms: keys of their own, a geometry per seed with the microphone inside the
    room at the kind's distance from the loudspeaker, the response's measured RT60 near the
    room's, and a moved microphone changing the response as a room does (the high frequencies
    scrambled, the low ones hardly: bench/room.py shoebox_ir)."""
    from bench.room import shoebox_ir

    keys = [r.key for r in aec_stress.ROOMS + aec_stress.BEYOND + aec_stress.SHOEBOX]
    assert len(keys) == len(set(keys)), keys
    for st in aec_stress.SHOEBOX:
        for seed in (0, 1):
            room, drive, _ = aec_stress.Case(st, seed).draw()
            box = room.box
            assert box is not None and room.move_cm == st.move_cm and room.rt60_s == st.rt60_s
            d = np.linalg.norm(np.subtract(box.mic, box.source))
            lo, hi = aec_stress.BOX_DISTANCE_M[st.box]
            assert lo - 1e-6 <= d <= hi + 1e-6, d
            assert all(0.2 < m < dim - 0.2 for m, dim in zip(box.mic, box.dims)), box
    room, drive, _ = aec_stress.Case(next(r for r in aec_stress.SHOEBOX if r.key == "box-move4"), 2).draw()
    move = tuple(float(x) * room.move_cm / 100.0 for x in drive.move_dir)
    h, hm = shoebox_ir(room.box, room.rt60_s), shoebox_ir(room.box, room.rt60_s, move_m=move)
    assert abs(np.sum(h.astype(np.float64) ** 2) - 2 * 0.5**2) < 1e-3  # the unmoved response's scale
    n = 1 << 16
    H, Hm, f = np.fft.rfft(h, n), np.fft.rfft(hm, n), np.fft.rfftfreq(n, 1 / aec_room.SR)

    def changed_db(lo, hi):
        s = (f >= lo) & (f < hi)
        return 10 * np.log10(np.sum(np.abs(H[s] - Hm[s]) ** 2) / np.sum(np.abs(H[s]) ** 2))

    assert changed_db(100, 500) < -12.0 and changed_db(4000, 8000) > -3.0
    import pyroomacoustics as pra

    assert abs(pra.experimental.measure_rt60(h, fs=aec_room.SR) - room.rt60_s) < 0.1 * room.rt60_s
