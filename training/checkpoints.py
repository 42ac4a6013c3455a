"""Training checkpoint helpers shared by the tokenizer and the curriculum trainers.

- optimizer state: the tensors in ``optimizer.safetensors`` (keys ``"<param index>.<name>"``), the param groups in
  the caller's ``trainer_state.json`` (:func:`save_optimizer` returns them for it; :func:`load_optimizer` takes them);
- the learning-rate schedule: linear warm-up, then cosine decay to ``min_ratio`` of the base rate, as a
  ``torch.optim.lr_scheduler.LambdaLR`` (:func:`warmup_cosine`);
- rotation of ``step-N`` checkpoint folders (:func:`rotate`).

The module folders themselves (``config.json`` + ``model.safetensors``, ``latest.json``) are
:mod:`a2llm_rt.utils.module_folder`'s, shared with the runtime that loads them.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write

OPTIMIZER_FILE = "optimizer.safetensors"


def save_optimizer(folder: str | Path, opt: torch.optim.Optimizer) -> list[dict]:
    """Write the optimizer's tensors to ``folder/optimizer.safetensors`` (atomically); returns its param groups
    (JSON-ready) for the caller's trainer state."""
    from safetensors.torch import save as st_save

    osd = opt.state_dict()
    tensors = {
        f"{idx}.{name}": torch.as_tensor(v).detach().cpu().contiguous()
        for idx, st in osd["state"].items()
        for name, v in st.items()
    }
    with atomic_write(Path(folder) / OPTIMIZER_FILE, "wb") as f:
        f.write(st_save(tensors))
    return osd["param_groups"]


def load_optimizer(folder: str | Path, opt: torch.optim.Optimizer, param_groups: list[dict]) -> None:
    """Restore ``opt`` from ``folder/optimizer.safetensors`` and the saved ``param_groups``."""
    from safetensors.torch import load as st_load

    path = Path(folder) / OPTIMIZER_FILE
    try:
        tensors = st_load(path.read_bytes())
    except Exception as e:  # a missing file, or safetensors' own error types on damaged headers
        raise InputError(f"unreadable optimizer state: {e}", path) from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate factor of optimizer step ``step`` (0-based): ``(step + 1) / warmup_steps`` during the warm-up,
    then ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with ``t`` going 0 -> 1 over the remaining steps
    (held at ``min_ratio`` after ``total_steps``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def warmup_cosine(
    opt: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float,
    base_lrs: list[float],
    start_step: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` giving param group ``i`` the rate ``base_lrs[i] * warmup_cosine_factor(step)``.

    Created at ``start_step`` (0, or the step a resumed run continues from): the groups' rates are those of that
    step at once; call ``.step()`` after each optimizer step. ``base_lrs`` are explicit so that a resumed optimizer's
    decayed rates never become the base.
    """
    if len(base_lrs) != len(opt.param_groups):
        raise ValueError(f"{len(base_lrs)} base rates for {len(opt.param_groups)} param groups")
    for g, lr in zip(opt.param_groups, base_lrs, strict=True):
        g["initial_lr"] = float(lr)

    def factor(epoch: int) -> float:
        return warmup_cosine_factor(start_step + epoch, warmup_steps, total_steps, min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def rotate(root: str | Path, keep: int, pattern: str = "step-*") -> list[Path]:
    """Delete all but the ``keep`` last (by name: zero-padded steps sort by step) folders matching ``pattern`` in
    ``root``; returns the deleted ones."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    old = sorted(p for p in Path(root).glob(pattern) if p.is_dir())[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old
