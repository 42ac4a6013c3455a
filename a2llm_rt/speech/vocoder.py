"""The native token2wav behind the engine's :class:`~a2llm_rt.engine.vocoder.Vocoder` interface.

One :class:`NativeToken2WavVocoder` holds the shared model and the voices (name -> :class:`Voice`); each stream
(one turn of one session) gets a :class:`NativeToken2WavState` with its own :class:`SpeechStream`. Audio is emitted
chunk by chunk: the first 28 codes of a turn give the first 0.84 s, then every 25 codes give 1 s; ``flush`` (the
streaming contract's) synthesises the last chunk with what is left.

The state follows the vocoder's host-side streaming contract (:class:`~a2llm_rt.engine.vocoder.VocoderState`): one
stream per state, never modified in place (a push works on a copy of the stream's code buffer and generator; the
token2wav state is immutable), sessions batched at step time by :meth:`NativeToken2WavVocoder.push_many` (see
:class:`~a2llm_rt.speech.token2wav.Token2WavState` for why the caches are ragged, per-session state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.engine.vocoder import Codes, Vocoder, VocoderState
from a2llm_rt.errors import InputError
from a2llm_rt.speech.token2wav import (
    CHUNK_CODES,
    SpeechStream,
    Token2Wav,
    Token2WavState,
    load_token2wav,
    step_batched,
)
from a2llm_rt.speech.voice import Voice


@dataclasses.dataclass
class NativeToken2WavState(VocoderState):
    """Per-stream state: the session's speech stream (code buffer + flow/HiFT caches + HiFT generator); a push
    returns a new state with a new stream and leaves this one as it was."""

    stream: SpeechStream | None = None
    voice: str = ""


class NativeToken2WavVocoder(Vocoder):
    """Step-Audio-2's token2wav, implemented natively (:mod:`a2llm_rt.speech`)."""

    chunk_codes = CHUNK_CODES

    def __init__(self, model: Token2Wav, voices: dict[str, Voice], default_voice: str | None = None,
                 seed: int | None = 0):
        if not voices:
            raise InputError("the token2wav vocoder needs at least one voice")
        self.model = model
        self.seed = seed
        """Seed of each stream's HiFT generator (its random phases and noise): the same codes and voice give the
        same audio whichever sessions share the batch. None: torch's global generator."""
        self.voices = dict(voices)
        self.default_voice = default_voice or next(iter(voices))
        if self.default_voice not in self.voices:
            raise InputError(f"unknown default voice {self.default_voice!r} (have {sorted(self.voices)})")
        self.voice_states: dict[str, Token2WavState] = {name: model.init_state(v) for name, v in self.voices.items()}
        """Each voice's set-up (its prompt through the encoder and the 20 estimator passes), computed once at start-up
        (which also validates the voice): it is the same for every turn, and every stream starts from it (states are
        never modified in place, so streams share it)."""
        self.n_codes = model.flow_cfg.vocab_size
        self.lookahead_codes = model.lookahead
        self.sample_rate = model.sample_rate
        self.samples_per_code = model.samples_per_code

    @classmethod
    def from_directory(cls, folder: str | Path, voices: dict[str, str | Path], default_voice: str | None = None,
                       device: torch.device | str = "cpu", engines: str | Path | None = None,
                       backend: str = "auto") -> NativeToken2WavVocoder:
        """``voices``: name -> a voice file (``.safetensors``) or a prompt WAV (made into a voice with the folder's
        ONNX models). ``engines``: a speech engines folder (``python -m export.speech_export``, + ``export.speech_trt``)
        run by ``backend`` (:func:`a2llm_rt.speech.backend.use_backend`: auto, torch, onnxruntime, tensorrt)."""
        from a2llm_rt.speech.backend import use_backend

        model = load_token2wav(folder, device)
        use_backend(model, engines, backend)
        loaded: dict[str, Voice] = {}
        maker = None
        for name, path in voices.items():
            if str(path).endswith(".safetensors"):
                loaded[name] = Voice.load(path, name)
            else:
                from a2llm_rt.speech.make_voice import VoiceMaker

                maker = maker or VoiceMaker.from_folder(folder)
                loaded[name] = maker.from_wav(path, name)
        return cls(model, loaded, default_voice)

    def init_state(self, voice: str | None = None) -> NativeToken2WavState:
        name = voice or self.default_voice
        if name not in self.voices:
            raise InputError(f"unknown voice {name!r} (have {sorted(self.voices)})")
        stream = SpeechStream(self.model, self.voices[name], seed=self.seed, state=self.voice_states[name])
        return NativeToken2WavState(stream=stream, voice=name)

    def push(self, codes: Codes, state: NativeToken2WavState,
             final: bool = False) -> tuple[np.ndarray, NativeToken2WavState]:
        (r,) = self.push_many([(codes, state, final)])
        if isinstance(r, Exception):
            raise r
        return r

    def push_many(self, items: Sequence[tuple[Codes, VocoderState, bool]]
                  ) -> list[tuple[np.ndarray, VocoderState] | Exception]:
        """All streams' pushes of one engine step: the chunks they make ready go through the model together, the
        k-th ready chunk of every stream in one :meth:`Token2Wav.step_many` batch (usually k = 0 only). A bad push
        (finished stream, code out of range) fails its own stream; a batch that fails inside the model is retried
        stream by stream, so only the stream that breaks it fails. The states passed in are not modified (each push
        works on a copy of its stream), so a failed push leaves its stream as it was."""
        out: list = [None] * len(items)
        ready: dict[int, list[tuple[list[int], bool]]] = {}
        streams: dict[int, SpeechStream] = {}
        counts: dict[int, int] = {}
        for i, (codes, state, final) in enumerate(items):
            try:
                if not isinstance(state, NativeToken2WavState) or state.finished or state.stream is None:
                    raise InputError("this vocoder stream is finished (final=True was pushed); start a new state")
                arr = self.check_codes(codes)
                if final and state.codes_in + arr.size == 0:
                    # an answer without speech: nothing to say, end the stream quietly
                    out[i] = (np.zeros(0, np.float32), dataclasses.replace(state, finished=True))
                    continue
                streams[i] = state.stream.copy()
                ready[i] = streams[i].push(arr.tolist(), final=final)
                counts[i] = int(arr.size)
            except Exception as e:  # noqa: BLE001 - this stream's failure only
                out[i] = e
        pieces: dict[int, list[torch.Tensor]] = {i: [] for i in ready}
        for k in range(max((len(r) for r in ready.values()), default=0)):
            batch = [i for i, r in ready.items() if len(r) > k and out[i] is None]
            for i, r in zip(batch, self._run([(streams[i], *ready[i][k]) for i in batch]), strict=True):
                if isinstance(r, Exception):
                    out[i] = r
                else:
                    pieces[i].append(r)
        for i, (_, state, final) in enumerate(items):
            if out[i] is not None:
                continue
            p = pieces[i]
            pcm = (torch.cat(p) if p else torch.zeros(0)).cpu().numpy().astype(np.float32)
            out[i] = (pcm, dataclasses.replace(state, stream=streams[i], codes_in=state.codes_in + counts[i],
                                               samples_out=state.samples_out + int(pcm.size), finished=final))
        return out

    def _run(self, items: list[tuple[SpeechStream, list[int], bool]]) -> list[torch.Tensor | Exception]:
        try:
            return list(step_batched(self.model, items))
        except Exception as e:  # noqa: BLE001 - find the stream that breaks the batch; the others go on
            if len(items) == 1:
                return [e]  # that stream's failure, as push_many promises (not raised out of the engine's step)
        out: list[torch.Tensor | Exception] = []
        for it in items:
            try:
                out.extend(step_batched(self.model, [it]))
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out
