"""Reconstruction losses of the motion tokenizer: the paper's eq. 7.

``L = w_param L_param + w_lips L_lips + w_face L_face + w_vel L_vel + w_acc L_acc (+ commitment)`` with the paper's
weights 1, 1e5, 1e5, 1e2, 1e2 as defaults.

- ``L_param``: MSE (or L1) between predicted and reference frames (FLAME58 parameters or ARKit52 weights).
- ``L_lips`` / ``L_face``: mean squared vertex distance over the lip / face region, through any face model given as a
  callable ``frames [..., D] -> vertices [..., V, 3]`` (the FLAME layer in FLAME space, the ARKit mesh in ARKit
  space) and its :class:`~a2llm_rt.face.regions.FaceRegions`. Switched off when no face model is given or
  ``vertex_terms`` is False. With vertices in metres, a 1 mm error gives 1e-6, hence the 1e5 weight.
- ``L_vel`` / ``L_acc``: MSE between the first / second temporal differences of prediction and reference, on the
  parameters (default; always available) or on the face vertices (``vel_acc_space: vertices``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.face.regions import FaceRegions

VertexFn = Callable[[torch.Tensor], torch.Tensor]  # frames [..., D] -> vertices [..., V, 3]


@dataclass
class MotionLossConfig(Config):
    """Weights of eq. 7 (paper defaults) and switches."""

    param_weight: float = 1.0
    """Weight of L_param."""
    param_loss: str = "mse"
    """``mse`` or ``l1`` for L_param."""
    lips_weight: float = 1e5
    """Weight of L_lips (vertex MSE over the lip region)."""
    face_weight: float = 1e5
    """Weight of L_face (vertex MSE over the face region)."""
    vel_weight: float = 1e2
    """Weight of L_vel."""
    acc_weight: float = 1e2
    """Weight of L_acc."""
    vertex_terms: bool = True
    """Use L_lips and L_face when a face model is available."""
    vel_acc_space: str = "params"
    """``params`` or ``vertices``: where L_vel and L_acc are measured."""
    commit_weight: float = 1.0
    """Weight of the quantizer's commitment loss (which already includes gamma)."""

    def validate(self) -> None:
        if self.param_loss not in ("mse", "l1"):
            raise ValueError(f"param_loss must be 'mse' or 'l1', got {self.param_loss!r}")
        if self.vel_acc_space not in ("params", "vertices"):
            raise ValueError(f"vel_acc_space must be 'params' or 'vertices', got {self.vel_acc_space!r}")
        for k in ("param_weight", "lips_weight", "face_weight", "vel_weight", "acc_weight", "commit_weight"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0")


class MotionLoss(nn.Module):
    """Eq. 7 for predicted and reference frames ``[B, T, D]``.

    Args:
        cfg: weights and switches.
        vertex_fn: face model ``frames [..., D] -> vertices [..., V, 3]`` (None: no vertex terms).
        regions: the face model's regions (needed with ``vertex_fn``).
    """

    def __init__(self, cfg: MotionLossConfig, vertex_fn: VertexFn | None = None, regions: FaceRegions | None = None):
        super().__init__()
        if vertex_fn is not None and regions is None:
            raise ValueError("a vertex_fn needs its FaceRegions")
        if cfg.vel_acc_space == "vertices" and vertex_fn is None:
            raise ValueError("vel_acc_space 'vertices' needs a face model")
        self.cfg = cfg
        self.vertex_fn = vertex_fn
        if isinstance(vertex_fn, nn.Module):
            self.face_model = vertex_fn  # registered so .to(device) moves it
        self.use_vertices = vertex_fn is not None and cfg.vertex_terms
        if regions is not None:
            self.register_buffer("lips_idx", torch.as_tensor(regions.lips, dtype=torch.long), persistent=False)
            self.register_buffer("face_idx", torch.as_tensor(regions.face, dtype=torch.long), persistent=False)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, commit: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss terms (unweighted) and ``total`` (weighted sum), all scalars. ``pred``/``target``: ``[B, T, D]``."""
        c = self.cfg
        if pred.shape != target.shape:
            raise InputError(f"prediction {list(pred.shape)} and reference {list(target.shape)} differ in shape")
        terms: dict[str, torch.Tensor] = {}
        if c.param_loss == "mse":
            terms["param"] = F.mse_loss(pred, target)
        else:
            terms["param"] = F.l1_loss(pred, target)
        total = c.param_weight * terms["param"]
        vp = vt = None
        need_vertices = self.use_vertices or c.vel_acc_space == "vertices"
        if need_vertices and self.vertex_fn is not None:
            vp, vt = self.vertex_fn(pred), self.vertex_fn(target)  # [B, T, V, 3]
        if self.use_vertices and vp is not None and vt is not None:
            terms["lips"] = _vertex_mse(vp, vt, self.lips_idx)
            terms["face"] = _vertex_mse(vp, vt, self.face_idx)
            total = total + c.lips_weight * terms["lips"] + c.face_weight * terms["face"]
        a, b = (pred, target) if c.vel_acc_space == "params" else (vp, vt)
        assert a is not None and b is not None
        if a.shape[1] >= 2:
            va, vb = a[:, 1:] - a[:, :-1], b[:, 1:] - b[:, :-1]
            terms["vel"] = F.mse_loss(va, vb)
            total = total + c.vel_weight * terms["vel"]
            if a.shape[1] >= 3:
                terms["acc"] = F.mse_loss(va[:, 1:] - va[:, :-1], vb[:, 1:] - vb[:, :-1])
                total = total + c.acc_weight * terms["acc"]
        if commit is not None:
            terms["commit"] = commit
            total = total + c.commit_weight * commit
        terms["total"] = total
        return terms


def _vertex_mse(vp: torch.Tensor, vt: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mean over frames and region vertices of the squared L2 distance. ``vp``/``vt``: ``[..., V, 3]``."""
    d = vp.index_select(-2, idx) - vt.index_select(-2, idx)
    return d.pow(2).sum(-1).mean()


class ArkitVertexFn(nn.Module):
    """ARKit52 weights ``[..., 52]`` -> vertices ``[..., V, 3]`` of an :class:`ArkitMesh` (torch buffers)."""

    def __init__(self, neutral: np.ndarray, deltas: np.ndarray):
        super().__init__()
        self.register_buffer("neutral", torch.as_tensor(neutral, dtype=torch.float32), persistent=False)
        self.register_buffer("deltas", torch.as_tensor(deltas, dtype=torch.float32), persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        v = w.shape[:-1]
        out = w.reshape(-1, w.shape[-1]) @ self.deltas.reshape(self.deltas.shape[0], -1)  # [N, V*3]
        return (out.reshape(*v, -1, 3)) + self.neutral


def build_face_model(layout: str, path: str | Path) -> tuple[nn.Module, FaceRegions]:
    """The face model of a layout: an ARKit mesh folder for ``arkit52``, a converted FLAME ``.npz`` for ``flame58``."""
    path = Path(path)
    if layout == "arkit52":
        from a2llm_rt.face.arkit_regions import load_arkit_regions

        mesh, regions = load_arkit_regions(path)
        return ArkitVertexFn(mesh.neutral, mesh.deltas), regions
    if layout == "flame58":
        from a2llm_rt.face.flame import FlameModel

        model = FlameModel.from_npz(path)
        return model, model.regions
    raise InputError(f"no face model for layout {layout!r} (vertex terms need arkit52 or flame58)", path)
