"""One prompt format for training and inference: a training sample's prompt ids are the engine's prefill ids for
the same conversation (system message, user audio, open spoken answer)."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.models.prompt import DEFAULT_SYSTEM_PROMPT
from tests.engine.engine_helpers import greedy_engine
from tests.training.flame_qa_fixtures import make_sample
from training.data.audio_tokenizers import ToyBandEnergyTokenizer
from training.data.builders import IGNORE, SYSTEM_PROMPTS, SequenceBuilder


@pytest.mark.usefixtures("one_thread")
def test_training_sample_prompt_equals_engine_prefill():
    eng = greedy_engine(max_seconds=0.2, min_seconds=0.0, max_new_tokens=2)
    assert eng.cfg.system_prompt == DEFAULT_SYSTEM_PROMPT == SYSTEM_PROMPTS["aqaa"]
    builder = SequenceBuilder(eng.stack.tokenizer, eng.layout, audio_tokenizer=ToyBandEnergyTokenizer())
    sample = make_sample("x", "aqaa", frames=20)
    built = builder.build(sample)

    seen = []
    prefill = eng.stack.backbone.prefill

    def spy(ids, cache, audio_mels=None, rows=None):
        seen.append((ids[0].tolist(), audio_mels))
        return prefill(ids, cache, audio_mels=audio_mels, rows=rows)

    eng.stack.backbone.prefill = spy
    eng.run_turn(eng.new_session(), sample.question_audio)
    ((ids, mels),) = seen
    n = len(ids)
    assert ids[-1] == eng.layout.tts_start
    assert built.input_ids[:n].tolist() == ids
    assert torch.all(built.labels[:n] == IGNORE) and built.labels[n] != IGNORE  # the loss starts after the prompt
    assert len(mels) == len(built.mels) == 1 and torch.equal(mels[0], built.mels[0])
