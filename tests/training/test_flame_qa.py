"""FLAME-QA format round trip, audio tokenizers and the per-task token sequence builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.token_layout import TINY
from a2llm_rt.models.tokenizer import build_tiny_tokenizer
from tests.training.flame_qa_fixtures import make_sample
from training.data.audio_tokenizers import ToyBandEnergyTokenizer, load_audio_tokenizer
from training.data.builders import IGNORE, SequenceBuilder, collate
from training.data.format import ShardWriter, read_index, read_samples, sample_problems


@pytest.fixture(scope="module")
def builder() -> SequenceBuilder:
    return SequenceBuilder(build_tiny_tokenizer(), TINY, audio_tokenizer=ToyBandEnergyTokenizer())


def test_round_trip_over_several_shards(tmp_path):
    samples = [make_sample(f"s{i}", task, seed=i) for i, task in enumerate(["aqaa", "repeat", "tts", "asr", "aqaa"])]
    with ShardWriter(tmp_path, max_samples=2, attrs={"source": "unit"}) as w:
        for s in samples:
            w.write(s)
    index = read_index(tmp_path)
    assert [s["samples"] for s in index["shards"]] == [2, 2, 1]
    assert index["attrs"]["source"] == "unit"
    back = read_samples(tmp_path)
    assert [b.key for b in back] == [s.key for s in samples]
    for a, b in zip(samples, back, strict=True):
        assert b.task == a.task and b.answer_text == a.answer_text and b.meta == a.meta and b.emotion == "happy"
        for name in ("question_audio", "answer_audio", "motion"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                assert y.dtype == x.dtype and np.array_equal(x, y)
        assert sample_problems(b) == []


def test_writer_refuses_duplicate_and_bad_keys(tmp_path):
    w = ShardWriter(tmp_path)
    w.write(make_sample("a"))
    with pytest.raises(InputError, match="duplicate"):
        w.write(make_sample("a"))
    with pytest.raises(InputError, match="key"):
        w.write(make_sample("a.b"))


def test_band_energy_tokenizer_rate_and_range():
    tok = ToyBandEnergyTokenizer()
    quiet = np.zeros(24000, np.float32)
    loud = np.sin(np.arange(24000) * 0.3).astype(np.float32)
    cq, cl = tok.encode(quiet, 24000), tok.encode(loud, 24000)
    assert len(cq) == 25 and len(tok.encode(np.zeros(24001), 24000)) == 26
    assert cq.max() < tok.codebook_size and cl.min() >= 0
    assert cl.mean() > cq.mean()  # louder frames have higher energy levels
    assert isinstance(load_audio_tokenizer("builtin"), ToyBandEnergyTokenizer)
    with pytest.raises(InputError):
        load_audio_tokenizer("no_such_module_xyz:Tok")


@pytest.mark.parametrize("task", ["aqaa", "repeat", "tts"])
def test_spoken_tasks_align_motion_with_audio_tokens(builder, task):
    s = make_sample("x", task, frames=23)
    b = builder.build(s)
    lay = TINY
    t = len(b.audio_positions)
    assert t == 20  # 23 frames cut to whole motion tokens (G = 5)
    assert b.motion.shape == (20, 52) and torch.equal(b.motion, torch.from_numpy(s.motion[:20]))
    ids = b.input_ids
    assert all(lay.is_audio(int(ids[p])) for p in b.audio_positions)
    codes = builder.answer_codes(s)
    assert [lay.audio_code(int(ids[p])) for p in b.audio_positions] == codes[:20].tolist()
    assert torch.all(b.audio_positions[1:] > b.audio_positions[:-1])
    # TA4: between two consecutive groups of 4 audio tokens there is exactly one text slot
    assert int(b.audio_positions[4] - b.audio_positions[3]) == 2
    # labels: nothing before <tts_start>, everything after it, ending in <|EOT|>
    ts = int((ids == lay.tts_start).nonzero()[0])
    assert torch.all(b.labels[: ts + 1] == IGNORE) and torch.equal(b.labels[ts + 1 :], ids[ts + 1 :])
    assert int(ids[-1]) == lay.eot
    n_patch = int((ids == lay.audio_patch).sum())
    if task == "tts":
        assert n_patch == 0 and b.mels == []
    else:
        assert n_patch > 0 and len(b.mels) == 1
    if task == "repeat":
        assert builder.fmt.tok.decode(ids.tolist()).count("Repeat") == 1


def test_asr_is_text_only(builder):
    b = builder.build(make_sample("x", "asr"))
    assert b.motion is None and len(b.audio_positions) == 0
    assert not TINY.audio_mask(b.input_ids).any()
    text = builder.fmt.tok.decode(b.labels[b.labels != IGNORE].tolist())
    assert "fine" in text


def test_builder_uses_motion_tokenizer_and_collates(builder):
    class FakeMotionTok:
        def encode(self, m):  # [B, T, D] -> [B, T/5, 2]
            t = m.shape[1] // 5
            return torch.arange(t * 2).view(1, t, 2).expand(m.shape[0], -1, -1)

    builder.motion_tokenizer = FakeMotionTok()
    try:
        a, b = builder.build(make_sample("a", frames=10)), builder.build(make_sample("b", frames=25))
        asr = builder.build(make_sample("c", "asr"))
    finally:
        builder.motion_tokenizer = None
    assert a.motion_codes.shape == (2, 2) and b.motion_codes.shape == (5, 2)
    batch = collate([a, b, asr], pad_id=TINY.pad)
    assert batch.input_ids.shape[0] == 3 and batch.audio_positions.shape == (3, 25)
    assert batch.motion_codes.shape == (3, 5, 2)
    assert torch.all(batch.motion_codes[0, 2:] == IGNORE) and torch.all(batch.motion_codes[2] == IGNORE)
    assert batch.frame_mask.sum(1).tolist() == [10, 25, 0]
    assert batch.attention_mask[0].sum() == len(a.input_ids)


def test_builder_rejects_bad_samples(builder):
    s = make_sample("x", frames=10)
    s.motion = s.motion[:5]
    with pytest.raises(InputError, match="disagree"):
        builder.build(s)
    s = make_sample("y")
    s.answer_codes = np.full(20, 1000)
    with pytest.raises(InputError, match="outside"):
        builder.build(s)
