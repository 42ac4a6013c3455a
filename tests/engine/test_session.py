"""Session: multi-turn history stays in step with the cache row, overflow starts the conversation over, the
seeded generator makes sampled answers reproducible, the system prompt and close()."""

from __future__ import annotations

import pytest

from a2llm_rt.engine.engine import Engine, EngineConfig
from a2llm_rt.engine.events import TurnEnd
from a2llm_rt.engine.sampling import SamplingConfig
from tests.engine.engine_helpers import greedy_engine, of, summary, tone

pytestmark = pytest.mark.usefixtures("one_thread")


def test_multi_turn_history_matches_the_cache_row():
    eng = greedy_engine(max_sessions=1, max_seconds=0.5, min_seconds=0.5)
    s = eng.new_session()
    lay = eng.layout
    lengths = []
    for i in range(3):
        end = of(eng.run_turn(s, tone(0.3, 200.0 + 50 * i)), TurnEnd)[0]
        assert end.reason == "max_seconds"
        assert s.cache_length == s.history.consumed  # everything fed is in the row; the closing ids wait
        assert s.history.ids[-2:] == [lay.tts_end, lay.eot] and not s.history.assistant_open
        lengths.append(s.cache_length)
    assert lengths[0] < lengths[1] < lengths[2]
    assert s.turns_done == 3 and s.history.ids.count(lay.tts_start) == 3
    assert s.history.ids[0] == lay.bot  # the system prompt opens the conversation


def test_conversation_that_outgrows_the_row_starts_over():
    eng = greedy_engine(max_sessions=1, max_seconds=0.8, min_seconds=0.8, max_len=128, min_free_tokens=30)
    s = eng.new_session(system_prompt=None)
    for _ in range(4):
        end = of(eng.run_turn(s, tone(0.3)), TurnEnd)[0]
        assert end.counts["audio_tokens"] > 0
        assert s.cache_length == s.history.consumed <= 128
    assert s.history.ids.count(eng.layout.tts_start) < 4  # older turns were forgotten


def test_sampled_answers_are_reproducible_per_seed():
    def answer(seed: int) -> str:
        cfg = EngineConfig(max_sessions=1, max_seconds=0.6, min_seconds=0.6, sampling=SamplingConfig(seed=seed))
        eng = Engine.tiny(0, cfg)
        s = eng.new_session(session_id=0)
        return summary(eng.run_turn(s, tone(0.3)), 0)["end"].text + str(s.history.ids)

    assert answer(1) == answer(1)
    assert answer(1) != answer(2)


def test_close_frees_the_row_and_is_idempotent():
    eng = greedy_engine(max_sessions=1)
    s = eng.new_session(session_id=5)
    assert s.id == 5 and eng.sessions == {5: s}
    s.close()
    s.close()
    assert eng.sessions == {} and s.closed
    t = eng.new_session()
    assert t.row == s.row and t.cache_length == 0
