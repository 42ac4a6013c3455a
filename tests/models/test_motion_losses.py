"""Eq. 7 losses: weights, switching the vertex terms off, any face model callable, FLAME and ARKit face models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2llm_rt.face.regions import FaceRegions
from a2llm_rt.models.motion_losses import ArkitVertexFn, MotionLoss, MotionLossConfig, build_face_model


def _regions() -> FaceRegions:
    return FaceRegions(
        lips=[0, 1], face=[0, 1, 2, 3], upper_face=[3], mouth_upper=[0], mouth_lower=[1], lip_corners=[0, 1]
    )


def _linear_face(dim: int = 52, v: int = 4) -> ArkitVertexFn:
    g = torch.Generator().manual_seed(0)
    return ArkitVertexFn(np.zeros((v, 3), np.float32), torch.randn(dim, v, 3, generator=g).numpy() * 1e-3)


def test_paper_weights_are_the_defaults():
    c = MotionLossConfig()
    assert (c.param_weight, c.lips_weight, c.face_weight, c.vel_weight, c.acc_weight) == (1, 1e5, 1e5, 1e2, 1e2)
    with pytest.raises(ValueError):
        MotionLossConfig(param_loss="huber")


def test_total_is_the_weighted_sum():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 10, 52), torch.rand(2, 10, 52)
    commit = torch.tensor(0.3)
    fn, reg = _linear_face(), _regions()
    t = MotionLoss(MotionLossConfig(), fn, reg)(pred, target, commit)
    expected = t["param"] + 1e5 * (t["lips"] + t["face"]) + 1e2 * (t["vel"] + t["acc"]) + commit
    torch.testing.assert_close(t["total"], expected)
    cfg = MotionLossConfig(param_weight=0, lips_weight=2.0, face_weight=0, vel_weight=0, acc_weight=0, commit_weight=0)
    t2 = MotionLoss(cfg, fn, reg)(pred, target, commit)
    torch.testing.assert_close(t2["total"], 2.0 * t["lips"])
    # param term by hand: MSE (eq. 8)
    torch.testing.assert_close(t["param"], ((pred - target) ** 2).mean())
    # the parameter-space option (ours): MSE of the frame differences
    tp = MotionLoss(MotionLossConfig(vel_acc_space="params"), fn, reg)(pred, target)
    vel = (pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])
    torch.testing.assert_close(tp["vel"], (vel**2).mean())


def test_vel_acc_on_the_full_vertex_sequence_by_default():
    """Eq. 10: squared L2 of the vertex velocity / acceleration errors over *all* vertices, not only the regions."""
    torch.manual_seed(1)
    fn, reg = _linear_face(v=6), _regions()  # vertices 4 and 5 are in no region
    pred, target = torch.rand(2, 7, 52), torch.rand(2, 7, 52)
    t = MotionLoss(MotionLossConfig(), fn, reg)(pred, target)
    vp, vt = fn(pred), fn(target)  # [B, T, V, 3]
    dp, dt = vp.diff(dim=1), vt.diff(dim=1)
    torch.testing.assert_close(t["vel"], (dp - dt).pow(2).sum(-1).mean())
    torch.testing.assert_close(t["acc"], (dp.diff(dim=1) - dt.diff(dim=1)).pow(2).sum(-1).mean())
    # a vertex outside every region still counts in L_vel (the full sequence), never in L_lips / L_face
    only_v5 = ArkitVertexFn(np.zeros((6, 3), np.float32), np.zeros((52, 6, 3), np.float32))
    only_v5.deltas[:, 5, 1] = 1e-3
    t5 = MotionLoss(MotionLossConfig(), only_v5, reg)(pred, target)
    assert t5["vel"].item() > 0 and t5["lips"].item() == 0 and t5["face"].item() == 0


def test_vertex_terms_off_without_face_model_or_when_disabled():
    pred, target = torch.rand(1, 6, 52), torch.rand(1, 6, 52)
    with pytest.raises(ValueError, match="eq. 10"):
        MotionLoss(MotionLossConfig())  # the paper's L_vel / L_acc need a face model
    t = MotionLoss(MotionLossConfig(vel_acc_space="params"))(pred, target)
    assert "lips" not in t and "face" not in t and "param" in t
    t = MotionLoss(MotionLossConfig(vertex_terms=False, vel_acc_space="params"), _linear_face(), _regions())(
        pred, target
    )
    assert "lips" not in t
    assert MotionLoss(MotionLossConfig(), _linear_face(), _regions())(target, target)["total"].item() == 0


def test_vertex_terms_on_vertices_and_gradient():
    fn, reg = _linear_face(), _regions()
    cfg = MotionLossConfig(vel_acc_space="vertices")
    pred = torch.rand(1, 6, 52, requires_grad=True)
    t = MotionLoss(cfg, fn, reg)(pred, torch.rand(1, 6, 52))
    t["total"].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        MotionLoss(cfg)  # vertex-space velocity needs a face model


def test_flame_face_model(tmp_path):
    from tests.face.synthetic_flame import synthetic_flame_npz

    fn, reg = build_face_model("flame58", synthetic_flame_npz(tmp_path))
    pred = torch.zeros(1, 3, 58)
    target = torch.zeros(1, 3, 58)
    target[..., 50] = 0.2  # jaw open
    t = MotionLoss(MotionLossConfig(), fn, reg)(pred, target)
    assert t["lips"].item() > 0 and torch.isfinite(t["total"])
    # canonical zero pose (eq. 9/10): a head rotation in the prediction costs only L_param, no vertex term
    turned = target.clone()
    turned[..., 53:56] = torch.tensor([0.1, 0.4, -0.2])
    turned[:, 1, 54] = 0.7  # moving too: no L_vel / L_acc either
    t = MotionLoss(MotionLossConfig(), fn, reg)(turned, target)
    assert t["param"].item() > 0
    assert t["lips"].item() == t["face"].item() == t["vel"].item() == t["acc"].item() == 0.0
    assert fn.regions is reg or fn.regions.lips.tolist() == reg.lips.tolist()


def test_arkit_mesh_face_model(arkit_mesh_dir):
    fn, reg = build_face_model("arkit52", arkit_mesh_dir)
    w = torch.zeros(2, 52)
    w[1, 17] = 1.0  # jawOpen
    from a2llm_rt.face.arkit_mesh import ArkitMesh

    ref = ArkitMesh.load(arkit_mesh_dir).vertices(w)
    torch.testing.assert_close(fn(w), ref, atol=1e-6, rtol=1e-5)
    t = MotionLoss(MotionLossConfig(), fn, reg)(w[None, :1].repeat(1, 3, 1), w[None, 1:].repeat(1, 3, 1))
    assert t["lips"].item() > 0
