"""What moving a conversation to another engine relies on (no Ray needed): a session's exchanges exported as (user
audio, answer ids) and restored on a fresh engine give the same history and, greedy, the same next answer; the
bridge's copy of a conversation follows what the engine keeps (a reset, a start-over)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from a2llm_rt.engine.engine import EngineConfig
from plugin_bridge.ray_source import ReplicaSpec, build_engine_source, mirror_exchanges
from plugin_bridge.turn_source import AudioChunk, FaceFrames, TextDelta, TurnEnd

SPEC = ReplicaSpec(
    engine=EngineConfig(max_sessions=2, max_seconds=1.2, min_seconds=0.8, max_len=2048),
    greedy=True,
    max_new_tokens=160,
)


def tone(freq: float, n: int = 8000) -> np.ndarray:
    return (0.2 * np.sin(2 * np.pi * freq * np.arange(n) / 16000)).astype(np.float32)


pytestmark = pytest.mark.usefixtures("one_thread")


def answer(events: list) -> tuple[str, np.ndarray, np.ndarray]:
    assert isinstance(events[-1], TurnEnd)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    pcm = np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])
    face = np.concatenate([e.frames["arkit52"] for e in events if isinstance(e, FaceFrames)])
    return text, pcm, face


def test_restored_conversation_continues_as_the_original():
    a, b = build_engine_source(SPEC), build_engine_source(SPEC)
    try:
        a.open_session(1)
        b.open_session(9)
        sa, sb = a.engine.sessions[1], b.engine.sessions[9]
        assert sa.exchanges() == 0 and sa.last_answer_ids() == []
        list(a.run_turn(1, tone(180), threading.Event()))
        assert sa.exchanges() == 1
        ids = sa.last_answer_ids()
        assert ids and ids[-1] == sa.history.fmt.layout.special("eot") and len(ids) > 100
        first = list(sa.history.ids)
        sb.restore_conversation([(tone(180), ids)])
        assert sb.history.ids == first and sb.exchanges() == 1 and sb.cache_length == 0  # prefilled by the next turn
        ref = answer(list(a.run_turn(1, tone(300), threading.Event())))
        got = answer(list(b.run_turn(9, tone(300), threading.Event())))
        assert sb.history.ids == sa.history.ids and sb.exchanges() == 2
        assert got[0] == ref[0]
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_allclose(got[2], ref[2], atol=1e-5)
        # without the restore the next answer differs: the check above can fail
        b.open_session(10)
        fresh = answer(list(b.run_turn(10, tone(300), threading.Event())))
        assert b.engine.sessions[10].history.ids != sa.history.ids
        assert fresh[0] != ref[0] or not np.array_equal(fresh[1], ref[1])
    finally:
        a.close()
        b.close()


def test_restore_refused_while_a_turn_runs():
    a = build_engine_source(SPEC)
    try:
        a.open_session(1)
        s = a.engine.sessions[1]
        s.pending_audio = (tone(180), 16000)  # as submit() leaves it until the next step
        with pytest.raises(RuntimeError, match="between turns"):
            s.restore_conversation([])
        s.pending_audio = None
    finally:
        a.close()


def test_bridge_copy_follows_what_the_engine_keeps():
    x, y, z = tone(100), tone(200), tone(300)
    one = [(x, [1, 2])]
    assert [a for _, a in mirror_exchanges(one, y, [3], 2)] == [[1, 2], [3]]  # a turn added an exchange
    assert mirror_exchanges(one, y, None, 1) == one  # refused input: nothing changed
    assert mirror_exchanges(one, y, None, 0) == []  # a failed turn reset the conversation
    started_over = mirror_exchanges(one, z, [4], 1)  # the conversation outgrew the row: this exchange alone
    assert len(started_over) == 1 and started_over[0][1] == [4] and started_over[0][0] is z
