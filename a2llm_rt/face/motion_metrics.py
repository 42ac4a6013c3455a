"""Motion metrics between a predicted and a reference vertex sequence (issue 2 §4).

All metrics take two vertex sequences ``pred`` and ``ref`` ``[T, V, 3]`` of the same mesh, its
:class:`~a2llm_rt.face.regions.FaceRegions` and the frame rate, and return a :class:`MotionMetrics`.

Where the definitions come from: the A2-LLM paper (arXiv 2602.04913) lists MOD, UFD, Temporal / Velocity / Lip Width
Correlation, Liveliness Ratio, Peak Align and LVE, and says its metrics follow ARTalk and earlier work, but the text of
its appendix C (the exact formulas) was NOT available to us. Confirmed from other sources: LVE (ARTalk /
MeshTalk / torchmetrics ``LipVertexError``: max over lip vertices of the squared L2 error per frame, averaged over
frames; ARTalk reports its square root in mm) and the FDD/UFD idea (CodeTalker / torchmetrics
``upper_face_dynamics_deviation``: compare the per-vertex temporal std of the displacement from a template over the
upper face). Everything else is the most standard definition, spelled out in each function's docstring:

- the mouth opening ``o(t)`` is the mean over the paired points of ``||v_upper - v_lower||`` (ARTalk's point pairs on
  FLAME), in mm;
- MOD = ``mean_t |o_pred(t) - o_ref(t)|`` (mm);
- UFD = ``mean_{v in upper_face} | std_t ||pred_t,v - tpl_v|| - std_t ||ref_t,v - tpl_v|| |`` (mm). We use the
  unsquared distance (so the unit is mm) and the absolute per-vertex difference (so errors cannot cancel); CodeTalker's
  FDD uses the squared distance and the signed difference of the vertex means;
- Temporal / Velocity / Lip Width Correlation: Pearson correlation of ``o``, of its first difference, and of the
  lip-corner distance;
- Liveliness Ratio: mean per-frame vertex speed over the face region, pred / ref (1 = as lively as the reference;
  scaling the motion about any fixed pose by ``s`` gives exactly ``s``);
- Peak Align: the lag (within ``±max_lag_s``, default 0.5 s) that maximises the normalised cross-correlation (Pearson
  over the overlap) of the mouth-opening curves, in ms; ``peak_align_signed_ms > 0`` means pred lags ref,
  ``peak_align_ms`` is its absolute value.

Undefined values (a constant signal has no correlation) are NaN with an explanation in ``notes``, never an exception.
Length mismatch: both sequences are truncated to the shorter one and ``truncated_frames`` / ``notes`` say so.
NaN/inf input, wrong shapes or regions outside the mesh raise :class:`~a2llm_rt.errors.InputError`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.regions import FaceRegions

# A signal whose standard deviation is below this (mm) is treated as constant (1 nanometre).
CONSTANT_TOL_MM = 1e-6


@dataclass(frozen=True)
class MetricInfo:
    """How to print one metric: field name, label, unit and which direction is better."""

    name: str
    label: str
    unit: str
    better: str  # "lower", "higher", "1"


METRIC_INFO: tuple[MetricInfo, ...] = (
    MetricInfo("mod_mm", "MOD", "mm", "lower"),
    MetricInfo("ufd_mm", "UFD", "mm", "lower"),
    MetricInfo("temporal_corr", "Temporal Correlation", "", "higher"),
    MetricInfo("velocity_corr", "Velocity Correlation", "", "higher"),
    MetricInfo("lip_width_corr", "Lip Width Correlation", "", "higher"),
    MetricInfo("liveliness_ratio", "Liveliness Ratio", "", "1"),
    MetricInfo("peak_align_ms", "Peak Align", "ms", "lower"),
    MetricInfo("lve_mm", "LVE", "mm", "lower"),
)


@dataclass
class MotionMetrics:
    """The metrics of one pred/ref pair. NaN marks an undefined value (see ``notes``).

    Attributes:
        mod_mm: mean absolute mouth-opening difference (mm).
        ufd_mm: upper-face dynamics deviation (mm).
        temporal_corr: Pearson correlation of the mouth-opening curves.
        velocity_corr: Pearson correlation of their first differences.
        lip_width_corr: Pearson correlation of the lip-corner distance curves.
        liveliness_ratio: mean face-vertex speed, pred / ref.
        peak_align_ms: ``|peak_align_signed_ms|``.
        peak_align_signed_ms: best lag in ms; positive when pred lags (is later than) ref.
        lve_mm: lip vertex error (mm).
        num_frames: frames compared (after truncation).
        fps: frame rate used for the ms conversion.
        truncated_frames: frames dropped from the longer input (0 when the lengths matched).
        notes: why a value is NaN, and the truncation warning.
    """

    mod_mm: float
    ufd_mm: float
    temporal_corr: float
    velocity_corr: float
    lip_width_corr: float
    liveliness_ratio: float
    peak_align_ms: float
    peak_align_signed_ms: float
    lve_mm: float
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


def _restrict(regions: FaceRegions) -> tuple[np.ndarray, FaceRegions]:
    """(the vertices any region uses ``[U]``, the regions re-indexed into that subset)."""
    names = ("lips", "face", "upper_face", "mouth_upper", "mouth_lower", "lip_corners")
    used = np.unique(np.concatenate([getattr(regions, k) for k in names]))
    remap = {k: np.searchsorted(used, getattr(regions, k)) for k in names}
    return used, FaceRegions(**remap, unit_to_mm=regions.unit_to_mm)


# --- per-frame signals -----------------------------------------------------------------------------------------------


def mouth_opening(vertices: np.ndarray, regions: FaceRegions) -> np.ndarray:
    """Mouth opening ``[T]`` in mm: mean over point pairs of ``||v_upper - v_lower||``; ``vertices`` ``[T, V, 3]``."""
    v = np.asarray(vertices, dtype=np.float64)
    d = np.linalg.norm(v[:, regions.mouth_upper] - v[:, regions.mouth_lower], axis=-1)  # [T, P]
    return d.mean(axis=1) * regions.unit_to_mm


def lip_width(vertices: np.ndarray, regions: FaceRegions) -> np.ndarray:
    """Lip-corner distance ``[T]`` in mm. ``vertices``: ``[T, V, 3]``."""
    v = np.asarray(vertices, dtype=np.float64)
    a, b = regions.lip_corners
    return np.linalg.norm(v[:, a] - v[:, b], axis=-1) * regions.unit_to_mm


# --- scalar metrics --------------------------------------------------------------------------------------------------


def pearson(a: np.ndarray, b: np.ndarray, tol: float = CONSTANT_TOL_MM) -> float:
    """Pearson correlation of two ``[N]`` signals; NaN when either is constant (std < ``tol``) or N < 2."""
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


def peak_lag(pred: np.ndarray, ref: np.ndarray, max_lag: int) -> int | None:
    """The lag ``L`` in ``[-max_lag, max_lag]`` maximising ``pearson(pred[t + L], ref[t])`` over their overlap.

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
    """LVE in mm: ``sqrt(mean_t max_{v in lips} ||pred_t,v - ref_t,v||^2)`` (ARTalk's form). Inputs ``[T, V, 3]``."""
    e2 = ((pred[:, regions.lips] - ref[:, regions.lips]) ** 2).sum(-1)  # [T, L]
    return float(math.sqrt(e2.max(axis=1).mean()) * regions.unit_to_mm)


def upper_face_dynamics_deviation(
    pred: np.ndarray, ref: np.ndarray, regions: FaceRegions, template: np.ndarray | None = None
) -> float:
    """UFD in mm: ``mean_{v in upper_face} | std_t ||pred_t,v - tpl_v|| - std_t ||ref_t,v - tpl_v|| |``.

    ``template`` ``[V, 3]`` is the mesh's neutral pose; without one, the reference's per-vertex temporal mean is used
    for both sequences.
    """
    idx = regions.upper_face
    tpl = ref[:, idx].mean(axis=0) if template is None else np.asarray(template, dtype=np.float64)[idx]
    sp = np.linalg.norm(pred[:, idx] - tpl, axis=-1).std(axis=0)  # [U]
    sr = np.linalg.norm(ref[:, idx] - tpl, axis=-1).std(axis=0)
    return float(np.abs(sp - sr).mean() * regions.unit_to_mm)


def mean_vertex_speed(vertices: np.ndarray, idx: np.ndarray) -> float:
    """Mean over frames and ``idx`` vertices of ``||v_{t+1} - v_t||`` (mesh units per frame)."""
    return float(np.linalg.norm(np.diff(vertices[:, idx], axis=0), axis=-1).mean())


# --- all together ----------------------------------------------------------------------------------------------------


def compute_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    regions: FaceRegions,
    fps: float = 25.0,
    *,
    template: np.ndarray | None = None,
    max_lag_s: float = 0.5,
) -> MotionMetrics:
    """All metrics of ``pred`` against ``ref``.

    Args:
        pred, ref: ``[T, V, 3]`` vertex sequences of the same mesh at the same frame rate (mesh units, see
            ``regions.unit_to_mm``). Different ``T``: both are cut to the shorter (``truncated_frames``, ``notes``).
        regions: vertex regions of that mesh.
        fps: frame rate (for Peak Align in ms).
        template: ``[V, 3]`` neutral pose for UFD (None: the reference's temporal mean).
        max_lag_s: Peak Align search range, seconds each way.

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
    try:
        regions.check(p.shape[1])
    except ValueError as e:
        raise InputError(str(e)) from None
    if template is not None:
        template = np.asarray(template, dtype=np.float64)
        if template.shape != (p.shape[1], 3) or not np.isfinite(template).all():
            raise InputError(f"template must be a finite [{p.shape[1]}, 3] array, got {list(template.shape)}")

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

    temporal = corr(o_p, o_r, "temporal correlation")
    velocity = corr(np.diff(o_p), np.diff(o_r), "velocity correlation")
    width = corr(w_p, w_r, "lip width correlation")

    speed_r = mean_vertex_speed(r, regions.face) * regions.unit_to_mm
    speed_p = mean_vertex_speed(p, regions.face) * regions.unit_to_mm
    if speed_r < CONSTANT_TOL_MM:
        notes.append("liveliness ratio undefined: the reference face does not move")
        lively = float("nan")
    else:
        lively = speed_p / speed_r

    lag = peak_lag(o_p, o_r, int(round(max_lag_s * fps)))
    if lag is None:
        notes.append("peak align undefined: a mouth-opening curve is constant")
        signed_ms = float("nan")
    else:
        signed_ms = lag * 1000.0 / fps

    return MotionMetrics(
        mod_mm=float(np.abs(o_p - o_r).mean()),
        ufd_mm=upper_face_dynamics_deviation(p, r, regions, template),
        temporal_corr=temporal,
        velocity_corr=velocity,
        lip_width_corr=width,
        liveliness_ratio=lively,
        peak_align_ms=abs(signed_ms),
        peak_align_signed_ms=signed_ms,
        lve_mm=lip_vertex_error(p, r, regions),
        num_frames=n,
        fps=float(fps),
        truncated_frames=truncated,
        notes=notes,
    )


def format_table(m: MotionMetrics) -> str:
    """Human-readable table of the metrics (one per line) and the notes."""
    lines = [f"{'metric':<24}{'value':>12}  unit  better", "-" * 50]
    for info in METRIC_INFO:
        v = getattr(m, info.name)
        s = "nan" if math.isnan(v) else f"{v:.4f}"
        lines.append(f"{info.label:<24}{s:>12}  {info.unit:<4}  {info.better}")
    sgn = m.peak_align_signed_ms
    lines.append(f"{'(peak align signed)':<24}{'nan' if math.isnan(sgn) else f'{sgn:+.1f}':>12}  ms    pred late > 0")
    lines.append(
        f"frames: {m.num_frames} at {m.fps:g} fps"
        + (f" ({m.truncated_frames} truncated)" if m.truncated_frames else "")
    )
    lines.extend(f"note: {s}" for s in m.notes)
    return "\n".join(lines)
