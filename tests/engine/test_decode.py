"""Decode loop: cached greedy decoding equals a full forward, TA4 interleave, hidden-state tap -> connector windows
equal the teacher-forced connector forward, audio/face alignment, stop conditions, step runner modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2llm_rt.engine.decode import StepRunner, TokenClasses, pad_window
from a2llm_rt.engine.events import AudioChunk, FaceFrames, TextDelta, TurnEnd
from a2llm_rt.errors import InputError
from a2llm_rt.models.token_layout import TA4Cursor
from tests.engine.engine_helpers import greedy_engine, of, tone
from tests.fixtures.upstream import upstream_fixture

pytestmark = pytest.mark.usefixtures("one_thread")


def run_recorded(engine, audio):
    """One greedy turn; returns (events, session, motion codes the engine chose per window)."""
    s = engine.new_session()
    codes: list[torch.Tensor] = []
    orig = engine._codes

    def spy(sess, logits):
        c = orig(sess, logits)
        codes.append(c)
        return c

    engine._codes = spy
    events = engine.run_turn(s, audio)
    return events, s, codes


def answer_span(session, end: TurnEnd) -> tuple[list[int], int]:
    """(all ids of the conversation, index of the first answer token)."""
    ids = session.history.ids
    start = max(i for i, t in enumerate(ids) if t == session.engine.layout.tts_start) + 1
    assert len(ids) >= start + end.counts["new_tokens"]
    return ids, start


def test_cached_decoding_equals_full_forward_and_ta4_holds():
    eng = greedy_engine(max_seconds=1.6, min_seconds=1.0)
    events, s, codes = run_recorded(eng, tone(0.7))
    end = of(events, TurnEnd)[0]
    n = end.counts["new_tokens"]
    ids, start = answer_span(s, end)
    lay, cls = eng.layout, TokenClasses(eng.layout, "cpu")
    fed = ids[: start + end.counts["steps"]]  # every sampled token but a stop token is fed back
    assert end.counts["steps"] == n - (end.reason == "eot")
    bb = eng.stack.backbone
    with torch.no_grad():
        out = bb(torch.tensor([fed]), audio_embeds=bb.encode_audio(s.history.mels))
    cur = TA4Cursor()
    audio = 0
    for j in range(n):
        tok = ids[start + j]
        mask = cls.allowed(cur, audio >= eng.min_audio_tokens)
        assert mask[tok], f"token {tok} at slot {j} breaks the interleave"
        row = out.logits[0, start - 1 + j].masked_fill(~mask, float("-inf"))
        assert row[tok] >= row.max() - 1e-4, f"slot {j}: cached path chose {tok}, full forward {int(row.argmax())}"
        cur = lay.ta4_advance(cur, tok)
        audio += lay.is_audio(tok)
    assert audio == end.counts["audio_tokens"] >= eng.min_audio_tokens
    # the output split the engine streamed equals upstream's TA4 parser on the generated ids
    split = lay.split(ids[start : start + n])
    assert len(split.audio) == audio and eng.stack.tokenizer.decode(split.text) == end.text
    lay.ta4_check(ids[start : start + n])

    # hidden states at audio positions -> connector, window by window == teacher-forced training forward
    pos = [i for i, t in enumerate(fed) if lay.is_audio(t)]
    assert len(pos) == audio
    hidden = out.hidden[0, pos]
    con = eng.stack.connector
    x, _ = pad_window(list(hidden), con.cfg.group)
    all_codes = torch.cat(codes, 1)
    assert all_codes.shape[1] == x.shape[0] // con.cfg.group
    with torch.no_grad():
        ref = con(x[None], all_codes).argmax(-1)
    assert torch.equal(ref, all_codes)


def test_audio_and_face_are_aligned():
    eng = greedy_engine(max_seconds=1.3, min_seconds=1.3)
    events, s, _ = run_recorded(eng, tone(0.5))
    end = of(events, TurnEnd)[0]
    a = end.counts["audio_tokens"]
    assert a >= 1.3 * 25
    chunks = of(events, AudioChunk)
    off = 0
    for c in chunks:
        assert c.sample_offset == off and c.pcm.dtype == np.float32 and c.sample_rate == 24000
        off += c.pcm.size
    assert off == a * 960 == end.counts["audio_samples"]
    faces = of(events, FaceFrames)
    f = 0
    for fr in faces:
        assert fr.first_frame == f and fr.fps == 25.0
        assert fr.flame58.shape == (fr.num_frames, 58) and fr.livelink61.shape == (fr.num_frames, 61)
        assert np.all((fr.arkit52 >= 0) & (fr.arkit52 <= 1))
        f += fr.num_frames
    assert f == a == end.counts["face_frames"]
    assert "".join(e.text for e in of(events, TextDelta)) == end.text
    assert 0 < end.ttft_s <= end.ttfa_s and end.rtf > 0
    # event order: the first audio chunk comes before the first face frames (face needs W hidden states)
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("AudioChunk") < kinds.index("FaceFrames") and kinds[-1] == "TurnEnd"


def test_stop_conditions():
    eng = greedy_engine(max_seconds=0.5, min_seconds=0.0, max_new_tokens=8)
    end = of(eng.run_turn(eng.new_session(), tone(0.3)), TurnEnd)[0]
    assert end.reason in ("max_tokens", "eot") and end.counts["new_tokens"] <= 8 + 4
    eng = greedy_engine(max_seconds=0.6, min_seconds=0.6)
    end = of(eng.run_turn(eng.new_session(), tone(0.3)), TurnEnd)[0]
    assert end.reason == "max_seconds" and 15 <= end.counts["audio_tokens"] <= 15 + 4
    eng = greedy_engine(max_seconds=30, min_seconds=30, max_len=240, min_free_tokens=40)
    end = of(eng.run_turn(eng.new_session(), tone(0.3)), TurnEnd)[0]
    assert end.reason == "context_full"


def test_token_classes_of_the_tiny_layout():
    eng = greedy_engine()
    lay, cls = eng.layout, TokenClasses(eng.layout, "cpu")
    start = TA4Cursor()
    text = cls.allowed(start, False)
    assert text[0] and text[lay.tts_pad] and not text[lay.eot] and not text[lay.audio_offset]
    assert not text[lay.bot] and not text[lay.audio_patch]
    assert cls.allowed(start, True)[lay.eot] and cls.allowed(start, True)[lay.tts_end]
    after_text = lay.ta4_advance(start, 10)
    audio = cls.allowed(after_text, False)  # too little audio to end it: real codes only
    assert int(audio.sum()) == lay.audio_codes and not audio[lay.audio_pad_id]
    ending = cls.allowed(after_text, True)  # the audio may end here: padding, text (text-only groups) or a stop
    assert ending[lay.audio_pad_id] and ending[10] and ending[lay.eot] and not ending[lay.tts_pad]
    padded = lay.ta4_advance(after_text, lay.audio_pad_id)
    assert not cls.allowed(padded, True)[lay.audio_offset]  # no real code after padding
    done = lay.ta4_advance(lay.ta4_advance(start, lay.tts_pad), lay.audio_id(1))
    for _ in range(3):
        done = lay.ta4_advance(done, lay.audio_id(2))
    assert done.text_slot and cls.allowed(done, True).nonzero().flatten().tolist() == sorted(
        [lay.tts_pad, lay.eot, lay.tts_end]
    )


@pytest.mark.parametrize("name", ["ta4_interleave.json", "ta4_interleave_new.json"])
def test_engine_masks_admit_every_upstream_stream(name):
    """Every stream upstream's build_tts_interleave_data makes passes the engine's per-step masks and may stop at
    its end (the masks used to force 4 audio codes per text token: 'taaaataaaattt' was impossible)."""
    lay = greedy_engine().layout
    cls = TokenClasses(lay, "cpu")
    for case in upstream_fixture(name)["cases"]:
        cur = TA4Cursor()
        for tok in case["stream"][1:]:
            assert cls.allowed(cur, True)[tok], f"{len(case['text'])} text / {len(case['audio_codes'])} audio"
            cur = lay.ta4_advance(cur, tok)
        assert cur.ended


def test_step_runner_modes():
    eng = greedy_engine()
    with pytest.raises(InputError):
        StepRunner(eng.stack.backbone, eng.cache, "cuda_graph")  # no CUDA here
    with pytest.raises(InputError):
        StepRunner(eng.stack.backbone, eng.cache, "fast")
    assert StepRunner(eng.stack.backbone, eng.cache, "auto").mode == "none"


@pytest.mark.gpu
def test_cuda_graph_step_equals_eager():
    from a2llm_rt.engine.engine import Engine, EngineConfig
    from a2llm_rt.engine.sampling import SamplingConfig

    outs = []
    for graph in ("none", "cuda_graph"):
        cfg = EngineConfig(max_sessions=2, max_seconds=1.0, min_seconds=1.0, graph=graph,
                           sampling=SamplingConfig.greedy())  # fmt: skip
        eng = Engine.tiny(0, cfg, device="cuda")
        ends = []
        for f in (220.0, 330.0):
            ends.append(of(eng.run_turn(eng.new_session(), tone(0.5, f)), TurnEnd)[0])
        outs.append([(e.text, e.counts["audio_tokens"]) for e in ends])
    assert outs[0] == outs[1]
