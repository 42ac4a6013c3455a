"""Engine: 4 sessions batched == the same 4 alone (greedy), joins/leaves between steps, per-session failures on bad
input never touch other sessions, cancel, slot limits, the threaded respond() path."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from a2llm_rt.engine.engine import EngineBusyError
from a2llm_rt.engine.events import AudioChunk, Error, TurnEnd
from a2llm_rt.errors import InputError
from tests.engine.engine_helpers import greedy_engine, of, summary, tone

pytestmark = pytest.mark.usefixtures("one_thread")

AUDIO = [tone(0.4, 220.0), tone(0.9, 330.0), tone(0.25, 150.0, amp=0.6), tone(1.3, 440.0, amp=0.1)]


def answer_ids(session) -> list[int]:
    return list(session.history.ids)


@pytest.fixture(scope="module")
def alone():
    """Each audio answered by a fresh single-session engine: (history ids, summary)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope: the one_thread fixture is not active yet
    out = []
    for a in AUDIO:
        eng = greedy_engine(max_sessions=4)
        s = eng.new_session(session_id=0)
        ev = eng.run_turn(s, a)
        out.append((answer_ids(s), summary(ev, 0)))
    torch.set_num_threads(n)
    return out


def same(a: dict, b: dict) -> None:
    assert a["text"] == b["text"]
    assert a["end"].counts == b["end"].counts and a["end"].reason == b["end"].reason
    np.testing.assert_array_equal(a["pcm"], b["pcm"])
    np.testing.assert_allclose(a["face"], b["face"], atol=1e-5)


def test_four_batched_equal_four_alone(alone):
    eng = greedy_engine(max_sessions=4)
    sessions = [eng.new_session(session_id=0) for _ in range(1)] + [eng.new_session() for _ in range(3)]
    for s, a in zip(sessions, AUDIO, strict=True):
        eng.submit(s, a)
    events = eng.run_until_idle()
    for i, s in enumerate(sessions):
        assert answer_ids(s) == alone[i][0]
        same(summary(events, s.id), alone[i][1])


def test_sessions_join_and_leave_between_steps(alone):
    eng = greedy_engine(max_sessions=3)
    s0, s1 = eng.new_session(), eng.new_session()
    eng.submit(s0, AUDIO[0])
    events = []
    for _ in range(7):
        events += eng.step()
    eng.submit(s1, AUDIO[1])  # joins mid-turn of s0
    for _ in range(5):
        events += eng.step()
    extra = eng.new_session()
    eng.submit(extra, AUDIO[3])
    events += eng.step()
    eng.close_session(extra)  # leaves mid-turn: no more events, its row is freed
    n_extra = len([e for e in events if e.session_id == extra.id])
    events += eng.run_until_idle()
    assert len([e for e in events if e.session_id == extra.id]) == n_extra
    assert answer_ids(s0) == alone[0][0] and answer_ids(s1) == alone[1][0]
    same(summary(events, s0.id), alone[0][1])
    same(summary(events, s1.id), alone[1][1])
    again = eng.new_session()  # the freed row is reusable
    assert again.row == extra.row


BAD = {
    "nan": (np.full(8000, np.nan, np.float32), 16000),
    "huge_finite": (np.full(48000, 1e30, np.float32), 16000),  # overflows the mel/encoder into NaN keys/values
    "over_full_scale": (tone(0.5, amp=1.5), 16000),
    "int32_pcm": ((tone(0.5) * 2**30).astype(np.int32), 16000),
    "empty": (np.zeros(0, np.float32), 16000),
    "too_long": (np.zeros(16000 * 601, np.float32), 16000),
    "bad_rate": (tone(0.5), 0),
    "not_audio": (np.array(["a", "b"]), 16000),
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_bad_input_fails_only_its_session(bad, alone):
    eng = greedy_engine(max_sessions=3)
    good, victim = eng.new_session(), eng.new_session()
    eng.submit(good, AUDIO[0])
    eng.step()
    eng.submit(victim, *BAD[bad])
    events = eng.run_until_idle()
    err = of(events, Error, victim.id)
    assert len(err) == 1 and err[0].kind == "input" and not of(events, TurnEnd, victim.id)
    assert answer_ids(good) == alone[0][0]
    # the failed session is still usable
    end = of(eng.run_turn(victim, AUDIO[2]), TurnEnd, victim.id)
    assert len(end) == 1 and end[0].counts["audio_tokens"] > 0


@pytest.mark.parametrize("case", ["silence", "resampled_44k", "stereo", "int16", "tiny"])
def test_odd_but_valid_input_is_answered(case):
    audio = {
        "silence": (np.zeros(16000, np.float32), 16000),
        "resampled_44k": (tone(0.5, sr=44100), 44100),
        "stereo": (np.stack([tone(0.5), tone(0.5, 300.0)]), 16000),
        "int16": ((tone(0.5) * 32767).astype(np.int16), 16000),
        "tiny": (tone(0.001), 16000),
    }[case]
    eng = greedy_engine(max_sessions=1, max_seconds=0.4, min_seconds=0.4)
    s = eng.new_session()
    ev = eng.run_turn(s, *audio)
    assert not of(ev, Error) and of(ev, TurnEnd)[0].counts["audio_tokens"] >= 10


@pytest.mark.parametrize("rate", [32000, 44100])
def test_resampled_input_is_answered_as_its_16k_resampling(rate):
    """A question at another rate gets the answer (ids, text, PCM, face frames) of the same question resampled to
    16 kHz by :func:`a2llm_rt.audio.resample`, and that resampling is the 16 kHz signal up to the filter's error."""
    from a2llm_rt.audio import resample

    x = tone(0.5, sr=rate)
    x16 = resample(x, rate, 16000)
    want = tone(0.5, sr=16000)
    assert x16.shape == want.shape
    np.testing.assert_allclose(x16[320:-320], want[320:-320], atol=1e-3)  # 20 ms of filter start-up at each end
    eng = greedy_engine(max_sessions=2, max_seconds=0.4, min_seconds=0.4)
    a, b = eng.new_session(session_id=0), eng.new_session(session_id=1)
    ea = summary(eng.run_turn(a, x, rate), a.id)
    eb = summary(eng.run_turn(b, x16, 16000), b.id)
    assert answer_ids(a) == answer_ids(b) and eng.layout.audio_start in answer_ids(a)
    same(ea, eb)
    assert ea["pcm"].size > 0 and ea["face"].shape[0] > 0


def test_cancel_mid_turn_leaves_the_session_usable():
    eng = greedy_engine(max_sessions=2, max_seconds=2.0, min_seconds=2.0)
    s = eng.new_session()
    eng.submit(s, AUDIO[1])
    events = []
    for _ in range(12):
        events += eng.step()
    eng.cancel(s)
    events += eng.step()
    end = of(events, TurnEnd, s.id)
    assert len(end) == 1 and end[0].reason == "cancelled" and not s.busy
    assert s.history.ids[-1] == eng.layout.eot and not s.history.assistant_open
    # the cache row holds exactly what the history says it holds, and the next turn works
    assert s.cache_length == s.history.consumed
    ev = eng.run_turn(s, AUDIO[0])
    assert of(ev, TurnEnd, s.id)[0].reason == "max_seconds"
    assert s.cache_length == s.history.consumed and s.history.ids.count(eng.layout.tts_start) == 2
    eng.cancel(s)  # idle: a no-op
    assert eng.step() == []


def test_cancel_before_prefill_and_misuse():
    eng = greedy_engine(max_sessions=1)
    s = eng.new_session()
    eng.submit(s, AUDIO[0])
    with pytest.raises(InputError):
        eng.submit(s, AUDIO[0])  # a turn is already running
    eng.cancel(s)
    ev = eng.step()
    assert [type(e).__name__ for e in ev] == ["TurnEnd"] and ev[0].reason == "cancelled"
    assert eng.layout.audio_start not in s.history.ids  # the cancelled turn never reached the history
    with pytest.raises(EngineBusyError):
        eng.new_session()
    s.close()
    with pytest.raises(InputError):
        eng.submit(s, AUDIO[0])
    eng.new_session()


def test_threaded_respond_batches_and_cancels(alone):
    eng = greedy_engine(max_sessions=3)
    sessions = [eng.new_session(session_id=i) for i in range(2)]
    results: dict[int, list] = {}

    def worker(i: int) -> None:
        results[i] = list(sessions[i].respond(AUDIO[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i in range(2):
        assert isinstance(results[i][-1], TurnEnd)
        assert answer_ids(sessions[i]) == alone[i][0]
    eng.shutdown()
    # cancel mid-answer: a long answer (30 s) so the cancel always lands before the engine could finish it
    eng = greedy_engine(max_sessions=1, max_seconds=30.0, min_seconds=29.0)
    cancel = threading.Event()
    got = []
    for ev in eng.new_session().respond(AUDIO[3], cancel=cancel):
        got.append(ev)
        if isinstance(ev, AudioChunk):
            cancel.set()
    assert isinstance(got[-1], TurnEnd) and got[-1].reason == "cancelled"
    assert sum(len(e.pcm) for e in got if isinstance(e, AudioChunk)) < 10 * 24000
    eng.shutdown()


def test_numeric_failure_fails_only_its_session(alone):
    eng = greedy_engine(max_sessions=2)
    good, victim = eng.new_session(), eng.new_session()
    orig = eng.runner.run

    def run(ids, active):
        logits, hidden = orig(ids, active)
        logits = logits.clone()
        if victim.turn is not None and victim.turn.steps >= 3:
            logits[victim.row] = float("nan")
        return logits, hidden

    eng.runner.run = run
    eng.submit(good, AUDIO[0])
    eng.submit(victim, AUDIO[1])
    events = eng.run_until_idle()
    err = of(events, Error, victim.id)
    assert len(err) == 1 and err[0].kind == "internal" and "NaN" in err[0].message
    assert answer_ids(good) == alone[0][0]
    assert victim.cache_length == 0 and not victim.busy  # its conversation was reset, the row is clean


def test_poisoned_cache_rows_never_reach_a_new_session(alone):
    """Defence in depth for the cache (the input check above keeps huge audio out): NaN keys/values left in every row,
    inside and past the rows' lengths, must not reach the sessions that take those rows next. Masked attention gives
    the stale slots weight 0, but 0 x NaN is NaN: only zeroing the rows on reset keeps them out."""
    eng = greedy_engine(max_sessions=2)
    olds = [eng.new_session(), eng.new_session()]
    for s in olds:
        eng.run_turn(s, AUDIO[0])
    eng.cache.k.fill_(float("nan"))  # every slot of every row, as a failed turn's writes would leave them
    eng.cache.v.fill_(float("nan"))
    for s in olds:
        eng.close_session(s)
    for _ in range(2):  # each row is taken twice by clean sessions, all of which answer as a fresh engine would
        sessions = [eng.new_session(), eng.new_session()]
        for s in sessions:
            events = eng.run_turn(s, AUDIO[0])
            assert not of(events, Error), of(events, Error)
            assert answer_ids(s) == alone[0][0]
            eng.close_session(s)


def test_truncate_zeroes_the_forgotten_slots():
    eng = greedy_engine(max_sessions=1)
    s = eng.new_session()
    eng.run_turn(s, AUDIO[0])
    n = s.cache_length
    eng.cache.k[s.row, :, :, n:] = float("nan")
    eng.cache.truncate(s.row, n // 2)
    assert eng.cache.k[s.row, :, :, n // 2 :].eq(0).all() and eng.cache.v[s.row, :, :, n // 2 :].eq(0).all()
    assert not eng.cache.k[s.row, :, :, : n // 2].eq(0).all()
