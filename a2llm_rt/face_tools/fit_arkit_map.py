"""Fit the learned part of the FLAME -> ARKit mapping (:class:`~a2llm_rt.face.flame_to_arkit.ArkitMap`).

Input: a folder of paired sequences ``<name>.flame.npz`` (FLAME58) and ``<name>.arkit.npz`` (ARKIT52, or LIVELINK61 of
which the first 52 curves are used), both in the project's npz clip format (arrays ``values`` ``[T, D]`` float32,
``fps``, ``layout``), the same T and fps per pair. Frame t of one file is frame t of the other.

Methods (X = the 50 expression coefficients per frame, Y = the target curves, N frames):

- ``ridge``: closed form of ``min mean((X W + b - Y)^2) + alpha * |W|^2`` (the bias is not penalised).
- ``bounded``: per curve, the model actually applied at run time, ``clip(X w + b, 0, 1)``, fitted by censored least
  squares: :func:`scipy.optimize.lsq_linear` (with the same ridge penalty and weights bounded to ``+-max_weight``)
  on the frames whose error is not already zero after clipping (target 0 predicted <= 0, or target 1 predicted >= 1),
  repeated until that set stops changing.

``python -m a2llm_rt.face_tools.fit_arkit_map --pairs DIR --out map.npz [--method ridge|bounded] [--alpha 1e-3]``
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import lsq_linear
from tqdm import tqdm

from a2llm_rt.errors import InputError
from a2llm_rt.face.flame_to_arkit import LEARNED_CURVES, ArkitMap
from a2llm_rt.face.layouts import ARKIT52_DIM, ARKIT_INDEX, FLAME_EXPRESSION, get_layout, layout_for_dim
from a2llm_rt.utils.cli import cli_main

FLAME_SUFFIX = ".flame.npz"
ARKIT_SUFFIX = ".arkit.npz"


def _read_clip_npz(path: Path, allowed: tuple[str, ...]) -> tuple[np.ndarray, float]:
    """``values [T, D]`` float64 and fps of one npz clip whose layout is in ``allowed``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "values" not in z.files or "fps" not in z.files:
                raise InputError(f"not a clip file: needs arrays 'values' and 'fps', has {sorted(z.files)}", path)
            values = np.asarray(z["values"], dtype=np.float64)
            fps = float(z["fps"])
            layout_raw = z["layout"].item() if "layout" in z.files else None
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"cannot read npz clip: {e}", path) from None
    if values.ndim != 2:
        raise InputError(f"'values' must be [T, D], got shape {list(values.shape)}", path)
    try:
        layout = layout_for_dim(values.shape[1]) if layout_raw is None else get_layout(layout_raw)
    except KeyError as e:
        raise InputError(str(e.args[0]), path) from None
    if layout.name not in allowed:
        raise InputError(f"layout {layout.name} is not one of {list(allowed)}", path)
    if values.shape[1] != layout.dim:
        raise InputError(f"layout {layout.name} needs {layout.dim} values per frame, got {values.shape[1]}", path)
    bad = ~np.isfinite(values)
    if bad.any():
        t, d = np.argwhere(bad)[0]
        count = int(bad.sum())
        raise InputError(f"non-finite value in frame {t}, curve {layout.names[d]!r} ({count} bad values)", path)
    if not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be positive, got {fps}", path)
    return values, fps


def find_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """``(name, flame_path, arkit_path)`` for every pair in ``folder``; an unpaired file is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("pairs folder does not exist", folder)
    flame = {p.name[: -len(FLAME_SUFFIX)]: p for p in folder.glob(f"*{FLAME_SUFFIX}")}
    arkit = {p.name[: -len(ARKIT_SUFFIX)]: p for p in folder.glob(f"*{ARKIT_SUFFIX}")}
    if not flame and not arkit:
        raise InputError(f"no <name>{FLAME_SUFFIX} / <name>{ARKIT_SUFFIX} pairs found", folder)
    lonely = sorted(set(flame) ^ set(arkit))
    if lonely:
        name = lonely[0]
        have, want = (flame[name], ARKIT_SUFFIX) if name in flame else (arkit[name], FLAME_SUFFIX)
        raise InputError(f"has no partner {name}{want} ({len(lonely)} unpaired names: {lonely[:5]})", have)
    return [(n, flame[n], arkit[n]) for n in sorted(flame)]


def load_pairs(folder: str | Path, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stack all pairs: expression ``[N, 50]``, ARKit targets ``[N, 52]`` (float64), and the pair names."""
    xs, ys, names = [], [], []
    for name, fp, ap in tqdm(find_pairs(folder), desc="reading pairs", unit="pair", disable=not progress):
        fv, ffps = _read_clip_npz(fp, ("flame58",))
        av, afps = _read_clip_npz(ap, ("arkit52", "livelink61"))
        if len(fv) != len(av):
            raise InputError(f"has {len(fv)} frames but its partner {ap.name} has {len(av)}", fp)
        if abs(ffps - afps) > 1e-6:
            raise InputError(f"is at {ffps} fps but its partner {ap.name} is at {afps} fps", fp)
        if len(fv) == 0:
            raise InputError("has no frames", fp)
        xs.append(fv[:, FLAME_EXPRESSION])
        ys.append(av[:, :ARKIT52_DIM])
        names.append(name)
    return np.concatenate(xs), np.concatenate(ys), names


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge: ``x [N, E]``, ``y [N, K]`` -> ``weight [E, K]``, ``bias [K]`` (bias not penalised)."""
    n, e = x.shape
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)  # [N, E+1]
    reg = alpha * n * np.eye(e + 1)
    reg[e, e] = 0.0
    wb = np.linalg.solve(xb.T @ xb + reg, xb.T @ y)  # [E+1, K]
    return wb[:e], wb[e]


def fit_bounded(
    x: np.ndarray,
    y: np.ndarray,
    alpha: float = 1e-3,
    max_weight: float = 10.0,
    max_iter: int = 10,
    curve_names: tuple[str, ...] | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Censored least squares of ``clip(x w + b, 0, 1) ~ y`` per curve; same shapes as :func:`fit_ridge`."""
    n, e = x.shape
    k = y.shape[1]
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)  # [N, E+1]
    penalty = np.sqrt(alpha * n) * np.eye(e + 1)[:e]  # [E, E+1]: ridge rows, bias column unpenalised
    lb, ub = -max_weight * np.ones(e + 1), max_weight * np.ones(e + 1)
    weight, bias = np.zeros((e, k)), np.zeros(k)
    names = curve_names or tuple(str(i) for i in range(k))
    bar = tqdm(range(k), desc="fitting curves", unit="curve", disable=not progress)
    for j in bar:
        bar.set_postfix_str(names[j])
        t = y[:, j]
        active = np.ones(n, dtype=bool)
        w = np.zeros(e + 1)
        for _ in range(max_iter):
            a = np.concatenate([xb[active], penalty])
            rhs = np.concatenate([t[active], np.zeros(e)])
            w = lsq_linear(a, rhs, bounds=(lb, ub), method="bvls" if e < 64 else "trf").x
            pred = xb @ w
            new_active = ~(((t <= 0.0) & (pred <= 0.0)) | ((t >= 1.0) & (pred >= 1.0)))
            if not new_active.any():  # every frame already exact after clipping
                break
            if np.array_equal(new_active, active):
                break
            active = new_active
        weight[:, j], bias[j] = w[:e], w[e]
    return weight, bias


def fit_arkit_map(
    pairs: str | Path,
    method: str = "ridge",
    alpha: float = 1e-3,
    curves: tuple[str, ...] = LEARNED_CURVES,
    progress: bool = True,
) -> ArkitMap:
    """Fit an :class:`ArkitMap` from a folder of pairs (see the module docstring)."""
    if method not in ("ridge", "bounded"):
        raise InputError(f"unknown fit method {method!r}; use 'ridge' or 'bounded'")
    if not (np.isfinite(alpha) and alpha >= 0):
        raise InputError(f"alpha must be >= 0, got {alpha}")
    x, y_all, names = load_pairs(pairs, progress=progress)
    unknown = [c for c in curves if c not in ARKIT_INDEX]
    if unknown:
        raise InputError(f"unknown ARKit curves {unknown}")
    y = y_all[:, [ARKIT_INDEX[c] for c in curves]]
    if method == "ridge":
        weight, bias = fit_ridge(x, y, alpha)
    else:
        weight, bias = fit_bounded(x, y, alpha, curve_names=curves, progress=progress)
    pred = np.clip(x @ weight + bias, 0.0, 1.0)
    rmse_per_curve = np.sqrt(np.mean((pred - y) ** 2, axis=0))
    provenance = {
        "source": str(Path(pairs).resolve()),
        "pairs": len(names),
        "frames": int(len(x)),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "method": method,
        "alpha": alpha,
        "fit_rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "fit_rmse_per_curve": {c: round(float(r), 6) for c, r in zip(curves, rmse_per_curve, strict=True)},
    }
    return ArkitMap(weight.astype(np.float32), bias.astype(np.float32), tuple(curves), provenance)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m a2llm_rt.face_tools.fit_arkit_map", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--pairs", required=True, help=f"folder of <name>{FLAME_SUFFIX} + <name>{ARKIT_SUFFIX} pairs")
    p.add_argument("--out", required=True, help="output .npz for the ArkitMap")
    p.add_argument("--method", choices=("ridge", "bounded"), default="ridge")
    p.add_argument("--alpha", type=float, default=1e-3, help="ridge penalty on the weights (default 1e-3)")
    args = p.parse_args(argv)
    amap = fit_arkit_map(args.pairs, args.method, args.alpha)
    amap.save(args.out)
    prov = amap.provenance
    print(
        f"fitted {len(amap.curves)} curves from {prov['pairs']} pairs ({prov['frames']} frames), "
        f"method {prov['method']}, RMSE {prov['fit_rmse']:.4f} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
