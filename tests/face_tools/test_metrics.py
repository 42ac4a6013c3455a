"""Motion metrics (the paper's eq. 11-17 and our extras): analytic cases on a tiny synthetic face, the real ARKit
mesh's regions, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from a2llm_rt.errors import InputError
from a2llm_rt.face.motion_metrics import (
    MotionMetrics,
    compute_metrics,
    find_peaks,
    format_table,
    lip_width,
    liveliness_ratio,
    mouth_opening,
    peak_align_frames,
    pearson,
    reference_free_ufd,
    upper_face_dynamics,
)
from a2llm_rt.face.regions import FaceRegions

FPS = 25.0
# Synthetic face (metres): 0-2 upper lip points, 3-5 lower lip points, 6-7 lip corners, 8-9 brows, 10-11 cheeks.
REGIONS = FaceRegions(
    lips=np.arange(8),
    face=np.arange(12),
    upper_face=[8, 9],
    mouth_upper=[0, 1, 2],
    mouth_lower=[3, 4, 5],
    lip_corners=[6, 7],
    unit_to_mm=1000.0,
)
TEMPLATE = np.zeros((12, 3))


def smooth_signal(rng: np.random.Generator, t: int, scale: float = 0.01) -> np.ndarray:
    """``[T]`` smooth, non-periodic positive signal (metres)."""
    x = np.convolve(rng.normal(size=t + 8), np.ones(5) / 5, mode="same")[4:-4]
    x = np.cumsum(x) * 0.2 + x
    return scale * (1.5 + (x - x.min()) / (np.ptp(x) + 1e-9))


def face_sequence(opening: np.ndarray, width: np.ndarray, brow: np.ndarray) -> np.ndarray:
    """``[T, 12, 3]`` vertices of the synthetic face for mouth opening, lip width and brow height curves (metres)."""
    t = len(opening)
    v = np.zeros((t, 12, 3))
    for i, x in enumerate((-0.01, 0.0, 0.01)):
        v[:, i] = (x, 0.0, 0.0)
        v[:, 3 + i, 0] = x
        v[:, 3 + i, 1] = -opening
    v[:, 6, 0], v[:, 7, 0] = -width / 2, width / 2
    v[:, 6:8, 1] = -opening[:, None] / 2
    v[:, 8, :] = (-0.03, 0.05, 0.0)
    v[:, 9, :] = (0.03, 0.05, 0.0)
    v[:, 8:10, 1] += brow[:, None]
    v[:, 10:12, 0] = (-0.05, 0.05)
    return v


@pytest.fixture
def ref_signals() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    t = 100
    return smooth_signal(rng, t), 0.04 + smooth_signal(rng, t, 0.005), smooth_signal(rng, t, 0.003)


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """``y[t] = x[t - k]`` (edges repeat the first / last value)."""
    if k >= 0:
        return np.concatenate([np.full(k, x[0]), x[: len(x) - k]])
    return np.concatenate([x[-k:], np.full(-k, x[-1])])


def test_signals_on_synthetic_face(ref_signals):
    o, w, b = ref_signals
    v = face_sequence(o, w, b)
    np.testing.assert_allclose(mouth_opening(v, REGIONS), o * 1000, rtol=1e-12)
    np.testing.assert_allclose(lip_width(v, REGIONS), w * 1000, rtol=1e-12)


def test_identical_inputs(ref_signals):
    v = face_sequence(*ref_signals)
    m = compute_metrics(v, v.copy(), REGIONS, FPS, template=TEMPLATE)
    assert m.mod_mm == 0.0 and m.lve_mm == 0.0
    assert m.ufd == m.ufd_ref > 0.0  # reference-free: the same motion has the same UFD
    assert m.temporal_corr == pytest.approx(1.0) and m.velocity_corr == pytest.approx(1.0)
    assert m.lip_width_corr == pytest.approx(1.0)
    assert m.liveliness_ratio == pytest.approx(1.0)
    assert m.peak_align_ms == 0.0 and m.xcorr_lag_signed_ms == 0.0
    assert m.num_frames == 100 and m.truncated_frames == 0 and m.notes == []


# --- eq. 11: MOD ------------------------------------------------------------------------------------------------------


def test_mod_is_mean_absolute_opening_difference(ref_signals):
    o, w, b = ref_signals
    ref = face_sequence(o, w, b)
    pred = face_sequence(o + 0.002, w, b)  # mouth 2 mm more open in every frame
    assert compute_metrics(pred, ref, REGIONS, FPS).mod_mm == pytest.approx(2.0, rel=1e-9)
    pred = face_sequence(o, w, b)
    pred[::2, 3:6, 1] -= 0.004  # lower lip 4 mm lower in half of the frames: MOD = 2 mm
    assert compute_metrics(pred, ref, REGIONS, FPS).mod_mm == pytest.approx(2.0, rel=1e-9)


# --- eq. 12: UFD ------------------------------------------------------------------------------------------------------


def test_ufd_frozen_upper_face_is_zero(ref_signals):
    o, w, b = ref_signals
    pred = face_sequence(o, w, 0.0 * b + 0.004)  # brows raised but frozen; mouth moving
    m = compute_metrics(pred, face_sequence(o, w, b), REGIONS, FPS, template=TEMPLATE)
    assert m.ufd == 0.0 and m.ufd_ref > 0.0


def test_ufd_does_not_depend_on_the_reference(ref_signals):
    o, w, b = ref_signals
    pred = face_sequence(o, w, b)
    refs = [face_sequence(o, w, 0 * b), face_sequence(o[::-1], w, 3 * b), face_sequence(o, w, b[::-1])]
    values = {compute_metrics(pred, r, REGIONS, FPS, template=TEMPLATE).ufd for r in refs}
    assert len(values) == 1
    assert values.pop() == pytest.approx(reference_free_ufd(pred, REGIONS, TEMPLATE), rel=1e-12)


def test_ufd_matches_eq12_and_scales_with_motion(ref_signals):
    o, w, b = ref_signals
    tpl = face_sequence(o, w, 0 * b)[0]  # brows at rest (0.05 m above the lips)
    pred = face_sequence(o, w, b)
    # brow vertices move straight up from the template: d_t = b_t (metres), UFD = mean |b_t - b_t-1| * 1e5
    expected = np.abs(np.diff(b)).mean() * 1e5
    assert upper_face_dynamics(pred, REGIONS, tpl) == pytest.approx(expected, rel=1e-9)
    doubled = face_sequence(o, w, 2.0 * b)  # twice as expressive: twice the UFD (the old std-deviation UFD tied)
    assert upper_face_dynamics(doubled, REGIONS, tpl) == pytest.approx(2.0 * expected, rel=1e-9)
    m = compute_metrics(pred, pred, REGIONS, FPS)  # no template: undefined, said in the notes
    assert math.isnan(m.ufd) and any("UFD" in n for n in m.notes)


def test_ufd_in_metres_times_1e5_for_any_mesh_unit(ref_signals):
    o, w, b = ref_signals
    v = face_sequence(o, w, b)
    tpl = face_sequence(o, w, 0 * b)[0]
    mm_regions = FaceRegions(
        **{k: getattr(REGIONS, k) for k in ("lips", "face", "upper_face", "mouth_upper", "mouth_lower", "lip_corners")},
        unit_to_mm=1.0,
    )
    assert upper_face_dynamics(v * 1000, mm_regions, tpl * 1000) == pytest.approx(
        upper_face_dynamics(v, REGIONS, tpl), rel=1e-9
    )


# --- eq. 13-15: correlations -----------------------------------------------------------------------------------------


def test_correlations_follow_eq13_to_15(ref_signals):
    o, w, b = ref_signals
    ref = face_sequence(o, w, b)
    rng = np.random.default_rng(1)
    o2 = o + 0.002 * rng.random(len(o))
    w2 = w[::-1].copy()
    m = compute_metrics(face_sequence(o2, w2, b), ref, REGIONS, FPS)
    assert m.temporal_corr == pytest.approx(np.corrcoef(o2, o)[0, 1], rel=1e-9)
    assert m.velocity_corr == pytest.approx(np.corrcoef(np.diff(o2), np.diff(o))[0, 1], rel=1e-9)
    assert m.lip_width_corr == pytest.approx(np.corrcoef(w2, w)[0, 1], rel=1e-9)


# --- eq. 16: Liveliness Ratio -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0.5, 2.0, 3.0])
def test_liveliness_scales_with_mouth_velocity(ref_signals, k):
    o, w, b = ref_signals
    ref = face_sequence(o, w, b)
    pred = face_sequence(o[0] + k * (o - o[0]), w, b)  # mouth-opening velocity scaled by k
    m = compute_metrics(pred, ref, REGIONS, FPS)
    assert m.liveliness_ratio == pytest.approx(k, rel=1e-6)
    # correlations do not care about the scale; the opening error does
    assert m.temporal_corr == pytest.approx(1.0) and m.velocity_corr == pytest.approx(1.0)
    assert m.mod_mm > 0


def test_liveliness_ignores_the_rest_of_the_face(ref_signals):
    o, w, b = ref_signals
    ref = face_sequence(o, w, b)
    pred = face_sequence(o, 0.04 + 3 * (w - 0.04), 5 * b)  # livelier width and brows, same mouth opening
    assert compute_metrics(pred, ref, REGIONS, FPS).liveliness_ratio == pytest.approx(1.0, rel=1e-6)  # eps


def test_liveliness_formula_with_eps():
    o_ref = np.array([0.0, 1.0, 0.0, 1.0, 0.0])  # v_gt = [1, -1, 1, -1]: sigma 1
    o_pred = 2 * o_ref  # sigma(v_pred) = 2
    assert liveliness_ratio(o_pred, o_ref, eps=0.5) == pytest.approx(2.0 / 1.5, rel=1e-12)


# --- eq. 17: Peak Align -----------------------------------------------------------------------------------------------


def bumps(t: int, centres: list[int], width: float = 2.0) -> np.ndarray:
    """``[T]`` mouth opening (metres) with one Gaussian bump per centre."""
    x = np.arange(t, dtype=np.float64)
    return 0.005 + sum(0.01 * np.exp(-0.5 * ((x - c) / width) ** 2) for c in centres)


def test_peak_align_isolated_peaks_shifted_15_frames_is_600ms():
    t, centres = 300, [30, 110, 190]
    o_ref, o_pred = bumps(t, centres), bumps(t, [c + 15 for c in centres])
    w, b = np.full(t, 0.04), np.zeros(t)
    m = compute_metrics(face_sequence(o_pred, w, b), face_sequence(o_ref, w, b), REGIONS, FPS)
    assert m.peak_align_ms == pytest.approx(600.0)
    # the extra cross-correlation lag cannot see it (its range is +-0.5 s); Peak Align has no range
    assert m.xcorr_lag_ms <= 500.0


def test_peak_align_is_the_median_of_nearest_peak_distances():
    t = 200
    o_ref = bumps(t, [20, 70, 120, 170])
    o_pred = bumps(t, [22, 75, 121])  # distances 2, 5, 1, and 170 -> nearest 121: 49; median(1, 2, 5, 49) = 3.5
    assert peak_align_frames(o_pred, o_ref) == 3.5
    w, b = np.full(t, 0.04), np.zeros(t)
    m = compute_metrics(face_sequence(o_pred, w, b), face_sequence(o_ref, w, b), REGIONS, 25.0)
    assert m.peak_align_ms == pytest.approx(140.0)
    assert compute_metrics(face_sequence(o_pred, w, b), face_sequence(o_ref, w, b), REGIONS, 50.0).peak_align_ms == (
        pytest.approx(70.0)
    )


def test_find_peaks_local_maxima():
    assert find_peaks(np.array([0, 1, 0, 2, 2, 2, 0, 3, 3, 0, 1])).tolist() == [1, 4, 7]
    assert find_peaks(np.array([3, 2, 1, 2, 3])).tolist() == []  # edges are never peaks
    assert find_peaks(np.array([0, 1, 1])).tolist() == []  # a plateau that never falls is not a peak
    assert find_peaks(np.ones(5)).tolist() == []


def test_xcorr_lag_extra(ref_signals):
    o, w, b = ref_signals
    ref = face_sequence(o, w, b)
    for k in (1, 3, -2):
        m = compute_metrics(face_sequence(shift(o, k), w, b), ref, REGIONS, FPS)
        assert m.xcorr_lag_signed_ms == pytest.approx(k * 40.0) and m.xcorr_lag_ms == pytest.approx(abs(k) * 40.0)
    pred = face_sequence(shift(o, 5), w, b)
    assert compute_metrics(pred, ref, REGIONS, FPS, max_lag_s=0.1).xcorr_lag_ms <= 100.0


def test_lve_and_mod_exact_on_one_lip_vertex(ref_signals):
    ref = face_sequence(*ref_signals)
    pred = ref.copy()
    pred[:, 1, 1] += 0.003  # upper-lip point 1 three mm up, every frame
    m = compute_metrics(pred, ref, REGIONS, FPS)
    assert m.lve_mm == pytest.approx(3.0, rel=1e-12)
    assert m.mod_mm == pytest.approx(1.0, rel=1e-9)  # one of three pairs opens 3 mm more
    pred = ref.copy()
    pred[::2, 4, 0] += 0.002  # lower-lip point 4 off by 2 mm in half of the frames
    assert compute_metrics(pred, ref, REGIONS, FPS).lve_mm == pytest.approx(2.0 / math.sqrt(2.0), rel=1e-9)


def test_constant_input_gives_nan_not_crash():
    t = 50
    o, w, b = np.full(t, 0.01), np.full(t, 0.04), np.zeros(t)
    v = face_sequence(o, w, b)
    m = compute_metrics(v, v.copy(), REGIONS, FPS, template=TEMPLATE)
    assert math.isnan(m.temporal_corr) and math.isnan(m.velocity_corr) and math.isnan(m.lip_width_corr)
    assert math.isnan(m.liveliness_ratio) and math.isnan(m.peak_align_ms) and math.isnan(m.xcorr_lag_ms)
    assert m.mod_mm == 0.0 and m.lve_mm == 0.0 and m.ufd == 0.0
    assert any("temporal correlation" in n and "undefined" in n for n in m.notes)
    assert any("no local maximum" in n for n in m.notes)
    d = m.to_dict()
    assert d["temporal_corr"] is None and d["mod_mm"] == 0.0
    json.dumps(d, allow_nan=False)  # strict JSON
    assert "nan" in format_table(m)


def test_constant_pred_against_moving_ref(ref_signals):
    ref = face_sequence(*ref_signals)
    pred = np.repeat(ref[:1], len(ref), axis=0)
    m = compute_metrics(pred, ref, REGIONS, FPS, template=TEMPLATE)
    assert math.isnan(m.temporal_corr)
    assert m.liveliness_ratio == 0.0 and m.ufd == 0.0
    assert any("pred" in n for n in m.notes)


def test_pearson_basics():
    a = np.arange(10.0)
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert math.isnan(pearson(a, np.ones(10)))
    assert math.isnan(pearson(a[:1], a[:1]))


def test_bad_input_raises_input_error(ref_signals):
    v = face_sequence(*ref_signals)
    bad = v.copy()
    bad[7, 3, 1] = np.nan
    with pytest.raises(InputError, match="pred: non-finite vertex value in frame 7, vertex 3"):
        compute_metrics(bad, v, REGIONS, FPS)
    with pytest.raises(InputError, match="ref"):
        compute_metrics(v, bad, REGIONS, FPS)
    with pytest.raises(InputError, match=r"\[T, V, 3\]"):
        compute_metrics(v[:, :, :2], v, REGIONS, FPS)
    with pytest.raises(InputError, match="vertices"):
        compute_metrics(v[:, :10], v, REGIONS, FPS)
    with pytest.raises(InputError, match="outside"):
        compute_metrics(v[:, :10], v[:, :10], REGIONS, FPS)
    with pytest.raises(InputError, match="at least 2 frames"):
        compute_metrics(v[:1], v[:1], REGIONS, FPS)
    with pytest.raises(InputError, match="fps"):
        compute_metrics(v, v, REGIONS, 0.0)
    with pytest.raises(InputError, match="template"):
        compute_metrics(v, v, REGIONS, FPS, template=np.zeros((3, 3)))
    with pytest.raises(InputError, match="template|neutral"):
        reference_free_ufd(v, REGIONS, None)
    with pytest.raises(InputError, match="non-finite"):
        reference_free_ufd(bad, REGIONS, TEMPLATE)


def test_length_mismatch_truncates_with_note(ref_signals):
    v = face_sequence(*ref_signals)
    m = compute_metrics(v[:90], v, REGIONS, FPS)
    assert m.num_frames == 90 and m.truncated_frames == 10
    assert m.mod_mm == 0.0 and any("length mismatch" in n for n in m.notes)
    assert isinstance(m, MotionMetrics) and m.to_dict()["truncated_frames"] == 10


# --- the real ARKit mesh ----------------------------------------------------------------------------------------------


def test_arkit_regions_on_real_mesh(arkit_mesh_dir):
    from a2llm_rt.face.arkit_regions import arkit_regions, load_arkit_regions
    from a2llm_rt.face.layouts import ARKIT_INDEX

    mesh, reg = load_arkit_regions(arkit_mesh_dir)
    assert load_arkit_regions(arkit_mesh_dir)[1] is reg  # cached per folder
    assert arkit_regions(mesh) is reg  # and per mesh content
    reg.check(mesh.num_vertices)
    y = mesh.neutral[:, 1]
    assert y[reg.upper_face].min() > y[reg.lips].max()  # upper face lies above the lips
    assert set(reg.mouth_upper) <= set(reg.lips) and set(reg.mouth_lower) <= set(reg.lips)
    assert len(reg.face) > 0.9 * mesh.num_vertices
    x = mesh.neutral[reg.lip_corners, 0]
    assert x[0] < 0 < x[1]

    def weights(**kw: float) -> np.ndarray:
        w = np.zeros(52, np.float32)
        for k, val in kw.items():
            w[ARKIT_INDEX[k]] = val
        return w

    v = mesh.vertices(np.stack([weights(), weights(jawOpen=1.0), weights(mouthSmileLeft=1.0, mouthSmileRight=1.0)]))
    o = mouth_opening(v, reg)
    wd = lip_width(v, reg)
    assert o[0] < 2.0  # neutral mouth is closed (mm)
    assert o[1] - o[0] > 5.0  # jawOpen opens it by several mm (about 31 mm on Apple's mesh)
    assert wd[2] - wd[0] > 5.0  # smiling widens the lips

    # metrics through the mesh: a jaw curve against itself delayed by 2 frames
    t = 60
    jaw = 0.5 + 0.5 * np.sin(np.linspace(0, 3 * np.pi, t)) * np.linspace(1.0, 0.3, t)
    w_ref = np.zeros((t, 52), np.float32)
    w_ref[:, ARKIT_INDEX["jawOpen"]] = jaw
    w_pred = w_ref.copy()
    w_pred[:, ARKIT_INDEX["jawOpen"]] = shift(jaw, 2)
    m = compute_metrics(mesh.vertices(w_pred), mesh.vertices(w_ref), reg, FPS, template=mesh.neutral)
    assert m.xcorr_lag_signed_ms == pytest.approx(80.0) and m.peak_align_ms == pytest.approx(80.0)
    assert m.mod_mm > 0.5 and m.lve_mm > m.mod_mm
    assert m.ufd < 0.1  # the jaw barely moves the upper face ...
    w_pred[:, ARKIT_INDEX["browInnerUp"]] = jaw
    brows = compute_metrics(mesh.vertices(w_pred), mesh.vertices(w_ref), reg, FPS, template=mesh.neutral)
    assert brows.ufd > 10 * m.ufd and brows.ufd_ref == m.ufd_ref  # ... the brows do; the reference is unchanged


# --- the CLI ----------------------------------------------------------------------------------------------------------


def _io():
    """The clip I/O module, or skip (another component; the CLI cannot run without it)."""
    return pytest.importorskip("a2llm_rt.face.io", reason="a2llm_rt.face.io (clip loading) is not in this checkout")


def _jaw_clip(t: int, fps: float, delay_s: float = 0.0, layout: str = "arkit52"):
    from a2llm_rt.face.clip import MotionClip
    from a2llm_rt.face.layouts import ARKIT_INDEX

    time = np.arange(t) / fps - delay_s
    jaw = 0.5 + 0.4 * np.sin(2 * np.pi * 1.3 * time) * np.cos(2 * np.pi * 0.37 * time)
    dim = 52 if layout == "arkit52" else 61
    v = np.zeros((t, dim), np.float32)
    v[:, ARKIT_INDEX["jawOpen"]] = jaw
    v[:, ARKIT_INDEX["mouthSmileLeft"]] = 0.3 + 0.2 * np.sin(2 * np.pi * 0.7 * time)
    v[:, ARKIT_INDEX["browInnerUp"]] = 0.2 + 0.2 * np.sin(2 * np.pi * 0.5 * time)
    return MotionClip(v, fps, layout)


def test_cli_json_on_npz_files(tmp_path, arkit_mesh_dir, capsys):
    io = _io()
    from a2llm_rt.face_tools.metrics import main

    io.save_clip(_jaw_clip(75, 25.0), tmp_path / "ref.npz")
    io.save_clip(_jaw_clip(75, 25.0, delay_s=0.08), tmp_path / "pred.npz")  # 2 frames late
    out = tmp_path / "m.json"
    rc = main(["--pred", str(tmp_path / "pred.npz"), "--ref", str(tmp_path / "ref.npz"), "--json", "--out", str(out),
               "--mesh", str(arkit_mesh_dir)])  # fmt: skip
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["xcorr_lag_signed_ms"] == pytest.approx(80.0) and d["peak_align_ms"] == pytest.approx(80.0)
    assert d["mod_mm"] > 0.1 and d["lve_mm"] > 0.1 and d["num_frames"] == 75 and d["mesh"] == "arkit"

    # pred at 50 fps (Live Link layout) is resampled to the reference's 25 fps: the same motion, no error
    io.save_clip(_jaw_clip(149, 50.0, layout="livelink61"), tmp_path / "pred50.npz")
    rc = main(["--pred", str(tmp_path / "pred50.npz"), "--ref", str(tmp_path / "ref.npz"), "--json",
               "--mesh", str(arkit_mesh_dir)])  # fmt: skip
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["pred_fps"] == 50.0 and d["num_frames"] == 75 and d["truncated_frames"] == 0
    assert d["lve_mm"] < 1e-3 and d["mod_mm"] < 1e-3 and d["peak_align_ms"] == 0.0
    assert d["temporal_corr"] == pytest.approx(1.0)

    # the table
    rc = main(["--pred", str(tmp_path / "pred.npz"), "--ref", str(tmp_path / "ref.npz"), "--mesh", str(arkit_mesh_dir)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "Peak Align" in table and "80.0000" in table and "LVE" in table


def test_cli_bad_input_exits_2(tmp_path, capsys):
    io = _io()
    from a2llm_rt.face.clip import MotionClip
    from a2llm_rt.face_tools.metrics import main

    io.save_clip(_jaw_clip(30, 25.0), tmp_path / "ref.npz")
    assert main(["--pred", str(tmp_path / "missing.npz"), "--ref", str(tmp_path / "ref.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    io.save_clip(MotionClip(np.zeros((30, 58), np.float32), 25.0, "flame58"), tmp_path / "flame.npz")
    assert main(["--pred", str(tmp_path / "flame.npz"), "--ref", str(tmp_path / "ref.npz")]) == 2
    assert "different meshes" in capsys.readouterr().err
    assert main(["--pred", str(tmp_path / "flame.npz"), "--ref", str(tmp_path / "flame.npz")]) == 2
    assert "--flame" in capsys.readouterr().err
    rc = main(["--pred", str(tmp_path / "ref.npz"), "--ref", str(tmp_path / "ref.npz"), "--mesh", str(tmp_path)])
    assert rc == 2
    assert "Neutral.obj" in capsys.readouterr().err


def test_cli_module_entry_point(tmp_path, arkit_mesh_dir):
    import subprocess
    import sys
    from pathlib import Path

    io = _io()
    repo = Path(__file__).resolve().parents[2]
    io.save_clip(_jaw_clip(40, 25.0), tmp_path / "ref.npz")
    cmd = [sys.executable, "-m", "a2llm_rt.face_tools.metrics", "--ref", str(tmp_path / "ref.npz"), "--json"]
    ok = subprocess.run([*cmd, "--pred", str(tmp_path / "ref.npz"), "--mesh", str(arkit_mesh_dir)],
                        capture_output=True, text=True, timeout=120, cwd=repo)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["lve_mm"] == 0.0
    bad = subprocess.run(
        [*cmd, "--pred", str(tmp_path / "nope.npz")], capture_output=True, text=True, timeout=120, cwd=repo
    )
    assert bad.returncode == 2 and "nope.npz" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_flame_clips(tmp_path):
    io = _io()
    pytest.importorskip("a2llm_rt.face.flame", reason="a2llm_rt.face.flame (the FLAME layer) is not in this checkout")
    from a2llm_rt.face.clip import MotionClip
    from a2llm_rt.face_tools.metrics import evaluate_files
    from tests.face.synthetic_flame import synthetic_flame_npz

    flame = synthetic_flame_npz(tmp_path)  # synthetic FLAME-format model: no licensed FLAME data
    t = 50
    time = np.arange(t) / 25.0

    def clip(delay_s: float, head: float) -> MotionClip:
        v = np.zeros((t, 58), np.float32)
        v[:, 50] = 0.12 + 0.1 * np.sin(2 * np.pi * 1.1 * (time - delay_s)) * np.cos(2 * np.pi * 0.3 * (time - delay_s))
        v[:, 54] = head  # head yaw: ignored by the metrics
        return MotionClip(v, 25.0, "flame58")

    io.save_clip(clip(0.0, 0.0), tmp_path / "ref.npz")
    io.save_clip(clip(0.0, 0.3), tmp_path / "same.npz")
    io.save_clip(clip(0.12, 0.0), tmp_path / "late.npz")
    m, info = evaluate_files(tmp_path / "same.npz", tmp_path / "ref.npz", flame=flame)
    assert info["mesh"] == "flame" and m.lve_mm < 1e-3 and m.temporal_corr == pytest.approx(1.0)
    m, _ = evaluate_files(tmp_path / "late.npz", tmp_path / "ref.npz", flame=flame)
    assert m.xcorr_lag_signed_ms == pytest.approx(120.0) and m.peak_align_ms == pytest.approx(120.0) and m.mod_mm > 0


def test_cli_reference_free_ufd(tmp_path, arkit_mesh_dir, capsys):
    io = _io()
    from a2llm_rt.face.clip import MotionClip
    from a2llm_rt.face_tools.metrics import main

    io.save_clip(_jaw_clip(50, 25.0), tmp_path / "pred.npz")  # browInnerUp moves
    rc = main(["--pred", str(tmp_path / "pred.npz"), "--json", "--mesh", str(arkit_mesh_dir)])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ufd"] > 1.0 and d["num_frames"] == 50 and "mod_mm" not in d
    frozen = _jaw_clip(50, 25.0).values.copy()
    frozen[:, :] = frozen[:1]  # nothing moves
    io.save_clip(MotionClip(frozen, 25.0, "arkit52"), tmp_path / "frozen.npz")
    assert main(["--pred", str(tmp_path / "frozen.npz"), "--mesh", str(arkit_mesh_dir)]) == 0
    assert "UFD (eq. 12, reference-free): 0.0000" in capsys.readouterr().out
