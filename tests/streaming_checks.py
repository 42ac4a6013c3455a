"""The shared checks of the streaming contract (:mod:`a2llm_rt.streaming`), run for every streaming module.

A :class:`StreamCase` adapts one module (or one runtime of it: an exported graph through its backend) to the
contract: ``init``, ``step``, ``flush``, the per-row lengths, ``whole`` (the whole-sequence reference), how to make
an input and the module's declared ``lookahead``. The three checks:

- :func:`check_chunked_equals_whole`: ``step`` over several chunkings (irregular ones too), then ``flush``,
  concatenates, row by row, to ``whole``;
- :func:`check_causality`: changing the input from step ``i`` on leaves every output before
  ``floor((i - lookahead) * rate)`` unchanged (streamed and whole), and (``tight``) changes the first one after it;
- :func:`check_reset_one_row`: after ``reset`` of one row of a batch, that row's outputs (counts and values) equal a
  fresh stream's on the same inputs, while the other row goes on as if nothing happened.

Host-side streaming modules (one stream per state, batched at step time; the vocoders) run the same checks through
:func:`host_case` (a batch is a list of states) or :func:`vocoder_case`.

Outputs are compared per row with the lengths the case reports with each output (a module's ``output_lengths`` /
``flush_lengths``, a backend's ``DecodedFrames.lengths``), so rows at different points of their streams are checked
as the engine reads them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

State = Any


@dataclasses.dataclass
class StreamCase:
    """One streaming module under test. Tensors are batch first, time on dim 1 (inputs and outputs)."""

    name: str
    init: Callable[[int], State]
    """``batch -> fresh state``."""
    step: Callable[[torch.Tensor, State], tuple[torch.Tensor, torch.Tensor, State]]
    """``(x, state) -> (y, lengths [B], new state)``: ``y`` rows left-aligned and zero-padded (to the longest row or
    to a static size), ``lengths`` each row's outputs."""
    flush: Callable[[State], tuple[torch.Tensor, torch.Tensor, State]]
    whole: Callable[[torch.Tensor], torch.Tensor]
    """Whole-sequence reference ``[B, T, ...] -> [B, T', ...]``."""
    make_input: Callable[[int, int, torch.Generator], torch.Tensor]
    """``(batch, steps, generator) -> input``."""
    perturb: Callable[[torch.Tensor, int], torch.Tensor]
    """A copy of the input changed at every step ``>= i``."""
    lookahead: int
    """Future input steps an output may depend on."""
    rate: float
    """Output steps per input step (decoder: G frames per token; encoder: 1/G tokens per frame)."""
    steps: int
    """Input length used by the checks (whole tokens for a module that needs them)."""
    atol: float = 1e-5
    rtol: float = 1e-5
    reset: Callable[[State, torch.Tensor], State] | None = None
    """``(state, mask [B] bool) -> state`` with the masked rows fresh; None: ``state.reset(mask)`` in place (batched
    tensor states). Host-side states (one stream each, refusing ``reset``) give a batch as a list of states and a
    ``reset`` that puts fresh ones in the masked rows."""


def _rows(chunks: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> list[torch.Tensor]:
    """Per-row concatenation of ``(output, lengths)`` chunks."""
    return [torch.cat([y[b, : int(n[b])] for y, n in chunks], 0) for b in range(batch)]


def run_stream(case: StreamCase, x: torch.Tensor, cuts: Sequence[int], state: State | None = None):
    """Step ``x`` cut at ``cuts`` (input steps), then flush. Returns (per-row outputs, final state)."""
    state = case.init(x.shape[0]) if state is None else state
    chunks = []
    bounds = [0, *cuts, x.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        y, n, state = case.step(x[:, a:b], state)
        _check_padding(case, y, n, "step")
        chunks.append((y, n))
    y, n, state = case.flush(state)
    _check_padding(case, y, n, "flush")
    chunks.append((y, n))
    return _rows(chunks, x.shape[0]), state


def _check_padding(case: StreamCase, y: torch.Tensor, n: torch.Tensor, what: str) -> None:
    """Every row's outputs fit in ``y`` (trimmed to the longest row, or a static size) and are zero past its length."""
    assert y.shape[1] >= int(n.max()), f"{case.name}: {what} output {tuple(y.shape)} but lengths {n.tolist()}"
    for b in range(y.shape[0]):
        assert not y[b, int(n[b]) :].any(), f"{case.name}: {what}: row {b} is not zero past its {int(n[b])} outputs"


def _close(case: StreamCase, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, f"{case.name}: {what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(got.float(), want.float(), atol=case.atol, rtol=case.rtol, msg=f"{case.name}: {what}")


def check_chunked_equals_whole(case: StreamCase, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    x = case.make_input(2, case.steps, g)
    whole = case.whole(x)
    t = case.steps
    chunkings = [list(range(1, t)), list(range(3, t, 3)), [1, 2, max(2, t // 2), max(2, t - 1)], []]
    for cuts in chunkings:
        cuts = sorted({c for c in cuts if 0 < c < t})
        rows, _ = run_stream(case, x, cuts)
        for b in range(2):
            _close(case, rows[b], whole[b], f"chunks cut at {cuts}, row {b}")


def check_causality(
    case: StreamCase, points: Sequence[int] | None = None, tight: bool = True, seed: int = 1, uniform: bool = True
) -> None:
    """``uniform``: every output waits exactly ``lookahead`` input steps, so a step emits none past
    ``floor((i - lookahead) * rate)`` (checked); False for a chunked module whose look-ahead varies within a chunk
    (the declared one is its largest: an output early in a chunk may come out sooner)."""
    g = torch.Generator().manual_seed(seed)
    x = case.make_input(1, case.steps, g)
    ref = case.whole(x)
    points = points or [case.steps // 3, (2 * case.steps) // 3]
    for i in points:
        x2 = case.perturb(x, i)
        out = case.whole(x2)
        first = max(0, math.floor((i - case.lookahead) * case.rate))
        _close(case, out[:, :first], ref[:, :first], f"whole output before {first} with input changed from {i}")
        if tight:
            assert not torch.allclose(out[:, first], ref[:, first], atol=case.atol), (
                f"{case.name}: output {first} does not depend on input {i} (declared lookahead {case.lookahead})"
            )
        # streamed: what has come out after the first i input steps is fixed before the changed input arrives
        y, n, _ = case.step(x2[:, :i], case.init(1))
        _close(case, y[0, : int(n[0])], ref[0, : int(n[0])], f"streamed output before input {i}")
        assert not uniform or int(n[0]) <= max(first, 0), (
            f"{case.name}: {int(n[0])} outputs came out before their look-ahead"
        )


def check_reset_one_row(case: StreamCase, before: int | None = None, seed: int = 2) -> None:
    """Rows 0 and 1 stream ``before`` input steps; row 1 is reset; both go on with new input (in uneven chunks),
    then flush. Row 1 must equal a fresh stream of its new input; row 0 the whole of its old + new input."""
    g = torch.Generator().manual_seed(seed)
    t = case.steps
    before = before if before is not None else max(1, t // 3)
    x_old = case.make_input(2, before, g)
    x_new = case.make_input(2, t, g)
    y, n, state = case.step(x_old, case.init(2))
    head = (y, n)
    mask = torch.tensor([False, True])
    if case.reset is None:
        state.reset(mask)
    else:
        state = case.reset(state, mask)
    cuts = [1, 2, max(3, t // 2)]
    cuts = sorted({c for c in cuts if 0 < c < t})
    rows, _ = run_stream(case, x_new, cuts, state)
    fresh, _ = run_stream(case, x_new[1:], cuts)
    _close(case, rows[1], fresh[0], "reset row vs a fresh stream")
    _close(case, rows[1], case.whole(x_new[1:])[0], "reset row vs whole")
    row0 = torch.cat([head[0][0, : int(head[1][0])], rows[0]], 0)
    _close(case, row0, case.whole(torch.cat([x_old[:1], x_new[:1]], 1))[0], "the other row goes on")


def check_all(case: StreamCase, tight: bool = True) -> None:
    check_chunked_equals_whole(case)
    check_causality(case, tight=tight)
    check_reset_one_row(case)
    check_reset_one_row(case, before=1)  # reset while the other row may still be filling its look-ahead


def module_case(name: str, module, dim: int, steps: int, rate: float) -> StreamCase:
    """A :class:`~a2llm_rt.streaming.StreamingModule` on random float inputs ``[B, T, dim]``."""

    def step(x, state):
        n = module.output_lengths(x.shape[1], state)
        y, state = module.step(x, state)
        return y, n, state

    def flush(state):
        n = module.flush_lengths(state)
        y, state = module.flush(state)
        return y, n, state

    return StreamCase(
        name=name, init=module.init_state, step=step, flush=flush, whole=module,
        make_input=lambda b, t, g: torch.randn(b, t, dim, generator=g), perturb=add_from,
        lookahead=module.lookahead, rate=rate, steps=steps,
    )  # fmt: skip


def add_from(x: torch.Tensor, i: int) -> torch.Tensor:
    """``x`` with 1 added at every step ``>= i``."""
    x = x.clone()
    x[:, i:] += 1.0
    return x


def _pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row outputs -> (zero-padded ``[B, max, ...]``, lengths ``[B]``)."""
    n = torch.tensor([r.shape[0] for r in rows], dtype=torch.int64)
    y = torch.zeros(len(rows), int(n.max()) if len(rows) else 0, *rows[0].shape[1:], dtype=rows[0].dtype)
    for b, r in enumerate(rows):
        y[b, : r.shape[0]] = r
    return y, n


def host_case(
    name: str,
    init_one: Callable[[], State],
    step_many: Callable[[list[torch.Tensor], list[State]], list[tuple[torch.Tensor, State]]],
    flush_one: Callable[[State], tuple[torch.Tensor, State]],
    whole_one: Callable[[torch.Tensor], torch.Tensor],
    make_input,
    perturb,
    lookahead: int,
    rate: float,
    steps: int,
    **kw,
) -> StreamCase:
    """A host-side streaming module: per-row states in a list, one batched ``step_many`` per step (each row's
    input ``[n, ...]`` and state -> its output ``[m, ...]`` and new state), per-row ``flush_one`` and ``whole_one``;
    ``reset`` puts ``init_one()`` states in the masked rows."""

    def step(x, states):
        res = step_many([x[b] for b in range(x.shape[0])], states)
        y, n = _pad_rows([r[0] for r in res])
        return y, n, [r[1] for r in res]

    def flush(states):
        res = [flush_one(s) for s in states]
        y, n = _pad_rows([r[0] for r in res])
        return y, n, [r[1] for r in res]

    def whole(x):
        return torch.stack([whole_one(x[b]) for b in range(x.shape[0])])

    def reset(states, mask):
        return [init_one() if bool(m) else s for s, m in zip(states, mask.tolist(), strict=True)]

    return StreamCase(
        name=name, init=lambda b: [init_one() for _ in range(b)], step=step, flush=flush, whole=whole,
        make_input=make_input, perturb=perturb, lookahead=lookahead, rate=rate, steps=steps, reset=reset, **kw,
    )  # fmt: skip


def vocoder_case(
    name: str, vocoder, steps: int, lookahead: int | None = None, voice: str | None = None, **kw
) -> StreamCase:
    """A :class:`~a2llm_rt.engine.vocoder.Vocoder` (codes ``[B, T]`` int64 -> PCM ``[B, samples]``): ``push_many``
    is the step (one call for the batch), ``flush`` the flush, one final push of all codes the whole
    (``synthesize`` in ``voice``). ``lookahead``: the codes
    after a code that its audio may depend on, hold-back included (None: ``vocoder.lookahead_codes``)."""
    import numpy as np

    def step_many(xs, states):
        res = vocoder.push_many([(x.numpy(), s, False) for x, s in zip(xs, states, strict=True)])
        for r in res:
            if isinstance(r, Exception):
                raise r
        return [(torch.from_numpy(np.asarray(r[0], np.float32)), r[1]) for r in res]

    def flush_one(state):
        pcm, state = vocoder.flush(state)
        return torch.from_numpy(np.asarray(pcm, np.float32)), state

    def perturb(x, i):
        x = x.clone()
        x[:, i:] = (x[:, i:] + 1) % vocoder.n_codes
        return x

    return host_case(
        name, lambda: vocoder.init_state(voice), step_many, flush_one,
        lambda x: torch.from_numpy(np.asarray(vocoder.push(x.numpy(), vocoder.init_state(voice), True)[0], np.float32)),
        lambda b, t, g: torch.randint(0, vocoder.n_codes, (b, t), generator=g), perturb,
        vocoder.lookahead_codes if lookahead is None else lookahead, float(vocoder.samples_per_code), steps, **kw,
    )  # fmt: skip
