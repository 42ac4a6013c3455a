"""Reconstruction losses of the motion tokenizer: the paper's eq. 7-10 (App. B).

``L_rec = w_param L_param + w_lips L_lips + w_face L_face + w_vel L_vel + w_acc L_acc`` (eq. 7) with the paper's
weights 1, 1e5, 1e5, 1e2, 1e2 as defaults; the tokenizer adds the quantizer's loss (eq. 4, see
:mod:`a2llm_rt.models.motion_tokenizer` for how EMA codebooks stand in for its codebook term).

- eq. 8 ``L_param``: MSE between predicted and reference frames (FLAME58 parameters or ARKit52 weights); ``l1`` is
  our option.
- eq. 9 ``L_lips`` / ``L_face``: mean over frames and region vertices of the squared L2 vertex distance over the lip /
  face region, "in a canonical zero-pose space": through any face model given as a callable
  ``frames [..., D] -> vertices [..., V, 3]`` and its :class:`~a2llm_rt.face.regions.FaceRegions`. For FLAME,
  :func:`build_face_model` returns the FLAME layer with the global rotation zeroed (:class:`ZeroPoseFlame`); ARKit52
  has no head pose. Switched off when no face model is given or ``vertex_terms`` is False. With vertices in metres, a
  1 mm error gives 1e-6, hence the 1e5 weight.
- eq. 10 ``L_vel`` / ``L_acc``: the same squared L2 distance between the first / second temporal differences of the
  *full* vertex sequences (every vertex of the zero-pose mesh; ``vel_acc_space: vertices``, the default, which needs
  a face model). ``vel_acc_space: params`` (ours, not the paper's) takes the MSE of the differences of the parameters
  instead, for training without a face model.
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
from a2llm_rt.face.layouts import FLAME_GLOBAL
from a2llm_rt.face.regions import FaceRegions

VertexFn = Callable[[torch.Tensor], torch.Tensor]  # frames [..., D] -> vertices [..., V, 3]


@dataclass
class MotionLossConfig(Config):
    """Weights of eq. 7 (paper defaults) and switches (paper defaults; the alternatives are ours)."""

    param_weight: float = 1.0
    """Weight of L_param."""
    param_loss: str = "mse"
    """``mse`` (eq. 8) or ``l1`` (ours) for L_param."""
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
    vel_acc_space: str = "vertices"
    """Where L_vel and L_acc are measured: ``vertices`` (eq. 10: the full zero-pose vertex sequence; needs a face
    model) or ``params`` (ours: the FLAME58 / ARKit52 frames, for training without a face model)."""
    commit_weight: float = 1.0
    """lambda_vq (App. B: 1.0): weight of the quantizer's loss, its commitment term ``gamma ||z - sg[q]||^2`` (gamma
    included; EMA codebooks replace eq. 4's codebook term, see :mod:`a2llm_rt.models.motion_tokenizer`)."""

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
            raise ValueError(
                "L_vel / L_acc are measured on the vertex sequence (eq. 10, vel_acc_space: vertices) and need a face "
                "model (--face-model / face_model: an ARKit mesh folder or a FLAME .npz); set loss.vel_acc_space: "
                "params to train without one (not the paper's loss)"
            )
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
        # params: MSE of the differences; vertices (eq. 10): squared L2 per vertex, mean over frames and all vertices
        dist = F.mse_loss if c.vel_acc_space == "params" else _all_vertex_mse
        if a.shape[1] >= 2:
            va, vb = a[:, 1:] - a[:, :-1], b[:, 1:] - b[:, :-1]
            terms["vel"] = dist(va, vb)
            total = total + c.vel_weight * terms["vel"]
            if a.shape[1] >= 3:
                terms["acc"] = dist(va[:, 1:] - va[:, :-1], vb[:, 1:] - vb[:, :-1])
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


def _all_vertex_mse(vp: torch.Tensor, vt: torch.Tensor) -> torch.Tensor:
    """Mean over frames and all vertices of the squared L2 distance. ``vp``/``vt``: ``[..., V, 3]``."""
    return (vp - vt).pow(2).sum(-1).mean()


class ZeroPoseFlame(nn.Module):
    """FLAME58 frames ``[..., 58]`` -> vertices ``[..., V, 3]`` in canonical zero pose: the global rotation
    (``frames[..., 53:56]``) is set to 0 before the FLAME layer (App. B eq. 9 / App. C); FLAME58 has no translation."""

    def __init__(self, flame: nn.Module):
        super().__init__()
        self.flame = flame

    @property
    def regions(self) -> FaceRegions:
        return self.flame.regions

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(frames.shape[-1], dtype=frames.dtype, device=frames.device)
        keep[FLAME_GLOBAL] = 0.0
        return self.flame(frames * keep)


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
    """The face model of a layout: an ARKit mesh folder for ``arkit52``, a converted FLAME ``.npz`` for ``flame58``
    (through :class:`ZeroPoseFlame`: vertices in canonical zero pose)."""
    path = Path(path)
    if layout == "arkit52":
        from a2llm_rt.face.arkit_regions import load_arkit_regions

        mesh, regions = load_arkit_regions(path)
        return ArkitVertexFn(mesh.neutral, mesh.deltas), regions
    if layout == "flame58":
        from a2llm_rt.face.flame import FlameModel

        model = FlameModel.from_npz(path)
        return ZeroPoseFlame(model), model.regions
    raise InputError(f"no face model for layout {layout!r} (vertex terms need arkit52 or flame58)", path)
