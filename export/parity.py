"""Parity of exported graphs with PyTorch, run from the runtime alone (ARCHITECTURE principle 7).

Every check draws *fresh* random inputs (not the tracing examples), runs the artifact through onnxruntime (or any
callable with the same feeds -> outputs contract, e.g. a TensorRT runner) and compares with the fp32 PyTorch module.

Tolerance (per precision): an output passes when ``max|onnx - torch| <= atol + rtol * max|torch|``, see
:data:`TOLERANCE`. Greedy-code agreement (fraction of ``argmax`` codes equal to PyTorch's) is reported beside it; at
fp32 it must be 1.0 up to exact ties, at fp16/bf16 and int8 it is a measured number, not a pass condition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from a2llm_rt.models.connector import MotionConnector
from a2llm_rt.models.motion_tokenizer import DecoderState, MotionTokenizer

#: (atol, rtol) per precision, applied to every float output (logits, frames, new state).
TOLERANCE: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-4),
    "fp16": (1e-2, 2e-2),
    "bf16": (5e-2, 1e-1),
    "int8": (float("inf"), 0.0),  # judged by greedy-code agreement, not by logits
}

Runner = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]


def ort_runner(session) -> Runner:
    """Wrap an ``onnxruntime.InferenceSession`` as ``feeds -> outputs`` (in the graph's output order)."""
    return lambda feeds: session.run(None, feeds)


def _compare(name: str, got: np.ndarray, ref: np.ndarray, precision: str) -> dict[str, Any]:
    atol, rtol = TOLERANCE[precision]
    err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    finite = bool(np.isfinite(got).all())
    tol = 0.0 if np.issubdtype(ref.dtype, np.integer) else atol + rtol * scale  # counts must be exact
    return {"output": name, "max_abs_err": err, "ref_max_abs": scale, "tolerance": tol,
            "passed": finite and got.shape == ref.shape and err <= tol}  # fmt: skip


def connector_inputs(connector: MotionConnector, batch: int, generator: torch.Generator, partial: bool = True) -> dict:
    """Fresh random connector-graph feeds (torch tensors): a mix of first windows, continuing windows and (when
    ``partial`` and batch > 1 and W/G > 1) one short last window."""
    cfg = connector.cfg
    n = cfg.tokens_per_window
    hidden = torch.randn(batch, cfg.window, cfg.d_llm, generator=generator)
    prev = torch.randint(0, cfg.codebook_size, (batch, n, cfg.n_q), generator=generator)
    has_prev = torch.arange(batch) % 2 == 0
    n_valid = torch.full((batch,), n, dtype=torch.long)
    if partial and batch > 1 and n > 1:
        n_valid[-1] = n - 1
        hidden[-1, (n - 1) * cfg.group :] = 0.0
    return {"hidden": hidden, "prev_codes": prev, "has_prev": has_prev, "n_valid": n_valid}


@torch.no_grad()
def connector_reference(connector: MotionConnector, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch logits/codes through :meth:`MotionConnector.step` row by row (short windows run short): the
    reference the exported graph must reproduce. Padded token rows are zero in the returned logits."""
    cfg = connector.cfg
    b, n = feeds["hidden"].shape[0], cfg.tokens_per_window
    logits = torch.zeros(b, n, cfg.n_q, cfg.codebook_size)
    for i in range(b):
        nv = int(feeds["n_valid"][i])
        x = feeds["hidden"][i : i + 1, : nv * cfg.group]
        prev = feeds["prev_codes"][i : i + 1] if bool(feeds["has_prev"][i]) else None
        logits[i, :nv] = connector.step(x, prev)[0].float()
    return logits.numpy(), logits.argmax(-1).numpy()


def _valid_mask(n_valid: np.ndarray, n: int) -> np.ndarray:
    return np.arange(n)[None, :] < n_valid[:, None]  # [B, n]


def connector_parity(
    connector: MotionConnector, run: Runner, precision: str, batches: Sequence[int] = (1, 3), seed: int = 1234
) -> dict[str, Any]:
    """Compare the connector graph with PyTorch at each batch size; returns the measured errors and a verdict."""
    connector = connector.eval()
    g = torch.Generator().manual_seed(seed)
    n = connector.cfg.tokens_per_window
    per_batch = []
    for b in batches:
        feeds = connector_inputs(connector, b, g)
        ref_logits, ref_codes = connector_reference(connector, feeds)
        logits, codes = run({k: v.numpy() for k, v in feeds.items()})[:2]
        mask = _valid_mask(feeds["n_valid"].numpy(), n)
        cmp = _compare("logits", logits[mask], ref_logits[mask], precision)
        cmp["batch"] = b
        cmp["code_agreement"] = float((codes[mask] == ref_codes[mask]).mean())
        cmp["codes_match_logits"] = bool((codes[mask] == logits[mask].argmax(-1)).all())
        per_batch.append(cmp)
    return _summary(per_batch, precision)


def decoder_inputs(tokenizer: MotionTokenizer, batch: int, n: int, generator: torch.Generator) -> dict:
    """Fresh random decoder-graph feeds: codes, an all-ones code mask (one zero entry when n > 1) and a random state
    (float tensors random, each row's ``filled`` drawn in 0..lookahead, so rows hold back different counts)."""
    cfg = tokenizer.cfg
    codes = torch.randint(0, cfg.codebook_size, (batch, n, cfg.num_quantizers), generator=generator)
    mask = torch.ones(batch, n)
    if n > 1:
        mask[0, -1] = 0.0
    feeds = {"codes": codes, "code_mask": mask}
    for name, t in tokenizer.init_decode_state(batch).tensors().items():
        if t.is_floating_point():
            feeds[f"state_{name}"] = torch.randn(t.shape, generator=generator) * 0.5
        else:
            feeds[f"state_{name}"] = torch.randint(0, tokenizer.lookahead + 1, t.shape, generator=generator)
    return feeds


@torch.no_grad()
def decoder_reference(tokenizer: MotionTokenizer, feeds: dict) -> list[np.ndarray]:
    """PyTorch frames, frame counts and new state for the decoder-graph feeds (RVQ decode, zero latents where the
    mask is 0, :meth:`MotionDecoder.step` row by row, de-normalisation, zero padding past each row's frames)."""
    z = tokenizer.quantizer.decode(feeds["codes"]) * feeds["code_mask"].unsqueeze(-1)
    b, n = z.shape[:2]
    names = list(tokenizer.init_decode_state(1).tensors())
    frames = torch.zeros(b, n * tokenizer.group, tokenizer.dim)
    lengths = torch.zeros(b, dtype=torch.long)
    new: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    for i in range(b):
        state = DecoderState(**{k: feeds[f"state_{k}"][i : i + 1] for k in names})
        y, st = tokenizer.decoder.step(z[i : i + 1], state)
        frames[i, : y.shape[1]] = tokenizer.to_frames(y)[0]
        lengths[i] = y.shape[1]
        for k, t in st.tensors().items():
            new[k].append(t)
    return [frames.numpy(), lengths.numpy(), *(torch.cat(new[k]).numpy() for k in names)]


def decoder_parity(
    tokenizer: MotionTokenizer,
    run: Runner,
    precision: str,
    batches: Sequence[int] = (1, 3),
    tokens: Sequence[int] = (1, 2),
    seed: int = 4321,
) -> dict[str, Any]:
    """Compare the decoder graph with PyTorch for each (batch, tokens per call); returns errors and a verdict."""
    tokenizer = tokenizer.eval()
    g = torch.Generator().manual_seed(seed)
    names = ["frames", "frame_lengths", *(f"new_state_{s}" for s in tokenizer.init_decode_state(1).tensors())]
    per_batch = []
    for b in batches:
        for n in tokens:
            feeds = decoder_inputs(tokenizer, b, n, g)
            ref = decoder_reference(tokenizer, feeds)
            got = run({k: v.numpy() for k, v in feeds.items()})
            for name, x, r in zip(names, got, ref, strict=True):
                cmp = _compare(name, x, r, precision)
                cmp.update(batch=b, tokens=n)
                per_batch.append(cmp)
    return _summary(per_batch, precision)


def _summary(rows: list[dict[str, Any]], precision: str) -> dict[str, Any]:
    atol, rtol = TOLERANCE[precision]
    out: dict[str, Any] = {
        "precision": precision,
        "tolerance": f"max|onnx - torch| <= {atol:g} + {rtol:g} * max|torch| per output (torch fp32 reference)",
        "max_abs_err": max(r["max_abs_err"] for r in rows),
        "passed": all(r["passed"] for r in rows),
        "checks": rows,
    }
    agree = [r["code_agreement"] for r in rows if "code_agreement" in r]
    if agree:
        out["code_agreement"] = min(agree)
    return out


def greedy_code_agreement(
    connector: MotionConnector, run: Runner, windows: int = 128, batch: int = 8, seed: int = 99
) -> dict[str, Any]:
    """Fraction of greedy codes of ``run`` equal to PyTorch's on ``windows`` fresh random windows (all full, a mix
    of first and continuing windows). Used for the int8 connector (goal >= 0.99).

    ``windows`` x W/G x N_q codes are compared (128 windows at W=10, G=5, N_q=6: 1536 codes, so a fraction near 0.99
    is known to about +-0.25%). With random weights the level logits are nearly tied, so this is a pessimistic
    proxy for a trained connector."""
    g = torch.Generator().manual_seed(seed)
    same = total = 0
    done = 0
    while done < windows:
        b = min(batch, windows - done)
        feeds = connector_inputs(connector, b, g, partial=False)
        _, ref_codes = connector_reference(connector, feeds)
        codes = run({k: v.numpy() for k, v in feeds.items()})[1]
        same += int((codes == ref_codes).sum())
        total += ref_codes.size
        done += b
    return {"windows": windows, "codes": total, "unchanged": same, "fraction_unchanged": same / total}
