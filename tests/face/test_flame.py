"""FLAME layer: converter (restricted unpickling), LBS model, regions. Uses a SYNTHETIC FLAME-format model
(tests/face/synthetic_flame.py), never the licensed one."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from a2llm_rt.errors import InputError
from a2llm_rt.face.flame import FlameModel, rodrigues
from a2llm_rt.face.flame_regions import (
    LIP_CORNERS,
    MOUTH_LOWER,
    MOUTH_LOWER_ARTALK,
    MOUTH_UPPER,
    MOUTH_UPPER_ARTALK,
    flame_regions,
    flame_regions_from_template,
)
from a2llm_rt.face.layouts import FLAME_EXPRESSION, FLAME_EYELIDS, FLAME_GLOBAL, FLAME_JAW
from a2llm_rt.face_tools.convert_flame import convert_flame, load_pickle, main
from tests.face.synthetic_flame import (
    synthetic_flame_npz,
    synthetic_masks,
    write_synthetic_eyelids,
    write_synthetic_flame_pickle,
    write_synthetic_masks_pickle,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory) -> Path:
    return synthetic_flame_npz(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def model(npz_path) -> FlameModel:
    return FlameModel.from_npz(npz_path)


@pytest.fixture(scope="module")
def model64(npz_path) -> FlameModel:
    return FlameModel.from_npz(npz_path, dtype=torch.float64)


def _frames(*lead: int, scale: float = 0.1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, 58, generator=g, dtype=torch.float64) * scale


# --- converter -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_chumpy,reconstructor_style", [(True, False), (False, False), (True, True)])
def test_converter_round_trip(tmp_path, with_chumpy, reconstructor_style):
    pkl = tmp_path / "generic_model.pkl"
    src = write_synthetic_flame_pickle(pkl, seed=3, with_chumpy=with_chumpy, reconstructor_style=reconstructor_style)
    assert (b"ccopy_reg\n_reconstructor\n" in pkl.read_bytes()) == reconstructor_style
    masks = write_synthetic_masks_pickle(tmp_path / "FLAME_masks.pkl", seed=3)
    lids = write_synthetic_eyelids(tmp_path, seed=3)
    out = tmp_path / "flame.npz"
    convert_flame(tmp_path / "generic_model.pkl", out, masks=tmp_path / "FLAME_masks.pkl", eyelids=lids)
    with np.load(out, allow_pickle=False) as z:
        for key in ("v_template", "f", "shapedirs", "posedirs", "weights", "kintree_table"):
            np.testing.assert_array_equal(z[key], src[key], err_msg=key)
        assert z["J_regressor"].dtype == np.float32 and z["J_regressor"].shape == (5, 5023)
        np.testing.assert_array_equal(z["J_regressor"], src["J_regressor"].astype(np.float32))
        np.testing.assert_allclose(z["J_regressor"].sum(1), 1.0, rtol=1e-6)  # convex rows survived densifying
        np.testing.assert_array_equal(z["parents"], [-1, 0, 1, 1, 1])
        for name, idx in masks.items():
            np.testing.assert_array_equal(z[f"mask_{name}"], idx)
        np.testing.assert_array_equal(z["l_eyelid"], np.load(lids[0]))
        np.testing.assert_array_equal(z["r_eyelid"], np.load(lids[1]))
        prov = json.loads(str(z["provenance"]))
    import hashlib

    assert prov["model"] == {
        "file": "generic_model.pkl",
        "sha256": hashlib.sha256((tmp_path / "generic_model.pkl").read_bytes()).hexdigest(),
    }
    assert prov["masks"]["file"] == "FLAME_masks.pkl" and len(prov["eyelids"]) == 2


def test_pickle_is_python2_style(tmp_path):
    """The synthetic pickle references chumpy and old module names, and never _codecs (Python-3 protocol 2)."""
    write_synthetic_flame_pickle(tmp_path / "m.pkl", num_vertices=60)
    raw = (tmp_path / "m.pkl").read_bytes()
    assert raw[:2] == b"\x80\x02"
    for ref in (b"cchumpy.ch\nCh\n", b"cscipy.sparse.csc\ncsc_matrix\n", b"cnumpy.core.multiarray\n_reconstruct\n"):
        assert ref in raw
    assert b"_codecs" not in raw and b"numpy._core" not in raw
    d = load_pickle(tmp_path / "m.pkl")
    assert d["J_regressor"].shape == (5, 60) and d["shapedirs"].shape == (60, 3, 400)


FORBIDDEN = [
    ("posix", "system", "touch {m}"),
    ("os", "system", "touch {m}"),
    ("builtins", "eval", "__import__('pathlib').Path({m!r}).touch()"),
    ("__builtin__", "eval", "__import__('pathlib').Path({m!r}).touch()"),
    ("subprocess", "Popen", ["touch", "{m}"]),
]


@pytest.mark.parametrize("module,name,arg", FORBIDDEN)
def test_forbidden_global_is_refused_without_running(tmp_path, module, name, arg):
    marker = tmp_path / "marker"
    arg = [a.format(m=str(marker)) for a in arg] if isinstance(arg, list) else arg.format(m=str(marker))
    pkl = tmp_path / "evil.pkl"
    write_synthetic_flame_pickle(pkl, num_vertices=60, forbidden_global=(module, name, arg))
    with pytest.raises(InputError) as e:
        convert_flame(pkl, tmp_path / "out.npz")
    assert f"{module}.{name}" in str(e.value) and "evil.pkl" in str(e.value)
    assert not marker.exists()
    assert not (tmp_path / "out.npz").exists()


def test_forbidden_pickle_would_run_with_plain_pickle(tmp_path):
    """Control for the test above: the evil pickle really does run its payload under an unrestricted unpickler."""
    marker = tmp_path / "marker"
    pkl = tmp_path / "evil.pkl"
    write_synthetic_flame_pickle(pkl, num_vertices=60, forbidden_global=("posix", "system", f"touch {marker}"))
    with pytest.raises(Exception), open(pkl, "rb") as f:  # noqa: B017 - fails later on the chumpy import
        pickle.load(f, encoding="latin1")
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_python3_resaved_pickles_load(tmp_path, protocol):
    """A model re-saved by Python 3 / numpy 2 (plain arrays, any protocol) converts too."""
    src = synthetic_masks(0)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(src, protocol=protocol))
    out = load_pickle(tmp_path / "m.pkl")
    assert out.keys() == src.keys() and all(np.array_equal(out[k], src[k]) for k in src)
    # _codecs.encode is allowed for latin-1 only
    evil = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    (tmp_path / "codec.pkl").write_bytes(evil)
    with pytest.raises(InputError, match="codec.pkl"):
        load_pickle(tmp_path / "codec.pkl")


def test_truncated_and_garbage_pickles(tmp_path):
    pkl = tmp_path / "generic_model.pkl"
    write_synthetic_flame_pickle(pkl, num_vertices=60)
    raw = pkl.read_bytes()
    for name, data in (("half.pkl", raw[: len(raw) // 2]), ("tail.pkl", raw[:-1]), ("junk.pkl", b"not a pickle")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=name):
            convert_flame(tmp_path / name, tmp_path / "out.npz")
    with pytest.raises(InputError, match="missing.pkl"):
        convert_flame(tmp_path / "missing.pkl", tmp_path / "out.npz")


def test_converter_checks_shapes(tmp_path):
    good = write_synthetic_flame_pickle(tmp_path / "ok.pkl", num_vertices=60)
    bad = dict(good, posedirs=good["posedirs"][..., :30])
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad, protocol=4))  # a Python-3 re-save: plain arrays
    with pytest.raises(InputError, match=r"bad.pkl.*posedirs must be \[V=60, 3, 36\]"):
        convert_flame(tmp_path / "bad.pkl", tmp_path / "out.npz")
    del bad["posedirs"]
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad, protocol=4))
    with pytest.raises(InputError, match="missing key 'posedirs'"):
        convert_flame(tmp_path / "bad.pkl", tmp_path / "out.npz")
    (tmp_path / "masks.pkl").write_bytes(pickle.dumps({"lips": np.array([1, 2, 600])}, protocol=4))
    with pytest.raises(InputError, match="masks.pkl.*outside"):
        convert_flame(tmp_path / "ok.pkl", tmp_path / "out.npz", masks=tmp_path / "masks.pkl")
    np.save(tmp_path / "lid.npy", np.zeros((59, 3)))
    with pytest.raises(InputError, match="lid.npy"):
        convert_flame(tmp_path / "ok.pkl", tmp_path / "out.npz", eyelids=[tmp_path / "lid.npy"] * 2)


def test_cli_end_to_end(tmp_path, capsys):
    write_synthetic_flame_pickle(tmp_path / "generic_model.pkl", seed=1)
    write_synthetic_masks_pickle(tmp_path / "FLAME_masks.pkl", seed=1)
    lids = write_synthetic_eyelids(tmp_path, seed=1)
    out = tmp_path / "out" / "flame.npz"
    argv = ["--model", str(tmp_path / "generic_model.pkl"), "--masks", str(tmp_path / "FLAME_masks.pkl")]
    assert main([*argv, "--eyelids", str(lids[0]), str(lids[1]), "--out", str(out)]) == 0
    assert "5023 vertices" in capsys.readouterr().out
    m = FlameModel.from_npz(out)
    assert m.has_eyelids and m.num_vertices == 5023 and m.faces.shape == (9976, 3)
    np.testing.assert_array_equal(m.regions.lips, synthetic_masks(1)["lips"])
    # bad input through the real entry point: exit code 2, a clear message, no traceback
    write_synthetic_flame_pickle(tmp_path / "evil.pkl", num_vertices=60, forbidden_global=True)
    r = subprocess.run(
        [sys.executable, "-m", "a2llm_rt.face_tools.convert_flame", "--model", str(tmp_path / "evil.pkl"), "--out",
         str(tmp_path / "evil.npz")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "posix.system" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "evil.npz").exists()


# --- npz loading -----------------------------------------------------------------------------------------------------
def test_npz_validation(tmp_path, npz_path):
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    cases = {
        "shape.npz": (dict(arrays, weights=arrays["weights"][:, :4]), r"weights must have shape \[5023, 5\]"),
        "missing.npz": ({k: v for k, v in arrays.items() if k != "J_regressor"}, "missing arrays"),
        "nan.npz": (dict(arrays, v_template=np.full_like(arrays["v_template"], np.nan)), "finite"),
        "faces.npz": (dict(arrays, f=arrays["f"] + 5023), "f must be"),
        "lid.npz": ({k: v for k, v in arrays.items() if k != "r_eyelid"}, "only one of"),
    }
    for name, (a, msg) in cases.items():
        np.savez(tmp_path / name, **a)
        with pytest.raises(InputError, match=msg) as e:
            FlameModel.from_npz(tmp_path / name)
        assert name in str(e.value)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 junk")
    with pytest.raises(InputError, match="junk.npz"):
        FlameModel.from_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", **dict(arrays, v_template=np.array([None, 1], dtype=object)))
    with pytest.raises(InputError, match="obj.npz"):
        FlameModel.from_npz(tmp_path / "obj.npz")
    assert zipfile.is_zipfile(npz_path)


# --- model -----------------------------------------------------------------------------------------------------------
def test_zero_parameters_give_template(model):
    v = model(torch.zeros(2, 3, 58))
    assert v.shape == (2, 3, 5023, 3) and v.dtype == torch.float32
    torch.testing.assert_close(v, model.v_template.expand(2, 3, -1, -1), atol=1e-6, rtol=0)


def test_rodrigues_matches_scipy():
    rv = torch.cat([torch.randn(64, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64) * 1e-5])
    ref = torch.as_tensor(Rotation.from_rotvec(rv.numpy()).as_matrix())
    torch.testing.assert_close(rodrigues(rv), ref, atol=1e-12, rtol=0)
    assert torch.equal(rodrigues(torch.zeros(3, dtype=torch.float64)), torch.eye(3, dtype=torch.float64))
    x = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    rodrigues(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_jaw_rotation_opens_the_mouth(model):
    frames = torch.zeros(5, 58)
    frames[:, FLAME_JAW.start] = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4])  # jaw pitch
    v = model(frames)
    r = model.regions
    opening = (v[:, r.mouth_upper] - v[:, r.mouth_lower]).norm(dim=-1).mean(-1) * r.unit_to_mm  # [5] mm
    assert (opening.diff() > 2.0).all(), opening
    upper_motion = (v[:, r.mouth_upper] - v[:1, r.mouth_upper]).norm(dim=-1).max() * r.unit_to_mm
    assert upper_motion < 0.5  # the upper lip stays (only pose correctives move it)


def test_batch_equivalence(model64):
    frames = _frames(2, 3)
    batched = model64(frames)
    loop = torch.stack([torch.stack([model64(frames[b, t]) for t in range(3)]) for b in range(2)])
    torch.testing.assert_close(batched, loop, atol=1e-12, rtol=0)
    assert model64(frames[0, 0]).shape == (5023, 3)


def test_expression_is_linear(model64, npz_path):
    with np.load(npz_path) as z:
        exprdirs = torch.as_tensor(z["shapedirs"][..., 300:350])
    e1, e2 = _frames(1, seed=1)[0], _frames(1, seed=2)[0]
    for e in (e1, e2):
        e[50:] = 0
    v0 = model64(torch.zeros(58, dtype=torch.float64))
    d1, d2 = model64(e1) - v0, model64(e2) - v0
    torch.testing.assert_close(d1, exprdirs @ e1[FLAME_EXPRESSION], atol=1e-12, rtol=0)
    torch.testing.assert_close(model64(0.7 * e1 - 2.0 * e2) - v0, 0.7 * d1 - 2.0 * d2, atol=1e-12, rtol=0)


def test_eyelids_add_their_basis_after_skinning(model64, npz_path, tmp_path):
    with np.load(npz_path) as z:
        left, right = torch.as_tensor(z["l_eyelid"]), torch.as_tensor(z["r_eyelid"])
    f = _frames(seed=4)
    f[FLAME_EYELIDS] = 0
    g = f.clone()
    g[FLAME_EYELIDS] = torch.tensor([0.6, -0.3], dtype=torch.float64)
    diff = model64(g) - model64(f)
    assert diff.abs().max() > 1e-3
    torch.testing.assert_close(diff, 0.6 * left - 0.3 * right, atol=1e-12, rtol=0)
    # without eyelid blendshapes in the npz, the eyelid parameters are ignored
    plain = FlameModel.from_npz(synthetic_flame_npz(tmp_path, with_eyelids=False, with_masks=False))
    assert not plain.has_eyelids
    torch.testing.assert_close(plain(g.float()), plain(f.float()), atol=0, rtol=0)


def test_global_rotation_is_rigid_about_root(model64):
    f = _frames(seed=5)
    f[FLAME_GLOBAL] = 0
    f[FLAME_EYELIDS] = 0
    g = f.clone()
    rv = torch.tensor([0.3, -0.5, 0.2], dtype=torch.float64)
    g[FLAME_GLOBAL] = rv
    v0, v1 = model64(f), model64(g)
    root = model64.joints(f[FLAME_EXPRESSION])[0]  # [3]
    torch.testing.assert_close(v1, (v0 - root) @ rodrigues(rv).T + root, atol=1e-12, rtol=0)
    idx = torch.randperm(5023, generator=torch.Generator().manual_seed(0))[:200]
    torch.testing.assert_close(torch.cdist(v0[idx], v0[idx]), torch.cdist(v1[idx], v1[idx]), atol=1e-8, rtol=0)


def test_shape_coefficients(npz_path):
    betas = torch.linspace(-2, 2, 20, dtype=torch.float64)
    m = FlameModel.from_npz(npz_path, shape=betas, dtype=torch.float64)
    with np.load(npz_path) as z:
        expected = torch.as_tensor(z["v_template"] + z["shapedirs"][..., :20] @ betas.numpy())
    torch.testing.assert_close(m(torch.zeros(58, dtype=torch.float64)), expected, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="at most 300"):
        FlameModel.from_npz(npz_path, shape=np.zeros(301))


def test_gradients_reach_parameters(model):
    f = _frames(2, scale=0.05).float().requires_grad_()
    model(f).square().sum().backward()
    assert torch.isfinite(f.grad).all() and (f.grad[:, :56].abs().sum(0) > 0).all()


def test_device_follows_buffers(npz_path):
    """On the meta device any stray CPU tensor inside forward would raise; the output lands on the buffers' device."""
    m = FlameModel.from_npz(npz_path).to("meta")
    assert m(torch.zeros(2, 58)).device.type == "meta"


@pytest.mark.gpu
def test_cuda_matches_cpu(model):
    frames = _frames(3, 4, seed=7).float()
    cuda = FlameModel.from_npz(model.source).cuda()
    v = cuda(frames.cuda())
    assert v.device.type == "cuda"
    torch.testing.assert_close(v.cpu(), model(frames), atol=2e-5, rtol=0)


# --- regions ---------------------------------------------------------------------------------------------------------
def test_mouth_pairs_follow_artalk_mirror_order():
    assert MOUTH_UPPER[0] == 3531 and MOUTH_LOWER[0] == 3504
    for i in range(9):
        assert MOUTH_UPPER[i + 1] == MOUTH_UPPER_ARTALK[i] and MOUTH_LOWER[i + 1] == MOUTH_LOWER_ARTALK[8 - i]
    np.testing.assert_array_equal(LIP_CORNERS, [2819, 1702])
    r = flame_regions()  # coarse fallback without masks
    assert r.unit_to_mm == 1000.0 and len(r.face) == 5023 and set(MOUTH_UPPER) <= set(r.lips)
    masks = synthetic_masks(0)
    r = flame_regions(masks)
    np.testing.assert_array_equal(r.lips, masks["lips"])
    np.testing.assert_array_equal(r.upper_face, np.union1d(masks["forehead"], masks["eye_region"]))


def test_regions_from_template_fallback(model):
    v = model.v_template.double().numpy()
    r = flame_regions_from_template(v)
    lips, face, upper = set(r.lips), set(r.face), set(r.upper_face)
    assert set(MOUTH_UPPER) | set(MOUTH_LOWER) | set(LIP_CORNERS) <= lips <= face
    assert 20 < len(lips) < 500 and upper < face and not (upper & lips)
    assert v[r.upper_face, 1].min() > v[r.lips, 1].max()  # eyes and forehead sit above the lips
    assert (v[r.mouth_upper, 1] > v[r.mouth_lower, 1]).all()  # pairs: upper above lower
    np.testing.assert_allclose(v[r.mouth_upper, 0], v[r.mouth_lower, 0], atol=1e-9)  # ... and across the mouth
    assert v[r.lip_corners[0], 0] < 0 < v[r.lip_corners[1], 0]
    # the model prefers the npz masks
    np.testing.assert_array_equal(model.regions.lips, synthetic_masks(0)["lips"])


def test_non_flame2020_topology(tmp_path):
    write_synthetic_flame_pickle(tmp_path / "small.pkl", num_vertices=80)
    convert_flame(tmp_path / "small.pkl", tmp_path / "small.npz")
    m = FlameModel.from_npz(tmp_path / "small.npz")
    assert m(torch.zeros(7, 58)).shape == (7, 80, 3)
    with pytest.raises(ValueError, match="5023"):
        _ = m.regions
