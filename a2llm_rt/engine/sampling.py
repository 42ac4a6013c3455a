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


# ---- host <-> device ---------------------------------------------------------------------------------------------
def host_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """An empty host tensor to fill and upload to ``device``: page-locked when ``device`` is CUDA, so that
    :func:`upload` is an asynchronous copy (the caching host allocator keeps the block until the copy is done)."""
    pin = torch.device(device).type == "cuda"
    return torch.empty(shape, dtype=dtype, pin_memory=pin)


def upload(host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``host`` on ``device`` (non-blocking when ``host`` is pinned; a no-op on the CPU)."""
    return host.to(device, non_blocking=host.is_pinned())


# ---- the packed per-step inputs of sampling ------------------------------------------------------------------------
#: Fixed columns of a :class:`SamplingBatch` row: temperature (1 for greedy rows), top-k (V for "all"), top-p,
#: repetition penalty, the uniform draw (-1 for greedy rows), then the penalised history ids (-1 = none).
_COLS = 5


class SamplingBatch:
    """The host side of one step's sampling of ``n`` rows, packed into one float64 tensor ``[n, 5 + H]`` so that it
    reaches the device in ONE copy (ids < 2**53 are exact in float64).

    Built from per-row settings, generators and recent-token histories; the uniform draws are taken here, one per
    stochastic row from that row's generator (so a row samples the same tokens alone or batched). The repetition
    penalty's ``[n, V]`` mask is built on the device from the ids (:func:`sample_packed`), never uploaded.
    """

    def __init__(
        self,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
        history: Sequence[Sequence[int]] | None,
        vocab_size: int,
        device: torch.device | str = "cpu",
    ):
        n = len(params)
        hist = [list(history[i]) if history is not None and params[i].repetition_penalty != 1.0 else []
                for i in range(n)]  # fmt: skip
        h = max((len(x) for x in hist), default=0)
        self.n, self.vocab_size = n, vocab_size
        self.any_stochastic = any(not p.greedy for p in params)
        self.any_penalty = h > 0
        self.stochastic = [not p.greedy for p in params]
        self.host = host_buffer((n, _COLS + h), torch.float64, device)
        rows = []
        for i, p in enumerate(params):
            temp = p.temperature if not p.greedy else 1.0
            top_k = p.top_k if 0 < p.top_k < vocab_size else vocab_size
            ids = [min(max(int(t), 0), vocab_size - 1) for t in hist[i]] + [-1] * (h - len(hist[i]))
            rows.append([temp, float(top_k), p.top_p, p.repetition_penalty, -1.0, *ids])  # greedy rows: u = -1
        if n:
            self.host.copy_(torch.tensor(rows, dtype=torch.float64))
        for i, p in enumerate(params):  # one uniform per stochastic row, drawn in place (no host read)
            if not p.greedy:
                self.host[i, 4:5].uniform_(generator=generators[i])

    @property
    def width(self) -> int:
        return self.host.shape[1]


def sample_packed(
    logits: torch.Tensor,
    packed: torch.Tensor,
    allowed: torch.Tensor | None = None,
    any_stochastic: bool = True,
    any_penalty: bool = True,
) -> torch.Tensor:
    """Sampling on the logits' device from a :class:`SamplingBatch`'s packed rows.

    logits ``[n, V]``; packed ``[n, 5 + H]`` float64 on the same device; allowed ``[n, V]`` bool or None. Returns
    ``[n]`` int64 on the device: the argmax of the penalised, masked logits for greedy rows (temperature 0), else a
    draw by inverse CDF from the row's uniform over the temperature-scaled, top-k and top-p restricted softmax. No
    host sync; ``any_*`` (known on the host) skip work no row needs.
    """
    n, v = logits.shape
    x = logits.float()
    if any_penalty and packed.shape[1] > _COLS:
        x = _penalise(x, packed)
    if allowed is not None:
        x = x.masked_fill(~(allowed if allowed.device == x.device else allowed.to(x.device)), float("-inf"))
    out = x.argmax(-1)
    if not any_stochastic:
        return out
    temp = packed[:, 0:1].to(x.dtype)
    top_k = packed[:, 1:2].long()
    top_p = packed[:, 2:3].to(x.dtype)
    u = packed[:, 4]
    sorted_x, sorted_idx = torch.sort(x / temp, dim=-1, descending=True)
    rank = torch.arange(v, device=x.device)[None, :]
    sorted_x = sorted_x.masked_fill(rank >= top_k, float("-inf"))
    probs = torch.softmax(sorted_x, dim=-1)
    cum = probs.cumsum(-1)
    probs = probs.masked_fill((cum - probs) > top_p, 0.0)  # the first token always stays
    cum = probs.cumsum(-1)
    target = (u.to(cum.dtype) * cum[:, -1])[:, None]
    pos = torch.searchsorted(cum, target, right=True).clamp_max(v - 1)  # [n, 1]
    # never land on a zero-probability token (rounding at the top of cum)
    pos = torch.minimum(pos, (probs > 0).cumsum(-1).argmax(-1, keepdim=True))
    drawn = sorted_idx.gather(1, pos)[:, 0]
    return torch.where(packed[:, 4] >= 0, drawn, out)  # greedy rows carry the uniform -1


def apply_repetition_penalty(
    logits: torch.Tensor, history: Sequence[Sequence[int]], penalties: Sequence[float]
) -> torch.Tensor:
    """CTRL / HF-style penalty: logits ``[B, V]`` of tokens in ``history[b]`` are divided by ``penalties[b]`` when
    positive and multiplied when negative. Returns a new tensor (the mask is built on the logits' device)."""
    b, v = logits.shape
    params = [SamplingParams(temperature=0.0, top_p=1.0, repetition_penalty=float(p)) for p in penalties]
    batch = SamplingBatch(params, [None] * b, history, v)
    if not batch.any_penalty:
        return logits
    return _penalise(logits, upload(batch.host, logits.device))


def _penalise(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """The repetition penalty of packed rows, its ``[n, V]`` seen-mask scattered on ``x``'s device from the ids."""
    n, v = x.shape
    ids = packed[:, _COLS:].long()
    ids = torch.where(ids < 0, torch.full_like(ids, v), ids)
    seen = torch.zeros(n, v + 1, dtype=torch.bool, device=x.device).scatter_(1, ids, True)[:, :v]
    pen = packed[:, 3:4].to(x.dtype)
    return torch.where(seen, torch.where(x > 0, x / pen, x * pen), x)


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
    One upload (the packed settings, draws and history ids), no download.
    """
    batch = SamplingBatch(params, generators, history, logits.shape[1], logits.device)
    packed = upload(batch.host, logits.device)
    return sample_packed(logits, packed, allowed, batch.any_stochastic, batch.any_penalty)


# ---- motion codes -------------------------------------------------------------------------------------------------
def motion_uniforms(
    n_codes: int, temperatures: Sequence[float], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """``[B, n_codes]`` float64 host uniforms for :func:`sample_motion_codes`: ``n_codes`` draws from the generator
    of each row whose temperature is > 0 (-1 for greedy rows, which draw nothing)."""
    out = torch.full((len(temperatures), n_codes), -1.0, dtype=torch.float64)
    for i, t in enumerate(temperatures):
        if t > 0:
            out[i] = torch.rand(n_codes, generator=generators[i], dtype=torch.float64)
    return out


def sample_motion_codes(
    logits: torch.Tensor,
    temperatures: torch.Tensor,
    top_k: torch.Tensor,
    uniforms: torch.Tensor,
) -> torch.Tensor:
    """Motion codes from connector logits on their device, without ``torch.multinomial`` (which cannot take a CPU
    generator with CUDA probabilities).

    logits ``[B, T, N_q, K]``; temperatures / top_k ``[B]`` (float, int; top_k 0 = all), uniforms ``[B, T*N_q]``
    float64 from :func:`motion_uniforms` (on the logits' device). Rows with temperature 0 take the argmax; the
    others pick by inverse CDF from softmax(logits / T) restricted to the top-k codes (ties at the k-th value kept,
    as :func:`sample_codes` does). Returns ``[B, T, N_q]`` int64.
    """
    b, t, q, k = logits.shape
    x = logits.float()
    greedy = x.argmax(-1)
    temp = temperatures.to(x.device, x.dtype).clamp_min(1e-6).view(b, 1, 1, 1)
    x = x / temp
    kk = top_k.to(x.device, torch.long).view(b, 1, 1, 1)
    kk = torch.where((kk <= 0) | (kk > k), torch.full_like(kk, k), kk)
    kth = torch.sort(x, dim=-1, descending=True).values.gather(-1, (kk - 1).expand(b, t, q, 1))
    x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1).reshape(b * t * q, k)
    cum = probs.cumsum(-1)
    u = uniforms.to(x.device).reshape(b * t * q, 1).clamp_min(0.0)
    pos = torch.searchsorted(cum, u.to(cum.dtype) * cum[:, -1:], right=True).clamp_max(k - 1)
    pos = torch.minimum(pos, (probs > 0).cumsum(-1).argmax(-1, keepdim=True))
    drawn = pos.view(b, t, q)
    stochastic = (temperatures.to(x.device) > 0).view(b, 1, 1)
    return torch.where(stochastic, drawn, greedy)


def sample_codes(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose codes from connector logits [..., N_q, K] -> [..., N_q] int64.

    ``temperature`` 0 is greedy (argmax per level); otherwise each level samples independently from
    softmax(logits / temperature), restricted to the ``top_k`` most likely codes when given.
    """
    if temperature <= 0.0:
        return logits.argmax(-1)
    x = logits.float() / temperature
    if top_k is not None and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.view(probs.shape[:-1])
