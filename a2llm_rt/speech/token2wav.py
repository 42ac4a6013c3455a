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

:class:`Token2WavState` is one session's state (the streaming contract of :mod:`a2llm_rt.streaming`, as a ragged
per-session state: see its docstring). :meth:`Token2Wav.step_many` runs one chunk for several sessions in one batch
whatever their voices, progress and chunk lengths (padding + attention masks; each gets what it gets alone);
:meth:`Token2Wav.step` is the same for one session (or for sessions in lock-step: one voice, same progress). The
module is shared and never changes; :class:`SpeechStream` buffers a session's codes into upstream's chunks.
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
    """Streaming state of one session (or of B sessions in lock-step), batch first. Layout notes in brackets.

    A ragged per-session state, not a batch of ``[B]`` rows: its caches have each session's own lengths (the encoder's
    and the estimator's attention caches grow with the voice's prompt and the chunks done, and the estimator's is
    trimmed at a point that depends on the prompt), and a fresh session is its voice's set-up
    (:meth:`Token2Wav.init_state`), not zeros. So sessions are batched at step time, not in the state:
    :meth:`Token2Wav.step_many` pads and masks their caches and splits them again. Of the batch operations,
    :meth:`reset` is refused (start the session again from ``init_state(voice)``, or a voice's cached set-up:
    states are never modified in place, so streams may share it), and :meth:`cat` / :meth:`select` stack and split
    sessions in lock-step only (same voice, same progress: every cache the same size, the plain values the same),
    as :meth:`Token2Wav.step` with ``[B, n]`` codes takes them; anything else is refused with a clear error.
    """

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

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Refused: a fresh token2wav session is its voice's set-up (``Token2Wav.init_state(voice)``), not zeros."""
        raise TypeError("a token2wav state is not reset in place: a fresh session starts from Token2Wav.init_state"
                        "(voice) (or the voice's cached set-up); the other sessions' states are separate objects")

    @classmethod
    def cat(cls, states: list[StreamingState]) -> Token2WavState:
        """Stack sessions in lock-step (same voice and progress) for :meth:`Token2Wav.step` with ``[B, n]`` codes;
        sessions with different caches go through :meth:`Token2Wav.step_many` instead."""
        first = states[0]
        for s in states[1:]:
            if not isinstance(s, Token2WavState):
                raise TypeError(f"cannot stack a {type(s).__name__} with token2wav states")
            for f in dataclasses.fields(first):
                a, b = getattr(first, f.name), getattr(s, f.name)
                same = a.shape[1:] == b.shape[1:] if torch.is_tensor(a) else a == b
                if not same:
                    raise InputError(f"token2wav sessions differ in {f.name} (voices or progress differ): they are "
                                     "stacked in lock-step only; batch them with Token2Wav.step_many")
        return super().cat(states)  # type: ignore[return-value]


def _to_upstream(x: torch.Tensor) -> torch.Tensor:
    """[B, 2, n, depth, ...] -> [n, depth, 2B, ...] (rows: B guided, then B unguided)."""
    b = x.size(0)
    perm = (2, 3, 1, 0, *range(4, x.dim()))
    return x.permute(*perm).reshape(x.size(2), x.size(3), 2 * b, *x.shape[4:])


def _from_upstream(x: torch.Tensor, b: int) -> torch.Tensor:
    """Inverse of :func:`_to_upstream`."""
    y = x.reshape(x.size(0), x.size(1), 2, b, *x.shape[3:])
    return y.permute(3, 2, 0, 1, *range(4, y.dim())).contiguous()


def _estimator_cache_in(states: list[Token2WavState], width: int) -> torch.Tensor:
    """The sessions' estimator caches [1, 2, n, depth, H, Tc_b, 2*hd] as the solver's batch [n, depth, 2B, H, width,
    2*hd] (rows: B guided, then B unguided; each right-padded with zeros): one copy, no permute of the big tensor."""
    first = states[0].est_att
    n, depth, heads, hd2 = first.size(2), first.size(3), first.size(4), first.size(6)
    b = len(states)
    out = first.new_empty(n, depth, 2 * b, heads, width, hd2)
    for i, s in enumerate(states):
        tc = s.est_att.size(5)
        for g in range(2):
            out[:, :, g * b + i, :, :tc].copy_(s.est_att[0, g])
            if tc < width:
                out[:, :, g * b + i, :, tc:].zero_()
    return out


def _estimator_cache_out(steps: list[torch.Tensor], i: int, b: int, frames: int, width: int, cache: int,
                         prompt_frames: int) -> torch.Tensor:
    """Session i's new estimator cache [1, 2, n, depth, H, Te, 2*hd] from the solver's per-step outputs [depth, 2B, H,
    width + Tc, 2*hd] (its valid entries: the chunk's first ``frames``, then ``cache`` old ones from ``width`` on),
    trimmed as upstream trims it (the first ``prompt_frames`` entries and the newest 100 once it grows past their
    sum), in one copy."""
    total = frames + cache
    keep = [(0, total)]
    if total > prompt_frames + ESTIMATOR_KEEP_RECENT:
        keep = [(0, prompt_frames), (total - ESTIMATOR_KEEP_RECENT, total)]
    src = []  # (start, end) in the padded layout, in order
    for lo, hi in keep:
        if lo < frames:
            src.append((lo, min(hi, frames)))
        if hi > frames:
            src.append((width + max(lo, frames) - frames, width + hi - frames))
    size = sum(e - s for s, e in src)
    x = steps[0]
    out = x.new_empty(1, 2, len(steps), x.size(0), x.size(2), size, x.size(4))
    for k, step in enumerate(steps):
        for g in range(2):
            pos = 0
            for lo, hi in src:
                out[0, g, k, :, :, pos: pos + hi - lo].copy_(step[:, g * b + i, :, lo:hi])
                pos += hi - lo
    return out


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

    def check_chunk(self, state: Token2WavState, codes: torch.Tensor | list[int], last_chunk: bool) -> torch.Tensor:
        """One session's next chunk, checked: its codes as an int64 tensor [n]; :class:`InputError` otherwise."""
        if state.finished:
            raise InputError("this speech stream has already ended")
        if state.spk.size(0) != 1:
            raise InputError(f"one session per state here, got a state of {state.spk.size(0)}")
        c = self.check_codes(codes)
        if c.dim() == 2 and c.size(0) == 1:
            c = c[0]
        if c.dim() != 1:
            raise InputError(f"a session's chunk must be [n] codes, got {list(c.shape)}")
        if not last_chunk and c.numel() <= self.lookahead:
            raise InputError(f"a chunk that is not the last needs more than {self.lookahead} codes")
        return c

    @torch.inference_mode()
    def step(self, codes: torch.Tensor, state: Token2WavState, last_chunk: bool,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, Token2WavState]:
        """One chunk for the B sessions of ``state`` (equal chunk lengths): codes [B, n] (25 + look-ahead, or what
        is left on the last chunk) -> (waveform [B, samples], new state). ``state`` is not modified. Sessions of
        different lengths or progress: :meth:`step_many`."""
        codes = self.check_codes(codes)
        if codes.dim() != 2 or codes.size(0) != state.spk.size(0):
            raise InputError(f"codes must be [{state.spk.size(0)}, n], got {list(codes.shape)}")
        b = codes.size(0)
        states = [state] if b == 1 else [state.select([i]) for i in range(b)]
        res = self.step_many([(st, codes[i], last_chunk, generator) for i, st in enumerate(states)])
        for r in res:
            if isinstance(r, Exception):
                raise r
        wavs, news = zip(*res, strict=True)  # type: ignore[misc]
        new = news[0] if b == 1 else Token2WavState.cat(list(news))
        return torch.stack(list(wavs)), new  # type: ignore[return-value]

    @torch.inference_mode()
    def step_many(self, items: list[tuple[Token2WavState, torch.Tensor | list[int], bool, torch.Generator | None]]
                  ) -> list[tuple[torch.Tensor, Token2WavState] | InputError]:
        """One chunk for each of several sessions in one batch, whatever their voices (prompt lengths), progress
        (cache lengths) or chunk lengths: items (one-session state, codes [n], last_chunk, generator).

        Caches and chunks are padded (the encoder's caches on the left, the estimator's and the chunks on the
        right) and the padded keys masked out; each session's relative positions, convolution caches and noise
        offsets are its own, and HiFT runs right-padded with every convolution re-zeroed past each session's end,
        so each session gets what :meth:`step` gives it alone (to float rounding). HiFT's random draws come from
        each item's generator (None: torch's global one, in item order).

        Returns per item (waveform [samples], new state), or the :class:`InputError` that refused that item (a bad
        chunk fails its own session only). States are not modified.
        """
        out: list = [None] * len(items)
        good = []
        for i, (state, codes, last, gen) in enumerate(items):
            try:
                good.append((i, state, self.check_chunk(state, codes, last), bool(last), gen))
            except InputError as e:
                out[i] = e
        if good:
            res = self._run_chunks([g[1] for g in good], [g[2] for g in good], [g[3] for g in good],
                                   [g[4] for g in good])
            for g, r in zip(good, res, strict=True):
                out[g[0]] = r
        return out

    def _run_chunks(self, states: list[Token2WavState], codes: list[torch.Tensor], lasts: list[bool],
                    gens: list[torch.Generator | None]) -> list[tuple[torch.Tensor, Token2WavState]]:
        flow, b, look = self.flow, len(states), self.lookahead
        dev = flow.input_embedding.weight.device
        stride = self.flow_cfg.up_stride
        m = [int(c.numel()) for c in codes]
        tok = torch.zeros(b, max(m), dtype=torch.int64)
        for i, c in enumerate(codes):
            tok[i, : m[i]] = c
        # encoder: caches left-padded, chunks right-padded
        enc_att, t1 = flow.encoder.pad_caches([s.enc_att for s in states])
        enc_cnn = torch.cat([s.enc_cnn for s in states])
        h, enc_cnn, enc_att = flow.encoder.forward_chunk(flow.input_embedding(tok.to(dev)), lasts, enc_cnn, enc_att,
                                                         m, t1)
        n = [mi if last else mi - look for mi, last in zip(m, lasts, strict=True)]  # 25 Hz steps out
        frames = [stride * k for k in n]  # mel frames of each session's chunk
        mu = flow.encoder_proj(h).transpose(1, 2).contiguous()
        # estimator: caches and chunks right-padded
        tc = [s.est_att.size(5) for s in states]
        wc, wt = max(tc), mu.size(2)
        est_cnn = torch.cat([s.est_cnn for s in states])
        ragged = min(tc) < wc or min(frames) < wt
        lengths = torch.tensor(frames, device=dev) if ragged else None
        cache_lengths = torch.tensor(tc, device=dev) if ragged else None
        noise = flow.decoder.noise(tc, frames).to(mu)
        spk = torch.cat([s.spk for s in states])
        mel, est_cnn, est_att = flow.decoder.forward_chunk(mu, spk, torch.zeros_like(mu), self.flow_cfg.n_timesteps,
                                                           _to_upstream(est_cnn), _estimator_cache_in(states, wc),
                                                           noise, lengths, cache_lengths, stack=False)
        est_cnn = _from_upstream(est_cnn, b)
        # HiFT: right-padded, masked; random draws per session
        mels = [torch.cat([s.hift_mel[0], mel[i, :, : frames[i]]], dim=1) for i, s in enumerate(states)]
        speech, sources = self.hift.forward_many(mels, [s.hift_source[0] for s in states], gens)
        k = self.source_cache
        w = self.speech_window
        out = []
        for i, s in enumerate(states):
            att = _estimator_cache_out(est_att, i, b, frames[i], wt, tc[i], s.prompt_frames)
            wav = speech[i]
            if s.hift_speech.size(-1) > 0:
                faded = wav[:k] * w[:k] + s.hift_speech[0, -k:] * w[k:]
                wav = torch.cat([faded.to(wav.dtype), wav[k:]])
            new = Token2WavState(
                spk=s.spk, enc_cnn=enc_cnn[i: i + 1],
                enc_att=flow.encoder.split_cache(enc_att, i, max(t1), t1[i], n[i]),
                est_cnn=est_cnn[i: i + 1], est_att=att,
                hift_mel=mels[i][None, :, -MEL_CACHE_FRAMES:].clone(),
                hift_source=sources[i][None, :, -k:].clone(), hift_speech=wav[None, -k:].clone(),
                prompt_frames=s.prompt_frames, chunks=s.chunks + 1, finished=lasts[i])
            out.append((wav if lasts[i] else wav[:-k], new))
        return out


class SpeechStream:
    """One session's code buffer on top of :class:`Token2WavState` (the example driver's 25 + 3 chunking).

    ``push(codes)`` buffers codes and returns the chunks now ready; :meth:`Token2Wav.step` (alone) or
    :func:`step_batched` (with other sessions) turns each into audio. ``seed``: HiFT's random draws of this session
    come from its own generator seeded so (the same codes give the same audio, alone or batched); None: torch's
    global generator.
    """

    def __init__(self, model: Token2Wav, voice: Voice, seed: int | None = None,
                 state: Token2WavState | None = None):
        """``state``: ``model.init_state(voice)`` computed beforehand (the voice's set-up is the same every turn:
        reuse it); None computes it."""
        self.model = model
        self.state = model.init_state(voice) if state is None else state
        self.buffer: list[int] = []
        self.codes_in = 0
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(model.speech_window.device).manual_seed(seed)

    def copy(self) -> SpeechStream:
        """An independent copy: the code buffer and the generator's state copied, the model state shared (it is
        never modified in place). Pushing to the copy leaves this stream as it was."""
        new = SpeechStream.__new__(SpeechStream)
        new.model, new.state, new.buffer, new.codes_in = self.model, self.state, list(self.buffer), self.codes_in
        new.generator = None
        if self.generator is not None:
            new.generator = torch.Generator(self.generator.device)
            new.generator.set_state(self.generator.get_state())
        return new

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
            wav, self.state = self.model.step(torch.tensor([c]), self.state, last, generator or self.generator)
            pieces.append(wav[0])
        return torch.cat(pieces) if pieces else torch.zeros(0)


def step_batched(model: Token2Wav, items: list[tuple[SpeechStream, list[int], bool]],
                 generator: torch.Generator | None = None) -> list[torch.Tensor | InputError]:
    """One chunk for each of several sessions (any voices, progress and chunk lengths) in one
    :meth:`Token2Wav.step_many` call; each stream's state advances. Returns each session's waveform, or the
    :class:`InputError` that refused its chunk (that stream is left as it was), in the order given. HiFT draws from
    each stream's generator, else ``generator``."""
    res = model.step_many([(s.state, c, last, s.generator or generator) for s, c, last in items])
    out: list[torch.Tensor | InputError] = []
    for (s, _, _), r in zip(items, res, strict=True):
        if isinstance(r, Exception):
            out.append(r)
        else:
            out.append(r[0])
            s.state = r[1]
    return out


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
