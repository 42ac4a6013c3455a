"""A voice: what the flow model needs from a prompt recording, computed once and cached in a small file.

- ``prompt_tokens`` [Tp] int: the prompt's 25 Hz speech codes (CosyVoice2 speech tokenizer v2);
- ``prompt_mel`` [2*Tp, mel] float: its 80-bin log mel at 24 kHz (50 Hz; padded/cut to two frames per code, the
  way upstream's ``_prepare_prompt`` pads with the last frame);
- ``embedding`` [spk_dim] float: the CAM++ speaker embedding.

Stored as safetensors (``.voice.safetensors``), nothing executable. :mod:`a2llm_rt.speech.make_voice` builds one
from a wav.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from a2llm_rt.errors import InputError

MIN_PROMPT_CODES = 4
"""Shortest prompt accepted (codes); the streaming set-up needs the 3 look-ahead codes after it."""
MAX_PROMPT_CODES = 30 * 25
"""Longest prompt accepted (30 s)."""


@dataclasses.dataclass(frozen=True)
class Voice:
    """Prompt codes, prompt mel and speaker embedding of one voice (see the module docstring)."""

    prompt_tokens: torch.Tensor
    prompt_mel: torch.Tensor
    embedding: torch.Tensor
    name: str = "voice"

    def validate(self, vocab_size: int, mel_bins: int, spk_dim: int, up_rate: int = 2) -> None:
        t, m, e = self.prompt_tokens, self.prompt_mel, self.embedding
        if t.dim() != 1 or t.dtype not in (torch.int32, torch.int64):
            raise InputError(f"voice {self.name}: prompt_tokens must be a 1-D integer tensor")
        if not MIN_PROMPT_CODES <= t.numel() <= MAX_PROMPT_CODES:
            raise InputError(f"voice {self.name}: prompt has {t.numel()} codes; need {MIN_PROMPT_CODES}.."
                             f"{MAX_PROMPT_CODES} (0.16..30 s of speech)")
        if int(t.min()) < 0 or int(t.max()) >= vocab_size:
            raise InputError(f"voice {self.name}: prompt codes must be in 0..{vocab_size - 1}")
        if m.shape != (up_rate * t.numel(), mel_bins):
            raise InputError(f"voice {self.name}: prompt_mel must be [{up_rate * t.numel()}, {mel_bins}], "
                             f"got {list(m.shape)}")
        if e.shape != (spk_dim,):
            raise InputError(f"voice {self.name}: embedding must be [{spk_dim}], got {list(e.shape)}")
        if not (torch.isfinite(m).all() and torch.isfinite(e).all()):
            raise InputError(f"voice {self.name}: non-finite values")
        if float(e.norm()) == 0.0:
            raise InputError(f"voice {self.name}: the speaker embedding is zero")

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"prompt_tokens": self.prompt_tokens.to(torch.int64).contiguous(),
                   "prompt_mel": self.prompt_mel.float().contiguous(),
                   "embedding": self.embedding.float().contiguous()}, str(tmp), metadata={"name": self.name})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> Voice:
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), "pt") as f:
                keys = set(f.keys())
                if keys != {"prompt_tokens", "prompt_mel", "embedding"}:
                    raise InputError(f"not a voice file (tensors {sorted(keys)})", path=path)
                meta = f.metadata() or {}
                return cls(f.get_tensor("prompt_tokens"), f.get_tensor("prompt_mel"), f.get_tensor("embedding"),
                           name or meta.get("name", path.stem))
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors raises several kinds on bad files
            raise InputError(f"cannot read voice file: {e}", path=path) from None

    @classmethod
    def from_prompt(cls, prompt_tokens: torch.Tensor, prompt_mel: torch.Tensor, embedding: torch.Tensor,
                    name: str = "voice", up_rate: int = 2) -> Voice:
        """Pad (with the last frame) or cut the mel to ``up_rate`` frames per code, as upstream does."""
        tokens = torch.as_tensor(prompt_tokens, dtype=torch.int64).flatten()
        mel = torch.as_tensor(prompt_mel, dtype=torch.float32)
        want = up_rate * tokens.numel()
        if mel.dim() != 2 or mel.size(0) == 0:
            raise InputError(f"voice {name}: prompt mel must be [frames, bins] with frames > 0")
        if mel.size(0) < want:
            mel = torch.cat([mel, mel[-1:].expand(want - mel.size(0), -1)], dim=0)
        return cls(tokens, mel[:want].contiguous(), torch.as_tensor(embedding, dtype=torch.float32).flatten(), name)
