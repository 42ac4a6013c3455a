"""The native token2wav behind the engine's :class:`~a2llm_rt.engine.vocoder.Vocoder` interface.

One :class:`NativeToken2WavVocoder` holds the shared model and the voices (name -> :class:`Voice`); each stream
(one turn of one session) gets a :class:`NativeToken2WavState` with its own :class:`SpeechStream`. Audio is emitted
chunk by chunk: the first 28 codes of a turn give the first 0.84 s, then every 25 codes give 1 s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.engine.vocoder import Codes, Vocoder, VocoderState
from a2llm_rt.errors import InputError
from a2llm_rt.speech.token2wav import CHUNK_CODES, SpeechStream, Token2Wav, load_token2wav
from a2llm_rt.speech.voice import Voice


@dataclasses.dataclass
class NativeToken2WavState(VocoderState):
    """Per-stream state: the session's speech stream (code buffer + flow/HiFT caches)."""

    stream: SpeechStream | None = None
    voice: str = ""


class NativeToken2WavVocoder(Vocoder):
    """Step-Audio-2's token2wav, implemented natively (:mod:`a2llm_rt.speech`)."""

    chunk_codes = CHUNK_CODES

    def __init__(self, model: Token2Wav, voices: dict[str, Voice], default_voice: str | None = None):
        if not voices:
            raise InputError("the token2wav vocoder needs at least one voice")
        self.model = model
        self.voices = dict(voices)
        self.default_voice = default_voice or next(iter(voices))
        if self.default_voice not in self.voices:
            raise InputError(f"unknown default voice {self.default_voice!r} (have {sorted(self.voices)})")
        for v in self.voices.values():
            model.init_state(v)  # validates the voice against the model once, at start-up
        self.n_codes = model.flow_cfg.vocab_size
        self.lookahead_codes = model.lookahead
        self.sample_rate = model.sample_rate
        self.samples_per_code = model.samples_per_code

    @classmethod
    def from_directory(cls, folder: str | Path, voices: dict[str, str | Path], default_voice: str | None = None,
                       device: torch.device | str = "cpu") -> NativeToken2WavVocoder:
        """``voices``: name -> a voice file (``.safetensors``) or a prompt WAV (made into a voice with the folder's
        ONNX models)."""
        model = load_token2wav(folder, device)
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
        return NativeToken2WavState(stream=SpeechStream(self.model, self.voices[name]), voice=name)

    def push(self, codes: Codes, state: NativeToken2WavState,
             final: bool = False) -> tuple[np.ndarray, NativeToken2WavState]:
        if state.finished or state.stream is None:
            raise InputError("this vocoder stream is finished (final=True was pushed); start a new state")
        arr = self.check_codes(codes)
        if final and state.codes_in + arr.size == 0:
            # an answer without speech: nothing to say, end the stream quietly
            return np.zeros(0, np.float32), dataclasses.replace(state, finished=True)
        ready = state.stream.push(arr.tolist(), final=final)
        pcm = state.stream.run(ready).cpu().numpy().astype(np.float32)
        return pcm, dataclasses.replace(state, codes_in=state.codes_in + int(arr.size),
                                        samples_out=state.samples_out + int(pcm.size), finished=final)
