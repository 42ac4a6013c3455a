"""Token sampling for the decode loop: temperature, top-k, top-p and repetition penalty, batched over sessions.

Text and audio tokens have separate settings (:class:`SamplingConfig` ``text`` / ``audio``); each batch row uses the
settings of the token class its session samples at this step. Every session owns a seeded ``torch.Generator`` and
draws exactly one uniform number per sampled token from it, so a session samples the same tokens whether it runs
alone or batched with others (the rest is row-wise math). Temperature 0 is greedy (argmax), and draws nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from a2llm_rt.config import Config


@dataclasses.dataclass
class SamplingParams(Config):
    """Sampling of one token class."""

    temperature: float = 0.7
    """Softmax temperature; 0 = greedy."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = all)."""
    top_p: float = 0.9
    """Nucleus: keep the smallest set of tokens whose probability reaches top_p (1 = all)."""
    repetition_penalty: float = 1.05
    """CTRL-style penalty on tokens among the last ``penalty_window`` ones of the class (1 = off)."""
    penalty_window: int = 64
    """How many recent tokens of this class the penalty looks at."""

    def validate(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or self.penalty_window < 0:
            raise ValueError("temperature, top_k and penalty_window must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def _greedy() -> SamplingParams:
    return SamplingParams(temperature=0.0, top_p=1.0, repetition_penalty=1.0)


@dataclasses.dataclass
class SamplingConfig(Config):
    """Sampling of a session (defaults: Step-Audio-2's reference, temperature 0.7, top-p 0.9, penalty 1.05)."""

    text: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    audio: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    motion_temperature: float = 0.0
    """Temperature of the motion codes (connector logits); 0 = greedy."""
    motion_top_k: int = 0
    """Top-k of the motion codes (0 = all)."""
    seed: int = 0
    """Seed of the session's generator."""

    def validate(self) -> None:
        if self.motion_temperature < 0 or self.motion_top_k < 0:
            raise ValueError("motion_temperature and motion_top_k must be >= 0")

    @classmethod
    def greedy(cls, seed: int = 0) -> SamplingConfig:
        """Argmax everywhere, no penalty (deterministic; used by the batched == alone tests)."""
        return cls(text=_greedy(), audio=_greedy(), motion_temperature=0.0, seed=seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator (one uniform draw per sampled token: cheap, and independent of the model's device)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def apply_repetition_penalty(
    logits: torch.Tensor, history: Sequence[Sequence[int]], penalties: Sequence[float]
) -> torch.Tensor:
    """CTRL / HF-style penalty: logits ``[B, V]`` of tokens in ``history[b]`` are divided by ``penalties[b]`` when
    positive and multiplied when negative. Returns a new tensor."""
    b, v = logits.shape
    rows = [i for i in range(b) if penalties[i] != 1.0 and len(history[i]) > 0]
    if not rows:
        return logits
    h = max(len(history[i]) for i in rows)
    idx = torch.full((b, h), v, dtype=torch.long)
    pen = torch.ones(b, 1, dtype=logits.dtype)
    for i in rows:
        idx[i, : len(history[i])] = torch.as_tensor(list(history[i]), dtype=torch.long).clamp(0, v - 1)
        pen[i, 0] = float(penalties[i])
    seen = torch.zeros(b, v + 1, dtype=torch.bool)
    seen.scatter_(1, idx, True)
    seen = seen[:, :v].to(logits.device)
    pen = pen.to(logits.device)
    return torch.where(seen, torch.where(logits > 0, logits / pen, logits * pen), logits)


def sample_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    allowed: torch.Tensor | None = None,
    history: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Choose one token per row.

    logits: ``[B, V]``; params / generators / history: one per row; allowed: ``[B, V]`` bool (False = masked out,
    e.g. the wrong token class for this TA4 slot; every row must allow at least one token). Returns ``[B]`` int64
    on the logits' device. A row with ``params.greedy`` takes the argmax of its (penalised, masked) logits.
    """
    b, v = logits.shape
    x = logits.float()
    if history is not None:
        x = apply_repetition_penalty(x, history, [p.repetition_penalty for p in params])
    if allowed is not None:
        x = x.masked_fill(~allowed.to(x.device), float("-inf"))
    out = x.argmax(-1)
    stochastic = [i for i in range(b) if not params[i].greedy]
    if not stochastic:
        return out
    sel = torch.as_tensor(stochastic, dtype=torch.long, device=x.device)
    xs = x.index_select(0, sel)  # [S, V]
    temp = torch.tensor([params[i].temperature for i in stochastic], device=x.device)[:, None]
    top_k = torch.tensor([params[i].top_k if params[i].top_k > 0 else v for i in stochastic], device=x.device)
    top_p = torch.tensor([params[i].top_p for i in stochastic], device=x.device)[:, None]
    sorted_x, sorted_idx = torch.sort(xs / temp, dim=-1, descending=True)
    rank = torch.arange(v, device=x.device)[None, :]
    sorted_x = sorted_x.masked_fill(rank >= top_k[:, None], float("-inf"))
    probs = torch.softmax(sorted_x, dim=-1)
    cum = probs.cumsum(-1)
    probs = probs.masked_fill((cum - probs) > top_p, 0.0)  # the first token always stays
    cum = probs.cumsum(-1)
    u = torch.stack([torch.rand((), generator=generators[i], dtype=torch.float64) for i in stochastic])
    target = (u.to(x.device, cum.dtype) * cum[:, -1])[:, None]
    pos = torch.searchsorted(cum, target, right=True).clamp_max(v - 1)  # [S, 1]
    # never land on a zero-probability token (rounding at the top of cum)
    pos = torch.minimum(pos, (probs > 0).cumsum(-1).argmax(-1, keepdim=True))
    out = out.clone()
    out[sel] = sorted_idx.gather(1, pos)[:, 0]
    return out
