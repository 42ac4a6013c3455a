"""Several sessions' chunks in one batch: whatever their voices (prompt lengths), progress (cache lengths) and chunk
lengths, each session gets what it gets alone, and a bad chunk fails its own session only."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.speech.token2wav import SpeechStream, Token2Wav, step_batched

from .helpers import tiny_model, tiny_voice
from .test_streaming import UPSTREAM_EXAMPLE


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def model() -> Token2Wav:
    return tiny_model()


def _close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert got.shape == ref.shape, what
    # float rounding only: padding and masks change summation order, never the values
    assert float((got - ref).abs().max()) <= 1e-5 + 1e-4 * float(ref.abs().max()), what


def _sessions(model: Token2Wav):
    """Three sessions: different voices (prompt lengths 10, 17, 6 codes) and answers (60, 90, 35 codes)."""
    voices = [tiny_voice(model, n_codes=10, seed=1, name="a"), tiny_voice(model, n_codes=17, seed=2, name="b"),
              tiny_voice(model, n_codes=6, seed=3, name="c")]
    answers = [UPSTREAM_EXAMPLE[:60], UPSTREAM_EXAMPLE[4:94], UPSTREAM_EXAMPLE[50:85]]
    return voices, answers


def _alone(model: Token2Wav, voice, codes: list[int], seed: int) -> tuple[list[torch.Tensor], SpeechStream]:
    s = SpeechStream(model, voice, seed=seed)
    out = []
    for c, last in s.push(codes, final=True):
        wav, s.state = model.step(torch.tensor([c]), s.state, last, s.generator)
        out.append(wav[0])
    return out, s


def test_batched_chunks_equal_each_session_alone(model):
    voices, answers = _sessions(model)
    ref = [_alone(model, v, a, seed=10 + i) for i, (v, a) in enumerate(zip(voices, answers, strict=True))]
    streams = [SpeechStream(model, v, seed=10 + i) for i, v in enumerate(voices)]
    chunks = [s.push(a, final=True) for s, a in zip(streams, answers, strict=True)]
    assert [len(c) for c in chunks] == [3, 4, 2]
    got: list[list[torch.Tensor]] = [[], [], []]
    # session 1 starts one chunk ahead: different progress (cache lengths, a first chunk without HiFT cache next to
    # later ones); session 2 finishes (a short last chunk) while the others go on
    (w,) = step_batched(model, [(streams[1], *chunks[1][0])])
    got[1].append(w)
    pos = [0, 1, 0]
    rounds = []
    while any(p < len(c) for p, c in zip(pos, chunks, strict=True)):
        idx = [i for i in range(3) if pos[i] < len(chunks[i])]
        rounds.append([(i, len(chunks[i][pos[i]][0]), chunks[i][pos[i]][1]) for i in idx])
        wavs = step_batched(model, [(streams[i], *chunks[i][pos[i]]) for i in idx])
        for i, w in zip(idx, wavs, strict=True):
            got[i].append(w)
            pos[i] += 1
    # the batches really were ragged: different chunk lengths and last/not-last together
    assert any(len({n for _, n, _ in r}) > 1 and len({last for _, _, last in r}) > 1 for r in rounds)
    for i in range(3):
        assert len(got[i]) == len(ref[i][0])
        for k, (g, r) in enumerate(zip(got[i], ref[i][0], strict=True)):
            _close(g, r, f"session {i} chunk {k}")
        st, rs = streams[i].state, ref[i][1].state
        assert st.finished and rs.finished
        for name, t in rs.tensors().items():
            _close(st.tensors()[name], t, f"session {i} state {name}")


def test_batched_states_have_each_sessions_own_lengths(model):
    voices, answers = _sessions(model)
    streams = [SpeechStream(model, v, seed=i) for i, v in enumerate(voices)]
    chunks = [s.push(a) for s, a in zip(streams, answers, strict=True)]
    step_batched(model, [(s, *c[0]) for s, c in zip(streams, chunks, strict=True)])
    for s, v in zip(streams, voices, strict=True):
        p = v.prompt_tokens.numel()
        # encoder: the prompt's codes + 25 codes at 25 Hz (x2 in the layout); estimator: their 50 Hz mel frames
        assert s.state.enc_att.size(3) == 2 * (p + 25)
        assert s.state.est_att.size(5) == 2 * p + 50
        assert s.state.prompt_frames == 2 * p


def test_a_bad_chunk_fails_only_its_session(model):
    voices, answers = _sessions(model)
    ref = [_alone(model, v, a, seed=i)[0] for i, (v, a) in enumerate(zip(voices, answers, strict=True))]
    streams = [SpeechStream(model, v, seed=i) for i, v in enumerate(voices)]
    chunks = [s.push(a, final=True) for s, a in zip(streams, answers, strict=True)]
    before = {k: v.clone() for k, v in streams[1].state.tensors().items()}
    bad_items = [
        [*chunks[1][0][0][:-1], 6561],  # a code outside 0..6560
        [],  # an empty chunk
        [1, 2],  # too short for a chunk that is not the last
    ]
    for bad in bad_items:
        items = [(streams[0], *chunks[0][0]), (streams[1], bad, False), (streams[2], *chunks[2][0])]
        res = step_batched(model, items)
        assert isinstance(res[1], InputError)
        assert not isinstance(res[0], Exception) and not isinstance(res[2], Exception)
        _close(res[0], ref[0][0], "session 0 beside a bad one")
        _close(res[2], ref[2][0], "session 2 beside a bad one")
        for k, v in streams[1].state.tensors().items():
            assert torch.equal(v, before[k]), k  # the refused session's state is untouched
        # rewind the good ones for the next bad input
        streams[0] = SpeechStream(model, voices[0], seed=0)
        streams[2] = SpeechStream(model, voices[2], seed=2)
        streams[0].push(answers[0], final=True)
        streams[2].push(answers[2], final=True)
    # a finished session next to running ones
    done = SpeechStream(model, voices[1], seed=1)
    c = done.push(answers[1][:10], final=True)
    step_batched(model, [(done, *c[0])])
    res = step_batched(model, [(done, [1, 2, 3, 4], True), (streams[0], *chunks[0][0])])
    assert isinstance(res[0], InputError) and "ended" in str(res[0])
    _close(res[1], ref[0][0], "session beside a finished one")


def test_step_many_refuses_multi_session_states_per_item(model):
    voices, _ = _sessions(model)
    a, b = model.init_state(voices[0]), model.init_state(voices[0])
    both = type(a).cat([a, b])
    (r,) = model.step_many([(both, list(range(28)), False, None)])
    assert isinstance(r, InputError) and "one session" in str(r)
