"""A module folder: ``config.json`` (the component's config dataclass) + ``model.safetensors`` (its weights).

The one format for the motion tokenizer and the connector, wherever they are written: a motion directory's
``tokenizer/`` and ``connector/`` (:mod:`a2llm_rt.engine.builders`), a tokenizer training checkpoint
(``training/train_tokenizer.py``) and a curriculum stage's ``connector/`` (``training/train_a2llm.py``).

- :func:`save_module` writes both files atomically; :func:`load_module` builds the model from the config, checks
  that every weight is present with its shape and nothing is extra, and returns it in eval mode.
- :func:`resolve_checkpoint` also takes a training output folder: its ``latest.json`` (``{"step", "path"}``, written
  by :func:`write_latest`) names the checkpoint folder, relative to it.
- For compatibility, folders written before the names were unified are read too: curriculum stages kept the
  connector as ``connector.json`` + ``connector.safetensors`` beside the LoRA (:data:`LEGACY_FILES`).

Nothing in a module folder is executed or unpickled (safetensors + JSON only). Errors are
:class:`~a2llm_rt.errors.InputError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write, atomic_write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LATEST_FILE = "latest.json"
LEGACY_FILES = (("connector.json", "connector.safetensors"),)
"""(config, weights) names read for compatibility: curriculum stage folders before the names were unified."""


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (what safetensors stores)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_module(folder: str | Path, model: nn.Module) -> Path:
    """Write ``folder/config.json`` (``model.cfg``) and ``folder/model.safetensors``, each atomically."""
    from safetensors.torch import save as st_save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.cfg.to_file(folder / CONFIG_FILE)
    data = st_save(cpu_state(model))
    with atomic_write(folder / WEIGHTS_FILE, "wb") as f:
        f.write(data)
    return folder


def module_files(folder: str | Path) -> tuple[Path, Path] | None:
    """(config, weights) of the first name pair present in ``folder`` (the current names first), else None."""
    folder = Path(folder)
    for cfg_name, weights_name in ((CONFIG_FILE, WEIGHTS_FILE), *LEGACY_FILES):
        if (folder / weights_name).is_file():
            return folder / cfg_name, folder / weights_name
    return None


def write_latest(out: str | Path, checkpoint: str | Path, step: int) -> None:
    """Point ``out/latest.json`` at ``checkpoint`` (a folder inside ``out``), atomically."""
    out = Path(out)
    atomic_write_json(out / LATEST_FILE, {"step": int(step), "path": str(Path(checkpoint).relative_to(out))})


def read_latest(out: str | Path) -> tuple[Path, int] | None:
    """(checkpoint folder, step) named by ``out/latest.json``; None without one; :class:`InputError` when malformed
    or when it names a path outside ``out``."""
    out = Path(out)
    latest = out / LATEST_FILE
    if not latest.is_file():
        return None
    try:
        doc: Any = json.loads(latest.read_text(encoding="utf-8"))
        rel, step = Path(doc["path"]), int(doc.get("step", 0))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"malformed {LATEST_FILE}: {e}", latest) from None
    if rel.is_absolute() or ".." in rel.parts:
        raise InputError(f"{LATEST_FILE} must name a folder inside its own folder, got {str(rel)!r}", latest)
    return out / rel, step


def resolve_checkpoint(path: str | Path, what: str = "checkpoint") -> Path:
    """A module folder: ``path`` when it holds weights, else the folder its ``latest.json`` names."""
    path = Path(path)
    if module_files(path) is not None:
        return path
    latest = read_latest(path)
    if latest is None:
        raise InputError(f"not a {what} (no {WEIGHTS_FILE}, no {LATEST_FILE})", path)
    if module_files(latest[0]) is None:
        raise InputError(f"{LATEST_FILE} names a checkpoint that does not exist", path / LATEST_FILE)
    return latest[0]


def load_module(
    folder: str | Path, cfg_cls, model_cls, what: str = "model", device: torch.device | str = "cpu"
) -> nn.Module:
    """``model_cls(cfg_cls.from_file(config))`` with the folder's weights, on ``device``, in eval mode.

    ``folder`` may also be a training output folder (see :func:`resolve_checkpoint`). Refused: a missing file, an
    unreadable safetensors file, weights missing, mis-shaped or extra for the config.
    """
    from safetensors.torch import load as st_load

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what}: folder not found", folder)
    folder = resolve_checkpoint(folder, what) if (folder / LATEST_FILE).is_file() else folder
    files = module_files(folder)
    if files is None:
        raise InputError(f"{what}: missing {WEIGHTS_FILE}", folder)
    cfg_file, weights_file = files
    if not cfg_file.is_file():
        raise InputError(f"{what}: missing {cfg_file.name}", folder)
    model = model_cls(cfg_cls.from_file(cfg_file))
    try:
        state = st_load(weights_file.read_bytes())
    except Exception as e:  # safetensors raises its own error types on damaged headers
        raise InputError(f"{what}: unreadable safetensors: {e}", weights_file) from None
    want = model.state_dict()
    bad = [k for k in want if k not in state or tuple(state[k].shape) != tuple(want[k].shape)]
    extra = [k for k in state if k not in want]
    if bad or extra:
        raise InputError(
            f"{what}: weights do not match its config (missing/mis-shaped {bad[:5]}, extra {extra[:5]})", weights_file
        )
    model.load_state_dict(state)
    return model.to(device).eval()
