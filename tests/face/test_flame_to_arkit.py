"""FLAME58 -> ARKIT52 / LIVELINK61: rotations, analytic curves, the learned map, and its fitting CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.face.flame_to_arkit import (
    JAW_OPEN_MAX_RAD,
    LEARNED_CURVES,
    ArkitMap,
    axis_angle_to_matrix,
    flame_global_to_head,
    flame_to_arkit,
    flame_to_livelink,
    head_to_flame_global,
    matrix_to_axis_angle,
    matrix_to_ypr,
    ypr_to_matrix,
)
from a2llm_rt.face.layouts import ARKIT_INDEX, LIVELINK_INDEX
from a2llm_rt.face_tools import fit_arkit_map as fam


def _frame(**parts) -> np.ndarray:
    f = np.zeros(58, dtype=np.float32)
    if "expr" in parts:
        f[:50] = parts["expr"]
    if "jaw" in parts:
        f[50:53] = parts["jaw"]
    if "glob" in parts:
        f[53:56] = parts["glob"]
    if "eyelids" in parts:
        f[56:58] = parts["eyelids"]
    return f


# --- rotations ------------------------------------------------------------------------------------------------------
def test_axis_angle_matrix_round_trip_and_orthonormal():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(200, 3)) * rng.uniform(0, 3.0, size=(200, 1)) / np.sqrt(3)
    aa = aa[np.linalg.norm(aa, axis=1) < 3.0]
    r = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(r), aa, atol=1e-9)
    # right-hand rule: +90 deg about z takes x to y
    np.testing.assert_allclose(axis_angle_to_matrix(np.array([0, 0, np.pi / 2])) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_ypr_round_trip():
    rng = np.random.default_rng(1)
    ypr = np.stack([rng.uniform(-3, 3, 100), rng.uniform(-1.5, 1.5, 100), rng.uniform(-3, 3, 100)], axis=1)
    np.testing.assert_allclose(matrix_to_ypr(ypr_to_matrix(ypr)), ypr, atol=1e-9)


@pytest.mark.parametrize("angle", [-0.6, -0.1, 0.25, 0.9])
def test_pure_head_rotations_round_trip(angle):
    # pure yaw (about FLAME y): +angle turns the face toward +x = the subject's left -> HeadYaw = -angle
    np.testing.assert_allclose(flame_global_to_head(np.array([0.0, angle, 0.0])), [-angle, 0, 0], atol=1e-12)
    # pure pitch (about FLAME x): +angle tips the face down -> HeadPitch = -angle (positive = looking up)
    np.testing.assert_allclose(flame_global_to_head(np.array([angle, 0.0, 0.0])), [0, -angle, 0], atol=1e-12)
    # pure roll (about FLAME z): +angle moves the head top toward -x = the subject's right -> HeadRoll = +angle
    np.testing.assert_allclose(flame_global_to_head(np.array([0.0, 0.0, angle])), [0, 0, angle], atol=1e-12)
    for head in ([angle, 0, 0], [0, angle, 0], [0, 0, angle], [angle, -0.5 * angle, 0.3]):
        back = flame_global_to_head(head_to_flame_global(np.array(head)))
        np.testing.assert_allclose(back, head, atol=1e-9)


def test_head_conventions_geometrically():
    face_dir = np.array([0.0, 0.0, 1.0])  # FLAME: the face looks along +z
    # HeadYaw > 0: the face turns toward the subject's right (-x)
    r = axis_angle_to_matrix(head_to_flame_global(np.array([0.3, 0.0, 0.0])))
    assert (r @ face_dir)[0] < -0.2
    # HeadPitch > 0: looking up (+y)
    r = axis_angle_to_matrix(head_to_flame_global(np.array([0.0, 0.3, 0.0])))
    assert (r @ face_dir)[1] > 0.2
    # HeadRoll > 0: the top of the head goes toward the subject's right (-x)
    r = axis_angle_to_matrix(head_to_flame_global(np.array([0.0, 0.0, 0.3])))
    assert (r @ np.array([0.0, 1.0, 0.0]))[0] < -0.2


# --- analytic curves ------------------------------------------------------------------------------------------------
def test_jaw_and_eyelids():
    frames = np.stack(
        [
            _frame(),
            _frame(jaw=[JAW_OPEN_MAX_RAD / 2, 0, 0]),
            _frame(jaw=[JAW_OPEN_MAX_RAD * 3, 0, 0]),
            _frame(jaw=[-0.2, 0, 0]),
            _frame(jaw=[0, 0.05, 0], eyelids=[0.4, 1.7]),
            _frame(jaw=[0, -0.05, 0], eyelids=[-0.3, 0.2]),
        ]
    )
    out = flame_to_arkit(frames)
    assert out.shape == (6, 52) and out.dtype == np.float32
    j = out[:, ARKIT_INDEX["jawOpen"]]
    np.testing.assert_allclose(j, [0, 0.5, 1, 0, 0, 0], atol=1e-6)
    assert out[4, ARKIT_INDEX["jawLeft"]] > 0.4 and out[4, ARKIT_INDEX["jawRight"]] == 0
    assert out[5, ARKIT_INDEX["jawRight"]] > 0.4 and out[5, ARKIT_INDEX["jawLeft"]] == 0
    np.testing.assert_allclose(out[4, [ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"]]], [0.4, 1.0])
    np.testing.assert_allclose(out[5, [ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"]]], [0.0, 0.2])
    assert (out[:, ARKIT_INDEX["jawForward"]] == 0).all()
    # without a map the learned curves are 0, whatever the expression
    out2 = flame_to_arkit(_frame(expr=np.ones(50)))
    assert (out2 == 0).all()
    assert (out >= 0).all() and (out <= 1).all()


def test_livelink_head_and_eyes():
    f = _frame(glob=[0.0, 0.2, 0.0], jaw=[0.1, 0, 0])
    ll = flame_to_livelink(f[None])
    assert ll.shape == (1, 61)
    np.testing.assert_allclose(ll[0, LIVELINK_INDEX["HeadYaw"]], -0.2, atol=1e-6)
    np.testing.assert_allclose(ll[0, 52:55], [-0.2, 0, 0], atol=1e-6)
    assert (ll[0, 55:] == 0).all()
    np.testing.assert_allclose(ll[0, :52], flame_to_arkit(f))


def test_torch_in_torch_out_and_batch_shapes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 58)).astype(np.float32) * 0.2
    amap = ArkitMap(rng.normal(size=(50, len(LEARNED_CURVES))) * 0.1, np.full(len(LEARNED_CURVES), 0.3))
    a_np = flame_to_livelink(x, amap)
    a_t = flame_to_livelink(torch.from_numpy(x).double(), amap)
    assert torch.is_tensor(a_t) and a_t.dtype == torch.float64 and a_t.shape == (2, 3, 61)
    np.testing.assert_allclose(a_t.numpy(), a_np, atol=1e-6)


def test_bad_input():
    with pytest.raises(InputError, match="58"):
        flame_to_arkit(np.zeros((4, 57)))
    bad = np.zeros((2, 58))
    bad[1, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        flame_to_arkit(bad)


# --- the learned map ------------------------------------------------------------------------------------------------
def test_arkit_map_apply_save_load(tmp_path):
    rng = np.random.default_rng(3)
    k = len(LEARNED_CURVES)
    amap = ArkitMap(rng.normal(size=(50, k)), rng.uniform(size=k), provenance={"method": "test", "fit_rmse": 0.1})
    e = rng.normal(size=(10, 50)) * 3
    out = flame_to_arkit(np.concatenate([e, np.zeros((10, 8))], axis=1), amap)
    assert (out >= 0).all() and (out <= 1).all()
    idx = amap.indices
    np.testing.assert_allclose(out[:, idx], np.clip(e @ amap.weight + amap.bias, 0, 1), atol=1e-5)
    path = tmp_path / "map.npz"
    amap.save(path)
    with np.load(path, allow_pickle=False) as z:  # readable without pickle
        assert json.loads(str(z["provenance"]))["method"] == "test"
    back = ArkitMap.load(path)
    np.testing.assert_array_equal(back.weight, amap.weight)
    np.testing.assert_array_equal(back.bias, amap.bias)
    assert back.curves == amap.curves and back.provenance == amap.provenance


def test_arkit_map_validation(tmp_path):
    with pytest.raises(InputError, match="shape"):
        ArkitMap(np.zeros((50, 3)), np.zeros(4), ("mouthClose", "mouthFunnel", "mouthPucker"))
    with pytest.raises(InputError, match="analytic"):
        ArkitMap(np.zeros((50, 1)), np.zeros(1), ("jawOpen",))
    with pytest.raises(InputError, match="unknown"):
        ArkitMap(np.zeros((50, 1)), np.zeros(1), ("mouthSmile",))
    bad = tmp_path / "bad.npz"
    np.savez(bad, weight=np.zeros((50, 1)))
    with pytest.raises(InputError, match="missing arrays"):
        ArkitMap.load(bad)


# --- fitting --------------------------------------------------------------------------------------------------------
def _write_pairs(folder, w, b, clip_outputs, lengths=(300, 200, 250), seed=4):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    for i, t in enumerate(lengths):
        flame = np.zeros((t, 58), dtype=np.float32)
        flame[:, :50] = rng.normal(size=(t, 50))
        arkit = np.zeros((t, 52), dtype=np.float32)
        y = flame[:, :50].astype(np.float64) @ w + b
        arkit[:, [ARKIT_INDEX[c] for c in LEARNED_CURVES]] = np.clip(y, 0, 1) if clip_outputs else y
        np.savez(folder / f"clip{i}.flame.npz", values=flame, fps=np.float32(25), layout="flame58")
        np.savez(folder / f"clip{i}.arkit.npz", values=arkit, fps=np.float32(25), layout="arkit52")


def test_ridge_recovers_known_map(tmp_path):
    rng = np.random.default_rng(5)
    k = len(LEARNED_CURVES)
    w, b = rng.normal(size=(50, k)) * 0.05, rng.uniform(0.2, 0.8, size=k)
    _write_pairs(tmp_path / "pairs", w, b, clip_outputs=False)
    amap = fam.fit_arkit_map(tmp_path / "pairs", "ridge", alpha=1e-6, progress=False)
    np.testing.assert_allclose(amap.weight, w, atol=2e-3)
    np.testing.assert_allclose(amap.bias, b, atol=2e-3)
    assert amap.provenance["method"] == "ridge" and amap.provenance["frames"] == 750
    assert amap.provenance["pairs"] == 3


def test_bounded_fit_handles_clipped_targets(tmp_path):
    rng = np.random.default_rng(6)
    k = len(LEARNED_CURVES)
    w, b = rng.normal(size=(50, k)) * 0.08, rng.uniform(-0.2, 0.6, size=k)  # many targets clipped at 0 or 1
    _write_pairs(tmp_path / "pairs", w, b, clip_outputs=True)
    ridge = fam.fit_arkit_map(tmp_path / "pairs", "ridge", alpha=1e-6, progress=False)
    bounded = fam.fit_arkit_map(tmp_path / "pairs", "bounded", alpha=1e-6, progress=False)
    assert bounded.provenance["fit_rmse"] < 0.5 * ridge.provenance["fit_rmse"]
    assert bounded.provenance["fit_rmse"] < 0.01
    np.testing.assert_allclose(bounded.weight, w, atol=0.02)
    e = rng.normal(size=(100, 50)) * 5
    out = bounded.apply(e)
    assert (out >= 0).all() and (out <= 1).all()


def test_fit_errors(tmp_path):
    k = len(LEARNED_CURVES)
    w, b = np.zeros((50, k)), np.zeros(k)
    d = tmp_path / "pairs"
    _write_pairs(d, w, b, clip_outputs=False, lengths=(20,))
    (d / "lonely.flame.npz").write_bytes((d / "clip0.flame.npz").read_bytes())
    with pytest.raises(InputError, match="no partner lonely.arkit.npz"):
        fam.fit_arkit_map(d, progress=False)
    (d / "lonely.flame.npz").unlink()
    np.savez(d / "clip0.arkit.npz", values=np.zeros((19, 52), np.float32), fps=np.float32(25), layout="arkit52")
    with pytest.raises(InputError, match="20 frames but its partner clip0.arkit.npz has 19"):
        fam.fit_arkit_map(d, progress=False)
    v = np.zeros((20, 52), np.float32)
    v[3, 17] = np.nan
    np.savez(d / "clip0.arkit.npz", values=v, fps=np.float32(25), layout="arkit52")
    with pytest.raises(InputError, match="non-finite value in frame 3, curve 'jawOpen'"):
        fam.fit_arkit_map(d, progress=False)
    with pytest.raises(InputError, match="does not exist"):
        fam.fit_arkit_map(tmp_path / "nowhere", progress=False)


def test_cli(tmp_path, capsys):
    rng = np.random.default_rng(7)
    k = len(LEARNED_CURVES)
    _write_pairs(tmp_path / "pairs", rng.normal(size=(50, k)) * 0.05, np.full(k, 0.5), clip_outputs=True)
    out = tmp_path / "map.npz"
    assert fam.main(["--pairs", str(tmp_path / "pairs"), "--out", str(out), "--method", "bounded"]) == 0
    assert ArkitMap.load(out).provenance["method"] == "bounded"
    assert "RMSE" in capsys.readouterr().out
    assert fam.main(["--pairs", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
