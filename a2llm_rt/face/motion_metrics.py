"""Motion metrics of the A2-LLM paper (arXiv 2602.04913, appendix C, eq. 11-17) and two extras under their own names.

All functions take vertex sequences ``[T, V, 3]`` of one mesh, its :class:`~a2llm_rt.face.regions.FaceRegions` and
the frame rate. The paper computes every metric "in the canonical zero-pose space (i.e. with global rotation and head
translation removed)": the caller passes such vertices (``python -m a2llm_rt.face_tools.metrics`` zeroes FLAME's global
rotation and drops Live Link's head rotations; FLAME58 has no translation).

Two signals of the mouth (App. C.2), in mm (``regions.unit_to_mm`` converts mesh units; FLAME and Apple's ARKit mesh
are in metres, so this is the paper's ``x 1000``):

- ``O_t = h(V_t)``: the mouth opening, the distance between upper and lower lip. The paper does not say which lip
  points; we take the mean over the region's paired points of ``||v_upper - v_lower||`` (on FLAME: the inner-lip
  midline pair and ARTalk's nine pairs, :mod:`a2llm_rt.face.flame_regions`);
- ``W_t``: the mouth width, the distance between the two lip corners.

The paper's metrics (field of :class:`MotionMetrics` in brackets):

- eq. 11 MOD [``mod_mm``] ``= 1/T sum_t |h(pred_t) - h(ref_t)|`` in mm; lower is better.
- eq. 12 UFD [``ufd``] ``= 1/(T-1) sum_{t=1}^{T-1} 1/|S_up| sum_{i in S_up} |d_t,i - d_t-1,i| x 1e5`` with
  ``d_t,i = ||v_t,i - v_neu,i||`` (metres), over the upper-face vertices ``S_up``, ``v_neu`` the neutral face.
  Reference-free (the prediction's own value); higher is better (richer upper-face motion). Needs the neutral face
  (``template``); without it UFD is NaN.
- eq. 13 Temporal Correlation [``temporal_corr``] ``= PCC(O_pred, O_gt)``.
- eq. 14 Velocity Correlation [``velocity_corr``] ``= PCC(v_pred, v_gt)``, ``v_t = O_t - O_t-1``.
- eq. 15 Lip Width Correlation [``lip_width_corr``] ``= PCC(W_pred, W_gt)``.
- eq. 16 Liveliness Ratio [``liveliness_ratio``] ``= sigma(v_pred) / (sigma(v_gt) + eps)`` with the mouth-opening
  velocity ``v`` of eq. 14 (mm per frame), population standard deviations, ``eps`` = :data:`LIVELINESS_EPS`; 1 is
  best.
- eq. 17 Peak Align [``peak_align_ms``] ``= Median_i min_j |t(p_gt^(i)) - t(p_pred^(j))|`` in ms over the local
  maxima of the mouth-opening curves (:func:`find_peaks`); lower is better.

Extras (ours, never under the paper's names):

- ``lve_mm``: LVE as ARTalk defines it (MeshTalk's lip vertex error): ``sqrt(mean_t max_{v in lips} ||pred - ref||^2)``
  in mm;
- ``xcorr_lag_ms`` / ``xcorr_lag_signed_ms``: the lag within ``+-max_lag_s`` that maximises the Pearson correlation
  of the mouth-opening curves over their overlap (positive: pred is late);
- ``ufd_ref``: eq. 12 on the reference, so the prediction's UFD can be read against the reference's own.

Undefined values are NaN with the reason in ``notes``, never an exception: a constant signal has no correlation;
a curve without a local maximum has no Peak Align; a reference mouth that does not move gives no Liveliness Ratio
(the formula would return ``sigma(v_pred) / eps``, an arbitrary huge number: our guard, documented). Length mismatch:
both sequences are truncated to the shorter one (``truncated_frames``, ``notes``). NaN/inf input, wrong shapes or
regions outside the mesh raise :class:`~a2llm_rt.errors.InputError`.

The paper's reported values of these metrics (its Tables 3, 4 and 6) are listed in the README beside these definitions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.regions import FaceRegions

# A signal whose standard deviation is below this (mm) is treated as constant (1 nanometre).
CONSTANT_TOL_MM = 1e-6
# eq. 16's epsilon, in mm per frame (the paper gives no value; it only keeps the ratio finite).
LIVELINESS_EPS = 1e-8
# eq. 12's scale: UFD is in metres x 1e5, i.e. the displacement change in mm x 100.
UFD_SCALE_PER_MM = 1e5 / 1000.0


@dataclass(frozen=True)
class MetricInfo:
    """How to print one metric: field name, label, unit, which direction is better, and its source."""

    name: str
    label: str
    unit: str
    better: str  # "lower", "higher", "1"
    source: str


METRIC_INFO: tuple[MetricInfo, ...] = (
    MetricInfo("mod_mm", "MOD", "mm", "lower", "eq. 11"),
    MetricInfo("ufd", "UFD", "x1e5 m", "higher", "eq. 12"),
    MetricInfo("temporal_corr", "Temporal Correlation", "", "higher", "eq. 13"),
    MetricInfo("velocity_corr", "Velocity Correlation", "", "higher", "eq. 14"),
    MetricInfo("lip_width_corr", "Lip Width Correlation", "", "higher", "eq. 15"),
    MetricInfo("liveliness_ratio", "Liveliness Ratio", "", "1", "eq. 16"),
    MetricInfo("peak_align_ms", "Peak Align", "ms", "lower", "eq. 17"),
    MetricInfo("ufd_ref", "UFD of the reference", "x1e5 m", "", "extra"),
    MetricInfo("lve_mm", "LVE (ARTalk)", "mm", "lower", "extra"),
    MetricInfo("xcorr_lag_ms", "cross-corr. lag", "ms", "lower", "extra"),
)


@dataclass
class MotionMetrics:
    """The metrics of one pred/ref pair. NaN marks an undefined value (see ``notes``).

    Attributes:
        mod_mm: eq. 11, mean absolute mouth-opening difference (mm).
        ufd: eq. 12, upper-face dynamics of the prediction (metres x 1e5; reference-free).
        temporal_corr: eq. 13, Pearson correlation of the mouth-opening curves.
        velocity_corr: eq. 14, Pearson correlation of their first differences.
        lip_width_corr: eq. 15, Pearson correlation of the lip-corner distance curves.
        liveliness_ratio: eq. 16, ``sigma(v_pred) / (sigma(v_gt) + eps)`` of the mouth-opening velocities.
        peak_align_ms: eq. 17, median over reference peaks of the distance to the nearest predicted peak (ms).
        ufd_ref: extra, eq. 12 on the reference.
        lve_mm: extra, lip vertex error as ARTalk defines it (mm).
        xcorr_lag_ms: extra, ``|xcorr_lag_signed_ms|``.
        xcorr_lag_signed_ms: extra, the lag maximising the cross-correlation of the mouth-opening curves (ms);
            positive when pred lags (is later than) ref.
        num_frames: frames compared (after truncation).
        fps: frame rate used for the ms conversion.
        truncated_frames: frames dropped from the longer input (0 when the lengths matched).
        notes: why a value is NaN, and the truncation warning.
    """

    mod_mm: float
    ufd: float
    temporal_corr: float
    velocity_corr: float
    lip_width_corr: float
    liveliness_ratio: float
    peak_align_ms: float
    ufd_ref: float
    lve_mm: float
    xcorr_lag_ms: float
    xcorr_lag_signed_ms: float
    num_frames: int
    fps: float
    truncated_frames: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain dict for JSON: NaN becomes ``None`` (JSON ``null``) so the output is strict JSON."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


# --- validation ------------------------------------------------------------------------------------------------------


def _as_vertices(x: np.ndarray, name: str) -> np.ndarray:
    """``[T, V, 3]`` numeric array with finite values (dtype kept), or InputError."""
    v = np.asarray(x)
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise InputError(f"{name}: vertices must be numeric, got dtype {v.dtype}")
    if v.ndim != 3 or v.shape[2] != 3:
        raise InputError(f"{name}: vertices must have shape [T, V, 3], got {list(v.shape)}")
    bad = ~np.isfinite(v)
    if bad.any():
        t, vi, _ = np.argwhere(bad)[0]
        raise InputError(f"{name}: non-finite vertex value in frame {t}, vertex {vi} ({int(bad.sum())} bad values)")
    return v


def _check_regions(regions: FaceRegions, num_vertices: int) -> None:
    try:
        regions.check(num_vertices)
    except ValueError as e:
        raise InputError(str(e)) from None


def _check_template(template: np.ndarray | None, num_vertices: int) -> np.ndarray | None:
    if template is None:
        return None
    t = np.asarray(template, dtype=np.float64)
    if t.shape != (num_vertices, 3) or not np.isfinite(t).all():
        raise InputError(f"template must be a finite [{num_vertices}, 3] array, got {list(t.shape)}")
    return t


def _restrict(regions: FaceRegions) -> tuple[np.ndarray, FaceRegions]:
    """(the vertices any region uses ``[U]``, the regions re-indexed into that subset)."""
    names = ("lips", "face", "upper_face", "mouth_upper", "mouth_lower", "lip_corners")
    used = np.unique(np.concatenate([getattr(regions, k) for k in names]))
    remap = {k: np.searchsorted(used, getattr(regions, k)) for k in names}
    return used, FaceRegions(**remap, unit_to_mm=regions.unit_to_mm)


# --- per-frame signals -----------------------------------------------------------------------------------------------


def mouth_opening(vertices: np.ndarray, regions: FaceRegions) -> np.ndarray:
    """``O_t = h(V_t)`` ``[T]`` in mm (App. C.1/C.2): mean over lip point pairs of ``||v_upper - v_lower||``.

    ``vertices``: ``[T, V, 3]``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    d = np.linalg.norm(v[:, regions.mouth_upper] - v[:, regions.mouth_lower], axis=-1)  # [T, P]
    return d.mean(axis=1) * regions.unit_to_mm


def lip_width(vertices: np.ndarray, regions: FaceRegions) -> np.ndarray:
    """``W_t`` ``[T]`` in mm (App. C.2): the distance between the two lip corners. ``vertices``: ``[T, V, 3]``."""
    v = np.asarray(vertices, dtype=np.float64)
    a, b = regions.lip_corners
    return np.linalg.norm(v[:, a] - v[:, b], axis=-1) * regions.unit_to_mm


# --- the paper's metrics ---------------------------------------------------------------------------------------------


def pearson(a: np.ndarray, b: np.ndarray, tol: float = CONSTANT_TOL_MM) -> float:
    """PCC of eq. 13-15: ``Cov(a, b) / (sigma(a) sigma(b))`` of two ``[N]`` signals.

    NaN when either is constant (std < ``tol``) or N < 2.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(a) != len(b):
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    sa, sb = math.sqrt((a * a).mean()), math.sqrt((b * b).mean())
    if sa < tol or sb < tol:
        return float("nan")
    return float(np.clip((a * b).mean() / (sa * sb), -1.0, 1.0))


def mouth_opening_difference(o_pred: np.ndarray, o_ref: np.ndarray) -> float:
    """Eq. 11, MOD: ``1/T sum_t |O_pred(t) - O_ref(t)|`` for mouth openings ``[T]`` already in mm."""
    return float(np.abs(np.asarray(o_pred, np.float64) - np.asarray(o_ref, np.float64)).mean())


def upper_face_dynamics(vertices: np.ndarray, regions: FaceRegions, template: np.ndarray) -> float:
    """Eq. 12, UFD (reference-free): ``mean_{t>=1} mean_{i in S_up} |d_t,i - d_t-1,i|`` x 1e5 (d in metres).

    ``d_t,i = ||v_t,i - v_neu,i||`` with ``v_neu`` = ``template`` ``[V, 3]``, the neutral face; ``vertices``
    ``[T, V, 3]`` with ``T >= 2``. The value is in metres x 1e5 whatever the mesh unit (``regions.unit_to_mm``).
    """
    idx = regions.upper_face
    v = np.asarray(vertices, dtype=np.float64)[:, idx]
    tpl = np.asarray(template, dtype=np.float64)[idx]
    d = np.linalg.norm(v - tpl, axis=-1)  # [T, |S_up|]
    if len(d) < 2:
        raise InputError(f"UFD needs at least 2 frames, got {len(d)}")
    return float(np.abs(np.diff(d, axis=0)).mean() * regions.unit_to_mm * UFD_SCALE_PER_MM)


def liveliness_ratio(o_pred: np.ndarray, o_ref: np.ndarray, eps: float = LIVELINESS_EPS) -> float:
    """Eq. 16: ``sigma(v_pred) / (sigma(v_gt) + eps)``, ``v_t = O_t - O_t-1`` of mouth openings ``[T]`` (mm).

    Population standard deviations. (:func:`compute_metrics` reports NaN instead when the reference mouth does not
    move; this function applies the formula as written.)
    """
    vp = np.diff(np.asarray(o_pred, np.float64))
    vr = np.diff(np.asarray(o_ref, np.float64))
    return float(vp.std() / (vr.std() + eps))


def find_peaks(x: np.ndarray) -> np.ndarray:
    """Local maxima of ``x`` ``[T]`` (the peaks of eq. 17) -> frame indices ``[P]``, ascending.

    A peak is a sample higher than both neighbours; a flat top (equal samples between a rise and a fall) counts once,
    at its middle (rounded down), as ``scipy.signal.find_peaks`` does. The first and last samples are never peaks.
    No height, prominence or distance threshold: the paper names none.
    """
    x = np.asarray(x, dtype=np.float64)
    peaks: list[int] = []
    t, n = 1, len(x)
    while t < n - 1:
        if x[t - 1] < x[t]:
            ahead = t + 1
            while ahead < n - 1 and x[ahead] == x[t]:
                ahead += 1
            if x[ahead] < x[t]:
                peaks.append((t + ahead - 1) // 2)
                t = ahead
                continue
        t += 1
    return np.asarray(peaks, dtype=np.int64)


def peak_align_frames(o_pred: np.ndarray, o_ref: np.ndarray) -> float:
    """Eq. 17 in frames: ``Median_i min_j |t(p_gt^(i)) - t(p_pred^(j))|`` over the peaks of :func:`find_peaks`.

    NaN when either curve has no peak.
    """
    gt, pr = find_peaks(o_ref), find_peaks(o_pred)
    if len(gt) == 0 or len(pr) == 0:
        return float("nan")
    nearest = np.abs(gt[:, None] - pr[None, :]).min(axis=1)  # [P_gt]
    return float(np.median(nearest))


# --- extras (not the paper's) ----------------------------------------------------------------------------------------


def xcorr_lag(pred: np.ndarray, ref: np.ndarray, max_lag: int) -> int | None:
    """Extra: the lag ``L`` in ``[-max_lag, max_lag]`` maximising ``pearson(pred[t + L], ref[t])`` over the overlap.

    ``L > 0``: pred is late by ``L`` frames. Ties go to the smallest ``|L|``. ``None`` when no lag has a defined
    correlation (constant signals). ``max_lag`` is capped at ``T // 2`` so that every overlap holds half the clip.
    """
    n = len(ref)
    max_lag = max(0, min(int(max_lag), n // 2))
    best: tuple[float, int] | None = None
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):
        c = pearson(pred[lag:], ref[: n - lag]) if lag >= 0 else pearson(pred[: n + lag], ref[-lag:])
        if math.isnan(c):
            continue
        if best is None or c > best[0] + 1e-12:
            best = (c, lag)
    return None if best is None else best[1]


def lip_vertex_error(pred: np.ndarray, ref: np.ndarray, regions: FaceRegions) -> float:
    """Extra, LVE in mm: ``sqrt(mean_t max_{v in lips} ||pred_t,v - ref_t,v||^2)`` (ARTalk's form). ``[T, V, 3]``."""
    e2 = ((pred[:, regions.lips] - ref[:, regions.lips]) ** 2).sum(-1)  # [T, L]
    return float(math.sqrt(e2.max(axis=1).mean()) * regions.unit_to_mm)


# --- all together ----------------------------------------------------------------------------------------------------


def reference_free_ufd(vertices: np.ndarray, regions: FaceRegions, template: np.ndarray) -> float:
    """Eq. 12 of one vertex sequence ``[T, V, 3]`` (zero pose) against the neutral face ``template`` ``[V, 3]``.

    Validates its input (InputError on bad shapes, non-finite values, regions outside the mesh, T < 2).
    """
    v = _as_vertices(vertices, "vertices")
    _check_regions(regions, v.shape[1])
    tpl = _check_template(template, v.shape[1])
    if tpl is None:
        raise InputError("UFD needs the neutral face (template)")
    return upper_face_dynamics(v, regions, tpl)


def compute_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    regions: FaceRegions,
    fps: float = 25.0,
    *,
    template: np.ndarray | None = None,
    max_lag_s: float = 0.5,
) -> MotionMetrics:
    """All metrics of ``pred`` against ``ref`` (the module docstring gives each formula).

    Args:
        pred, ref: ``[T, V, 3]`` vertex sequences of the same mesh at the same frame rate, in canonical zero pose (mesh
            units, see ``regions.unit_to_mm``). Different ``T``: both are cut to the shorter (``truncated_frames``).
        regions: vertex regions of that mesh.
        fps: frame rate (for Peak Align and the cross-correlation lag in ms).
        template: ``[V, 3]`` neutral face ``V_neu`` of eq. 12 (None: UFD and ``ufd_ref`` are NaN).
        max_lag_s: search range of the extra ``xcorr_lag``, seconds each way (Peak Align has no range).

    Raises:
        InputError: wrong shapes, non-finite values, fewer than 2 frames, different vertex counts, regions outside
            the mesh, or a bad fps / template.
    """
    p = _as_vertices(pred, "pred")
    r = _as_vertices(ref, "ref")
    if p.shape[1] != r.shape[1]:
        raise InputError(f"pred has {p.shape[1]} vertices but ref has {r.shape[1]}: not the same mesh")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be a positive number, got {fps}")
    if not (math.isfinite(max_lag_s) and max_lag_s >= 0):
        raise InputError(f"max_lag_s must be >= 0, got {max_lag_s}")
    _check_regions(regions, p.shape[1])
    template = _check_template(template, p.shape[1])

    notes: list[str] = []
    n = min(len(p), len(r))
    truncated = abs(len(p) - len(r))
    if truncated:
        notes.append(f"length mismatch: pred has {len(p)} frames, ref {len(r)}; both truncated to {n}")
        p, r = p[:n], r[:n]
    if n < 2:
        raise InputError(f"need at least 2 frames to compare motion, got {n}")
    # only the vertices that some region uses, in float64 (keeps a long FLAME clip small)
    used, regions = _restrict(regions)
    p, r = p[:, used].astype(np.float64), r[:, used].astype(np.float64)
    if template is not None:
        template = template[used]

    o_p, o_r = mouth_opening(p, regions), mouth_opening(r, regions)
    w_p, w_r = lip_width(p, regions), lip_width(r, regions)

    def corr(a: np.ndarray, b: np.ndarray, what: str) -> float:
        c = pearson(a, b)
        if math.isnan(c):
            which = [nm for nm, s in (("pred", a), ("ref", b)) if len(s) < 2 or np.std(s) < CONSTANT_TOL_MM]
            notes.append(f"{what} undefined: {' and '.join(which) or 'signal'} constant (or too short)")
        return c

    temporal = corr(o_p, o_r, "temporal correlation (eq. 13)")
    velocity = corr(np.diff(o_p), np.diff(o_r), "velocity correlation (eq. 14)")
    width = corr(w_p, w_r, "lip width correlation (eq. 15)")

    if np.diff(o_r).std() < CONSTANT_TOL_MM:
        notes.append("liveliness ratio (eq. 16) undefined: the reference mouth opening does not move")
        lively = float("nan")
    else:
        lively = liveliness_ratio(o_p, o_r)

    peak_frames = peak_align_frames(o_p, o_r)
    if math.isnan(peak_frames):
        which = [nm for nm, s in (("pred", o_p), ("ref", o_r)) if len(find_peaks(s)) == 0]
        notes.append(f"peak align (eq. 17) undefined: no local maximum in the {' and '.join(which)} mouth opening")

    if template is None:
        notes.append("UFD (eq. 12) undefined: no neutral face (template) given")
        ufd_p = ufd_r = float("nan")
    else:
        ufd_p, ufd_r = upper_face_dynamics(p, regions, template), upper_face_dynamics(r, regions, template)

    lag = xcorr_lag(o_p, o_r, int(round(max_lag_s * fps)))
    if lag is None:
        notes.append("cross-correlation lag undefined: a mouth-opening curve is constant")
        signed_ms = float("nan")
    else:
        signed_ms = lag * 1000.0 / fps

    return MotionMetrics(
        mod_mm=mouth_opening_difference(o_p, o_r),
        ufd=ufd_p,
        temporal_corr=temporal,
        velocity_corr=velocity,
        lip_width_corr=width,
        liveliness_ratio=lively,
        peak_align_ms=peak_frames * 1000.0 / fps,
        ufd_ref=ufd_r,
        lve_mm=lip_vertex_error(p, r, regions),
        xcorr_lag_ms=abs(signed_ms),
        xcorr_lag_signed_ms=signed_ms,
        num_frames=n,
        fps=float(fps),
        truncated_frames=truncated,
        notes=notes,
    )


def format_table(m: MotionMetrics) -> str:
    """Human-readable table of the metrics (one per line, the paper's first, then our extras) and the notes."""
    lines = [f"{'metric':<24}{'value':>12}  {'unit':<7}{'better':<7}source", "-" * 64]
    for info in METRIC_INFO:
        v = getattr(m, info.name)
        s = "nan" if math.isnan(v) else f"{v:.4f}"
        lines.append(f"{info.label:<24}{s:>12}  {info.unit:<7}{info.better:<7}{info.source}")
    sgn = m.xcorr_lag_signed_ms
    lines.append(f"{'(cross-corr. lag signed)':<24}{'nan' if math.isnan(sgn) else f'{sgn:+.1f}':>12}  ms     "
                 "pred late > 0")  # fmt: skip
    lines.append(
        f"frames: {m.num_frames} at {m.fps:g} fps"
        + (f" ({m.truncated_frames} truncated)" if m.truncated_frames else "")
    )
    lines.extend(f"note: {s}" for s in m.notes)
    return "\n".join(lines)
