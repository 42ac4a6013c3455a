"""Token2wav driver: whole answers and streaming, per-session typed state, several sessions batched in one call.

Streaming follows Step-Audio-2's streaming ``Token2wav`` (``set_stream_cache`` / ``stream`` and the example driver):

- a session starts from its voice (:meth:`Token2Wav.init_state`): the prompt's codes (+ its first 3 codes as
  look-ahead) and its mel go once through the encoder and the estimator, whose caches become the session's state;
- every chunk is 25 new codes + the 3 look-ahead codes that follow them (:data:`CHUNK_CODES`, ``pre_lookahead_len``);
  the last chunk is whatever is left, with the look-ahead padded by zeros;
- the flow's estimator attention cache keeps the first ``prompt_frames`` entries and the newest 100 once it grows past
  ``prompt_frames + 100`` (upstream's trimming, including its newest-first layout);
- HiFT runs on the chunk's mel preceded by the last 8 mel frames of the previous chunk, with the previous chunk's
  last 3840 source samples forced in, and the first 3840 output samples are cross-faded (Hamming window) with the
  3840 samples held back from the previous chunk; all but the last chunk hold back their final 3840 samples.

So the first audio comes after the first 28 codes; a chunk returns 20160 samples (0.84 s) for 25 codes.

:class:`Token2WavState` holds one or more sessions (batch on dim 0). :meth:`Token2Wav.step` runs one chunk for all of
them in one call; sessions can be batched when their caches have the same lengths (same voice length and chunk count;
:func:`batch_key`), otherwise run them in separate calls. The module is shared and never changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig, HiFTConfig
from a2llm_rt.speech.flow import FlowModel
from a2llm_rt.speech.hift import HiFTGenerator
from a2llm_rt.speech.voice import Voice
from a2llm_rt.streaming import StreamingState

CHUNK_CODES = 25
"""New codes per streamed chunk (upstream's ``CHUNK_SIZE``)."""
MEL_CACHE_FRAMES = 8
"""Mel frames of the previous chunk re-vocoded with the next one (160 ms)."""
ESTIMATOR_KEEP_RECENT = 100
"""Newest estimator cache entries kept beyond the prompt's (upstream's trimming)."""


@dataclasses.dataclass
class Token2WavState(StreamingState):
    """Streaming state of B sessions (batch first). Layout notes in brackets."""

    spk: torch.Tensor
    """[B, mel] projected speaker embedding."""
    enc_cnn: torch.Tensor
    """[B, D, 2 + 2*stride] encoder convolution context."""
    enc_att: torch.Tensor
    """[B, L1+L2, H, 2*t1, 2*d_k] encoder keys|values (upstream layout per layer)."""
    est_cnn: torch.Tensor
    """[B, 2 (guided, unguided), n_steps, depth, 2*hidden, 2] estimator convolution context per Euler step."""
    est_att: torch.Tensor
    """[B, 2, n_steps, depth, H, Te, 2*head_dim] estimator keys|values per Euler step (newest first)."""
    hift_mel: torch.Tensor
    """[B, mel, 0 or 8] last mel frames of the previous chunk."""
    hift_source: torch.Tensor
    """[B, 1, 0 or 3840] last source samples of the previous chunk."""
    hift_speech: torch.Tensor
    """[B, 0 or 3840] samples held back from the previous chunk (cross-faded into the next)."""
    prompt_frames: int = 0
    """Mel frames of the voice's prompt (2 x prompt codes)."""
    chunks: int = 0
    """Chunks done."""
    finished: bool = False
    """True after the last chunk."""


def batch_key(state: Token2WavState) -> tuple[int, ...]:
    """Sessions whose states have equal keys can share one :meth:`Token2Wav.step` call."""
    return (state.prompt_frames, state.enc_att.size(3), state.est_att.size(5), state.hift_mel.size(2),
            int(state.finished))


def _to_upstream(x: torch.Tensor) -> torch.Tensor:
    """[B, 2, n, depth, ...] -> [n, depth, 2B, ...] (rows: B guided, then B unguided)."""
    b = x.size(0)
    perm = (2, 3, 1, 0, *range(4, x.dim()))
    return x.permute(*perm).reshape(x.size(2), x.size(3), 2 * b, *x.shape[4:])


def _from_upstream(x: torch.Tensor, b: int) -> torch.Tensor:
    """Inverse of :func:`_to_upstream`."""
    y = x.reshape(x.size(0), x.size(1), 2, b, *x.shape[3:])
    return y.permute(3, 2, 0, 1, *range(4, y.dim())).contiguous()


class Token2Wav(nn.Module):
    """Flow + HiFT with the streaming driver (see the module docstring). Output: 24 kHz float32 in [-0.99, 0.99]."""

    def __init__(self, flow_cfg: FlowConfig, hift_cfg: HiFTConfig):
        super().__init__()
        if hift_cfg.in_channels != flow_cfg.output_size:
            raise InputError("HiFT in_channels must equal the flow's mel bins")
        self.flow = FlowModel(flow_cfg)
        self.hift = HiFTGenerator(hift_cfg)
        self.flow_cfg = flow_cfg
        self.source_cache = MEL_CACHE_FRAMES * hift_cfg.samples_per_frame
        self.register_buffer("speech_window", torch.from_numpy(np.hamming(2 * self.source_cache)), persistent=False)

    @property
    def lookahead(self) -> int:
        return self.flow_cfg.pre_lookahead_len

    @property
    def sample_rate(self) -> int:
        return self.hift.cfg.sampling_rate

    @property
    def samples_per_code(self) -> int:
        return self.flow_cfg.up_stride * self.hift.cfg.samples_per_frame

    # ---- input checks -------------------------------------------------------------------------------------------
    def check_codes(self, codes: torch.Tensor | list[int], allow_empty: bool = False) -> torch.Tensor:
        """Codes as an int64 tensor; a clear :class:`InputError` for codes outside 0..vocab-1 or an empty answer."""
        t = torch.as_tensor(codes) if not isinstance(codes, list) or codes else torch.zeros(0, dtype=torch.int64)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise InputError("speech codes must be integers")
        t = t.to(torch.int64)
        if t.numel() == 0 and not allow_empty:
            raise InputError("empty answer: no speech codes to synthesise")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.flow_cfg.vocab_size):
            bad = t[(t < 0) | (t >= self.flow_cfg.vocab_size)][0].item()
            raise InputError(f"speech code {bad} outside 0..{self.flow_cfg.vocab_size - 1}")
        return t

    def _voice(self, voice: Voice) -> Voice:
        voice.validate(self.flow_cfg.vocab_size, self.flow_cfg.output_size, self.flow_cfg.spk_embed_dim,
                       self.flow_cfg.up_stride)
        return voice

    # ---- whole answers ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def synthesize(self, codes: torch.Tensor | list[int], voice: Voice,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """A whole answer at once (upstream ``Token2wav.__call__``): codes [T] -> waveform [T * 960]."""
        t = self.check_codes(codes).flatten()[None]
        v = self._voice(voice)
        dev = self.flow.input_embedding.weight.device
        mel = self.flow.inference(t.to(dev), v.prompt_tokens[None].to(dev), v.prompt_mel[None].to(dev),
                                  v.embedding[None].to(dev))
        wav, _ = self.hift(mel, generator=generator)
        return wav[0]

    # ---- streaming ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def init_state(self, voice: Voice) -> Token2WavState:
        """A fresh one-session state conditioned on ``voice`` (upstream ``set_stream_cache``)."""
        v = self._voice(voice)
        flow = self.flow
        dev = flow.input_embedding.weight.device
        tokens = v.prompt_tokens[None].to(dev)
        tokens = torch.cat([tokens, tokens[:, : self.lookahead]], dim=1)
        mel = v.prompt_mel[None].to(dev).transpose(1, 2).contiguous()
        spk = flow.speaker(v.embedding[None].to(dev))
        enc_cnn, enc_att = flow.encoder.empty_caches(1, dev, mel.dtype)
        est_cnn, est_att = self._empty_estimator_caches(1, dev, mel.dtype)
        h, enc_cnn, enc_att = flow.encoder.forward_chunk(flow.input_embedding(tokens), False, enc_cnn, enc_att)
        mu = flow.encoder_proj(h).transpose(1, 2).contiguous()
        noise = flow.decoder.noise([0], mu.size(2)).to(mu)
        _, est_cnn, est_att = flow.decoder.forward_chunk(mu, spk, mel, self.flow_cfg.n_timesteps, est_cnn, est_att,
                                                         noise)
        b = 1
        return Token2WavState(
            spk=spk, enc_cnn=enc_cnn, enc_att=enc_att.transpose(0, 1).contiguous(),
            est_cnn=_from_upstream(est_cnn, b), est_att=_from_upstream(est_att, b),
            hift_mel=mel.new_zeros(b, self.flow_cfg.output_size, 0), hift_source=mel.new_zeros(b, 1, 0),
            hift_speech=mel.new_zeros(b, 0), prompt_frames=mel.size(2))

    def _empty_estimator_caches(self, b: int, dev: torch.device | str, dtype: torch.dtype):
        c, est = self.flow_cfg, self.flow.decoder.estimator
        cnn = torch.zeros(c.n_timesteps, c.dit_depth, 2 * b, 2 * est.hidden_size, 2, device=dev, dtype=dtype)
        att = torch.zeros(c.n_timesteps, c.dit_depth, 2 * b, c.dit_heads, 0, 2 * c.dit_head_dim, device=dev,
                          dtype=dtype)
        return cnn, att

    @torch.inference_mode()
    def step(self, codes: torch.Tensor, state: Token2WavState, last_chunk: bool,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, Token2WavState]:
        """One chunk for the B sessions of ``state``: codes [B, n] (25 + look-ahead, or what is left on the last
        chunk) -> (waveform [B, samples], new state). ``state`` is not modified."""
        if state.finished:
            raise InputError("this speech stream has already ended")
        codes = self.check_codes(codes)
        if codes.dim() != 2 or codes.size(0) != state.spk.size(0):
            raise InputError(f"codes must be [{state.spk.size(0)}, n], got {list(codes.shape)}")
        if not last_chunk and codes.size(1) <= self.lookahead:
            raise InputError(f"a chunk that is not the last needs more than {self.lookahead} codes")
        flow, b = self.flow, codes.size(0)
        dev = flow.input_embedding.weight.device
        h, enc_cnn, enc_att = flow.encoder.forward_chunk(flow.input_embedding(codes.to(dev)), last_chunk,
                                                         state.enc_cnn, state.enc_att.transpose(0, 1))
        mu = flow.encoder_proj(h).transpose(1, 2).contiguous()
        est_att_in = _to_upstream(state.est_att)
        noise = flow.decoder.noise([est_att_in.size(4)] * b, mu.size(2)).to(mu)
        mel, est_cnn, est_att = flow.decoder.forward_chunk(mu, state.spk, torch.zeros_like(mu),
                                                           self.flow_cfg.n_timesteps, _to_upstream(state.est_cnn),
                                                           est_att_in, noise)
        if est_att.size(4) > state.prompt_frames + ESTIMATOR_KEEP_RECENT:
            est_att = torch.cat([est_att[:, :, :, :, : state.prompt_frames],
                                 est_att[:, :, :, :, -ESTIMATOR_KEEP_RECENT:]], dim=4)
        mel = torch.cat([state.hift_mel, mel], dim=2)
        speech, source = self.hift(mel, state.hift_source, generator=generator)
        n = self.source_cache
        if state.hift_speech.size(-1) > 0:
            w = self.speech_window
            faded = speech[:, :n] * w[:n] + state.hift_speech[:, -n:] * w[n:]
            speech = torch.cat([faded.to(speech.dtype), speech[:, n:]], dim=1)
        new = Token2WavState(
            spk=state.spk, enc_cnn=enc_cnn, enc_att=enc_att.transpose(0, 1).contiguous(),
            est_cnn=_from_upstream(est_cnn, b), est_att=_from_upstream(est_att, b),
            hift_mel=mel[..., -MEL_CACHE_FRAMES:].clone(), hift_source=source[:, :, -n:].clone(),
            hift_speech=speech[:, -n:].clone(), prompt_frames=state.prompt_frames, chunks=state.chunks + 1,
            finished=last_chunk)
        if not last_chunk:
            speech = speech[:, :-n]
        return speech, new


class SpeechStream:
    """One session's code buffer on top of :class:`Token2WavState` (the example driver's 25 + 3 chunking).

    ``push(codes)`` buffers codes and returns the chunks now ready; :meth:`Token2Wav.step` (alone or batched with other
    sessions via :func:`step_batched`) turns each into audio.
    """

    def __init__(self, model: Token2Wav, voice: Voice):
        self.model = model
        self.state = model.init_state(voice)
        self.buffer: list[int] = []
        self.codes_in = 0

    def push(self, codes: list[int] | torch.Tensor, final: bool = False) -> list[tuple[list[int], bool]]:
        """Add codes; return the ready chunks as (codes, last_chunk)."""
        if self.state.finished:
            raise InputError("this speech stream has already ended")
        new = self.model.check_codes(codes, allow_empty=True).flatten().tolist()
        if final and self.codes_in + len(new) == 0:
            raise InputError("empty answer: no speech codes to synthesise")
        self.buffer += new
        self.codes_in += len(new)
        size = CHUNK_CODES + self.model.lookahead
        out = []
        while len(self.buffer) >= size:
            out.append((self.buffer[:size], False))
            self.buffer = self.buffer[CHUNK_CODES:]
        if final:
            out.append((self.buffer, True))
            self.buffer = []
        return out

    def run(self, chunks: list[tuple[list[int], bool]], generator: torch.Generator | None = None) -> torch.Tensor:
        """Synthesise ready chunks one after the other for this session alone -> waveform [samples]."""
        pieces = []
        for c, last in chunks:
            wav, self.state = self.model.step(torch.tensor([c]), self.state, last, generator)
            pieces.append(wav[0])
        return torch.cat(pieces) if pieces else torch.zeros(0)


def step_batched(model: Token2Wav, items: list[tuple[SpeechStream, list[int], bool]],
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """One chunk for each of several sessions: sessions with the same :func:`batch_key` and chunk length go through
    one :meth:`Token2Wav.step` call together. Returns each session's waveform, in the order given."""
    groups: dict[tuple, list[int]] = {}
    for i, (s, c, last) in enumerate(items):
        groups.setdefault((*batch_key(s.state), len(c), last), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(items)
    for idx in groups.values():
        states = [items[i][0].state for i in idx]
        state = Token2WavState.cat(states) if len(states) > 1 else states[0]
        codes = torch.tensor([items[i][1] for i in idx])
        wav, new = model.step(codes, state, items[idx[0]][2], generator)
        for j, i in enumerate(idx):
            items[i][0].state = new.select([j]) if len(idx) > 1 else new
            out[i] = wav[j]
    return out  # type: ignore[return-value]


def load_token2wav(folder: str | Path, device: torch.device | str = "cpu") -> Token2Wav:
    """A checkpoint's ``token2wav/`` folder: ``flow.yaml`` (read safely), ``flow``/``hift`` weights (safetensors if
    converted, else ``.pt`` with ``weights_only=True``), strict name and shape checks."""
    from a2llm_rt.speech.checkpoint import flow_config_from_yaml, load_hift_config, load_state, load_strict

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a token2wav folder", path=folder)
    yaml_path = folder / "flow.yaml"
    if not yaml_path.exists():
        raise InputError("missing flow.yaml", path=folder)
    model = Token2Wav(flow_config_from_yaml(yaml_path), load_hift_config(folder))
    load_strict(model.flow, load_state(folder, "flow"), f"{folder}/flow")
    load_strict(model.hift, load_state(folder, "hift"), f"{folder}/hift")
    return model.to(device).eval()
