"""LoRA adapters on the backbone's Qwen2 LLM through ``peft`` (the A2-LLM paper's configuration).

Paper: rank 64, alpha 32, dropout 0.05 on ``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj``.

Typical use (training curriculum)::

    model = apply_lora(backbone_llm, LoraSettings())   # freezes the base, adds trainable adapters
    ...train...
    save_lora(model, "ckpt/lora")                       # adapter_config.json + adapter_model.safetensors
    reset_lora(model)                                   # stage 2: a fresh adapter on the same base
    model = load_lora(fresh_base, "ckpt/lora")          # inference (frozen) or is_trainable=True
    merged = merge_lora(model)                          # plain module with W + (alpha/r) B A folded in

``apply_lora`` accepts any ``nn.Module`` (a ``Qwen2ForCausalLM`` or the project's backbone that contains one);
``module_prefix`` restricts the adapters to modules under one attribute path (e.g. ``"model"`` for the LLM only, so
that an audio encoder with the same projection names is left alone).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import nn

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_directory

PAPER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass
class LoraSettings(Config):
    """LoRA hyper-parameters (defaults: the paper). Named ``LoraSettings`` to stay apart from ``peft.LoraConfig``."""

    r: int = 64
    """Rank of the update B A."""
    alpha: int = 32
    """Scale numerator: the update is multiplied by alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapter input (training only)."""
    target_modules: tuple[str, ...] = PAPER_TARGETS
    """Names (last attribute) of the Linear layers that get an adapter."""
    module_prefix: str | None = None
    """Only adapt modules whose qualified name starts with this prefix (None: anywhere in the model)."""
    adapter_name: str = "default"
    """peft adapter name."""

    def validate(self) -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ValueError(f"r and alpha must be positive, got r={self.r}, alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("target_modules must not be empty")

    def to_peft(self):
        """The equivalent ``peft.LoraConfig``."""
        from peft import LoraConfig

        targets: list[str] | str = list(self.target_modules)
        if self.module_prefix:
            alt = "|".join(self.target_modules)
            targets = rf"^{re.escape(self.module_prefix)}\..*\.({alt})$"
        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets, bias="none"
        )


def apply_lora(model: nn.Module, settings: LoraSettings | None = None):
    """Wrap ``model`` in a ``peft.PeftModel`` with fresh adapters; only the adapter parameters stay trainable.

    The base weights are shared with ``model`` (not copied). Returns the ``PeftModel``.
    """
    from peft import get_peft_model

    settings = settings or LoraSettings()
    where = f"{settings.target_modules} (prefix {settings.module_prefix!r})"
    try:
        peft_model = get_peft_model(model, settings.to_peft(), adapter_name=settings.adapter_name)
    except ValueError as e:
        if "not found" in str(e):
            raise ValueError(f"no module matched the LoRA targets {where}") from e
        raise
    if not lora_parameters(peft_model):
        raise ValueError(f"no module matched the LoRA targets {where}")
    return peft_model


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter parameters (``lora_A`` / ``lora_B``) of a peft-wrapped model by name."""
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters with ``requires_grad`` (after :func:`apply_lora`: exactly the adapters)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_lora(model: nn.Module, directory: str | Path) -> Path:
    """Save the adapter (``adapter_config.json`` + ``adapter_model.safetensors``) into ``directory``, atomically.

    peft writes into a temporary sibling folder that then replaces ``directory``, so a crash never leaves a
    half-written adapter.
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
    return directory


def load_lora(model: nn.Module, directory: str | Path, is_trainable: bool = False, adapter_name: str = "default"):
    """Attach a saved adapter to the base ``model`` (same architecture it was trained on) -> ``peft.PeftModel``.

    Raises :class:`InputError` naming the directory when it holds no adapter or the adapter does not fit the model.
    """
    from peft import PeftModel

    directory = Path(directory)
    missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (directory / f).is_file()]
    if missing:
        raise InputError(f"not a LoRA adapter directory: missing {', '.join(missing)}", directory)
    try:
        return PeftModel.from_pretrained(model, str(directory), adapter_name=adapter_name, is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise InputError(f"adapter does not fit the model: {e}", directory) from e


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and return the plain base module (the peft wrapper is removed)."""
    return model.merge_and_unload()


@torch.no_grad()
def reset_lora(model: nn.Module, adapter_name: str = "default", seed: int | None = None) -> int:
    """Re-initialise every adapter in place (A: Kaiming-uniform, B: zeros, so the model equals its base again).

    Used between curriculum stages that start from a fresh adapter. ``seed`` makes the new A matrices
    reproducible. Returns the number of adapted layers.
    """
    from peft.tuners.lora import LoraLayer

    if seed is not None:
        torch.manual_seed(seed)
    count = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            module.reset_lora_parameters(adapter_name, init_lora_weights=True)
            count += 1
    if count == 0:
        raise ValueError(f"no LoRA adapter named {adapter_name!r} in the model")
    return count
