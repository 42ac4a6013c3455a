"""Evaluate a trained motion tokenizer: reconstruct clips through encode -> decode and measure the error.

    python -m training.eval_tokenizer --ckpt runs/tok_arkit_rom \
        --data ../shared/data/arkit_capture/livelinkface_rom_3.csv --holdout 0.2 --json runs/tok_arkit_rom/eval.json

Reports per-curve MAE, mean MAE, the maximum absolute error (curve, file, frame), codebook usage and perplexity,
and, with ``--face-model`` (a converted FLAME ``.npz`` for a flame58 tokenizer, the ARKit mesh folder for an
arkit52 one), the mesh-space MOD and LVE between input and reconstruction. Writes a plot of input vs reconstruction
for the worst curves (``--plot``, default beside ``--json``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.io import convert_layout, load_clip
from a2llm_rt.face.layouts import FLAME58, get_layout
from a2llm_rt.face.resample import resample
from a2llm_rt.models.motion_tokenizer import MotionTokenizer
from a2llm_rt.quantization.base import code_histogram
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_write_json
from training.motion_data import expand_paths, split_tail
from training.train_tokenizer import load_tokenizer


@dataclass
class Reconstruction:
    """One file's reference and reconstructed frames ``[T, D]`` (T a multiple of G) and codes ``[T/G, N_q]``."""

    path: Path
    ref: np.ndarray
    recon: np.ndarray
    codes: np.ndarray
    dropped_frames: int


def load_for_model(path: Path, model: MotionTokenizer) -> np.ndarray:
    """Frames of ``path`` in the tokenizer's layout and frame rate; InputError when they cannot match it."""
    cfg = model.cfg
    clip = load_clip(path)
    if clip.layout != cfg.layout and FLAME58.name in (clip.layout, cfg.layout):
        raise InputError(
            f"the clip is {clip.layout} ({clip.values.shape[1]} curves) but the tokenizer takes {cfg.layout} "
            f"({get_layout(cfg.layout).dim} curves)",
            path,
        )
    clip = resample(convert_layout(clip, cfg.layout), cfg.fps)
    return clip.values


@torch.no_grad()
def reconstruct(model: MotionTokenizer, path: Path, values: np.ndarray) -> Reconstruction:
    """Encode and decode ``values`` ``[T, D]`` (cut to whole tokens)."""
    g = model.group
    if values.ndim != 2 or values.shape[1] != model.dim:
        raise InputError(f"frames must be [T, {model.dim}] for this tokenizer, got {list(values.shape)}", path)
    if len(values) < g:
        raise InputError(f"too short: {len(values)} frames; the tokenizer needs at least G={g} frames", path)
    if not np.isfinite(values).all():
        t = int(np.argwhere(~np.isfinite(values))[0][0])
        raise InputError(f"non-finite value in frame {t}", path)
    n = len(values) // g * g
    dev = model.motion_mean.device
    x = torch.as_tensor(values[:n], device=dev)[None]
    codes = model.encode(x)
    recon = model.decode(codes)[0].cpu().numpy()
    return Reconstruction(path, values[:n], recon, codes[0].cpu().numpy(), len(values) - n)


def vertex_metrics(model: MotionTokenizer, recs: list[Reconstruction], face_model: str | Path) -> dict:
    """Mesh-space MOD (eq. 11) / LVE (mm) and UFD (eq. 12) of reconstruction and reference, frame-weighted over
    files, through the face model of the tokenizer's layout."""
    from a2llm_rt.face.motion_metrics import compute_metrics
    from a2llm_rt.models.motion_losses import build_face_model

    fn, regions = build_face_model(model.cfg.layout, face_model)  # FLAME: canonical zero pose (App. C)
    per_file = {}
    tot = {"mod_mm": 0.0, "lve_mm": 0.0, "ufd": 0.0, "ufd_ref": 0.0}
    frames = 0
    with torch.no_grad():
        template = fn(torch.zeros(1, model.cfg.motion_dim)).double().numpy()[0]  # the neutral face (UFD's V_neu)
        for r in recs:
            vp = fn(torch.as_tensor(r.recon)).double().numpy()
            vr = fn(torch.as_tensor(r.ref)).double().numpy()
            m = compute_metrics(vp, vr, regions, model.cfg.fps, template=template)
            per_file[str(r.path)] = {k: getattr(m, k) for k in tot}
            for k in tot:
                tot[k] += getattr(m, k) * len(r.ref)
            frames += len(r.ref)
    return {"space": model.cfg.layout, **{k: v / frames for k, v in tot.items()}, "per_file": per_file}


def evaluate(
    ckpt: str | Path,
    data: list[str | Path],
    *,
    holdout: float = 0.0,
    face_model: str | Path | None = None,
    plot: str | Path | None = None,
    worst: int = 4,
    device: str = "cpu",
) -> dict:
    """The report dict (see the module docstring)."""
    if not 0 <= holdout < 1:
        raise InputError(f"--holdout must be in [0, 1), got {holdout}")
    model = load_tokenizer(ckpt, device)
    names = get_layout(model.cfg.layout).names
    recs = []
    for p in expand_paths(list(data)):
        values = load_for_model(p, model)
        if holdout > 0:
            values = split_tail(values, holdout)[1]
        recs.append(reconstruct(model, p, values))
    err = [np.abs(r.recon - r.ref) for r in recs]
    all_err = np.concatenate(err, 0)  # [N, D]
    per_curve = all_err.mean(0)
    order = np.argsort(per_curve)[::-1]
    f_idx, (t, d) = max(
        ((i, np.unravel_index(int(e.argmax()), e.shape)) for i, e in enumerate(err)), key=lambda x: err[x[0]][x[1]]
    )
    codes = torch.as_tensor(np.concatenate([r.codes for r in recs], 0))
    counts = code_histogram(codes, model.cfg.codebook_size)
    p = counts / counts.sum(-1, keepdim=True)
    ppl = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(-1))
    report: dict = {
        "checkpoint": str(ckpt),
        "layout": model.cfg.layout,
        "files": [str(r.path) for r in recs],
        "holdout": holdout,
        "frames": int(all_err.shape[0]),
        "dropped_frames": int(sum(r.dropped_frames for r in recs)),
        "mean_mae": float(per_curve.mean()),
        "per_curve_mae": {names[i]: float(per_curve[i]) for i in range(len(names))},
        "worst_curves": [[names[i], float(per_curve[i])] for i in order[:worst]],
        "max_error": {
            "value": float(err[f_idx][t, d]),
            "curve": names[d],
            "file": str(recs[f_idx].path),
            "frame": int(t),
        },  # fmt: skip
        "codebook_usage": (counts > 0).float().mean(-1).tolist(),
        "codebook_perplexity": ppl.tolist(),
        "vertex_metrics": vertex_metrics(model, recs, face_model) if face_model else None,
    }
    if plot is not None:
        from a2llm_rt.face_tools.plot import plot_curves

        r = recs[0]
        fps = model.cfg.fps
        meta = {"source": str(r.path)}
        clips = [MotionClip(r.ref, fps, model.cfg.layout, meta), MotionClip(r.recon, fps, model.cfg.layout, meta)]
        curves = [names[i] for i in order[:worst]]
        plot_curves(clips, curves, plot, labels=["input", "reconstruction"], title=f"{r.path.name}: worst curves")
        report["plot"] = str(plot)
    return report


def format_report(rep: dict) -> str:
    lines = [
        f"tokenizer {rep['checkpoint']} ({rep['layout']}), {rep['frames']} frames from {len(rep['files'])} file(s)"
        + (f", held-out tail {rep['holdout']:.0%}" if rep["holdout"] else ""),
        f"mean MAE      {rep['mean_mae']:.4f}",
        "worst curves  " + ", ".join(f"{n} {v:.4f}" for n, v in rep["worst_curves"]),
        "max error     {value:.4f} ({curve}, frame {frame})".format(**rep["max_error"]),
        "usage         " + " ".join(f"{u:.2f}" for u in rep["codebook_usage"]),
        "perplexity    " + " ".join(f"{u:.1f}" for u in rep["codebook_perplexity"]),
    ]
    vm = rep.get("vertex_metrics")
    if vm:
        lines.append(f"{vm['space']} mesh  MOD {vm['mod_mm']:.3f} mm, LVE {vm['lve_mm']:.3f} mm, "
                     f"UFD {vm['ufd']:.3f} (reference {vm['ufd_ref']:.3f})")  # fmt: skip
    if rep.get("plot"):
        lines.append(f"plot          {rep['plot']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.eval_tokenizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="checkpoint folder, or a training output folder (its latest)")
    p.add_argument("--data", nargs="+", required=True, help="clip files (.npz, .csv, .json) or folders of them")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--holdout", type=float, default=0.0, help="evaluate only this tail fraction of every clip")
    p.add_argument("--face-model", default=None, help="FLAME .npz (flame58) or ARKit mesh folder (arkit52)")
    p.add_argument("--plot", default=None, help="PNG of the worst curves (default: beside --json)")
    p.add_argument("--worst", type=int, default=4, help="how many worst curves to list and plot")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plot = args.plot
    if plot is None and args.json is not None:
        plot = str(Path(args.json).with_suffix(".png"))
    rep = evaluate(
        args.ckpt,
        args.data,
        holdout=args.holdout,
        face_model=args.face_model,
        plot=plot,
        worst=args.worst,
        device=args.device,
    )
    print(format_report(rep))
    if args.json:
        atomic_write_json(args.json, rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
