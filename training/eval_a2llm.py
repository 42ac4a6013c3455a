"""Evaluate an A2-LLM stage on held-out FLAME-QA samples: motion-token accuracy against chance, and the sync metrics
(Peak Align, Temporal Correlation, ...) of the decoded motion against the reference motion.

``python -m training.eval_a2llm --config RECIPE.yaml --stage 3 --data VAL_DIR [--mesh ARKIT_MESH_DIR] [--json F]``

Per sample: the backbone runs teacher-forced over the sample's true token sequence (the answer's text and audio codes
are given, as the engine's decode loop would have produced them); the connector then runs *free*, window by window,
each window's memory being its own previous greedy prediction (:meth:`MotionConnector.step`, as in the engine); the
motion tokenizer decodes the codes to frames; the frames become mesh vertices (the ARKit mesh with ``--mesh``, else a
small proxy mesh whose mouth opening is ``jawOpen``) and :func:`~a2llm_rt.face.motion_metrics.compute_metrics`
compares them with the reference motion. Also reported: teacher-forced token accuracy, the majority-code and uniform
chance levels (from the training set), and the tokenizer's own ceiling (decoded reference codes vs reference).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import ARKIT_INDEX
from a2llm_rt.face.motion_metrics import compute_metrics
from a2llm_rt.face.regions import FaceRegions
from a2llm_rt.models.connector import sample_codes
from a2llm_rt.utils.fileio import atomic_write_json
from training.data.builders import collate
from training.train_a2llm import A2LLMRecipe, load_built, load_stage_model, make_builder


class ProxyMesh:
    """A 6-vertex stand-in mesh (metres) for metrics without a real one: the lower lip drops 30 mm at ``jawOpen`` 1,
    lip corners move with the smile curves; upper-face vertices follow the brows."""

    def __init__(self) -> None:
        self.regions = FaceRegions(
            lips=[0, 1, 2, 3], face=[0, 1, 2, 3, 4, 5], upper_face=[4, 5], mouth_upper=[0], mouth_lower=[1],
            lip_corners=[2, 3], unit_to_mm=1000.0,
        )  # fmt: skip

    def vertices(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, np.float64)
        t = w.shape[0]
        v = np.zeros((t, 6, 3))
        v[:, 1, 1] = -0.004 - 0.03 * w[:, ARKIT_INDEX["jawOpen"]]
        v[:, 2, 0] = -0.025 - 0.01 * w[:, ARKIT_INDEX["mouthSmileLeft"]]
        v[:, 3, 0] = 0.025 + 0.01 * w[:, ARKIT_INDEX["mouthSmileRight"]]
        v[:, 4, 1] = 0.06 + 0.01 * w[:, ARKIT_INDEX["browInnerUp"]]
        v[:, 5, 1] = 0.06 + 0.01 * w[:, ARKIT_INDEX["browOuterUpLeft"]]
        return v


def load_mesh(mesh_dir: str | None):
    """(object with ``vertices(w [T, 52]) -> [T, V, 3]``, FaceRegions)."""
    if not mesh_dir:
        m = ProxyMesh()
        return m, m.regions
    from a2llm_rt.face.arkit_regions import load_arkit_regions

    return load_arkit_regions(mesh_dir)


@torch.no_grad()
def free_run_codes(model, hidden: torch.Tensor) -> torch.Tensor:
    """Greedy window-by-window connector decoding: hidden ``[1, T, d]`` -> codes ``[1, T/G, N_q]``."""
    conn = model.connector
    w = conn.cfg.window
    prev = None
    out = []
    for s in range(0, hidden.shape[1], w):
        logits = conn.step(hidden[:, s : s + w], prev)
        codes = sample_codes(logits)
        out.append(codes)
        prev = codes
    return torch.cat(out, 1)


def chance_levels(train_codes: list[torch.Tensor], k: int) -> dict:
    allc = torch.cat(train_codes, 0)  # [N, N_q]
    majority = [float(torch.bincount(allc[:, q], minlength=k).max()) / len(allc) for q in range(allc.shape[1])]
    return {
        "chance_uniform": 1.0 / k,
        "chance_majority_per_level": majority,
        "chance_majority": float(np.mean(majority)),
    }


@torch.no_grad()
def evaluate(recipe: A2LLMRecipe, stage: int, data: str, mesh_dir: str | None = None, limit: int | None = None) -> dict:
    from training.train_tokenizer import load_tokenizer

    out = Path(recipe.out)
    model, tok = load_stage_model(recipe, out, stage)
    model.eval()
    builder = make_builder(recipe, model.backbone, tok)
    if not recipe.model.motion_tokenizer:
        raise InputError("the recipe names no motion_tokenizer: cannot decode motion")
    mtok = load_tokenizer(recipe.model.motion_tokenizer)
    samples = load_built(data, builder)
    if limit:
        samples = samples[:limit]
    mesh, regions = load_mesh(mesh_dir)
    g = recipe.model.connector.group
    pad = builder.layout.pad if builder.layout.pad is not None else 0
    tf_hits = fr_hits = n_tok = 0
    per: list[dict] = []
    ceiling: list[dict] = []
    for s in samples:
        if s.motion_codes is None or len(s.audio_positions) == 0:
            continue
        batch = collate([s], pad, g)
        _, hidden = model.hidden_and_logits(batch)
        sel = hidden[:, s.audio_positions]  # [1, T, d]
        codes = s.motion_codes[None]
        tf = model.connector(sel, codes).argmax(-1)
        fr = free_run_codes(model, sel)
        tf_hits += int((tf == codes).sum())
        fr_hits += int((fr == codes).sum())
        n_tok += codes.numel()
        ref = s.motion.numpy()
        pred = mtok.decode(fr)[0].numpy()[: len(ref)]
        rec = mtok.decode(codes)[0].numpy()[: len(ref)]
        if s.motion.shape[1] != 52:
            raise InputError("eval_a2llm's meshes are ARKit: motion must be arkit52")
        vref = mesh.vertices(ref)
        per.append(compute_metrics(mesh.vertices(pred), vref, regions, 25.0).to_dict())
        ceiling.append(compute_metrics(mesh.vertices(rec), vref, regions, 25.0).to_dict())
    if not per:
        raise InputError("no held-out samples with motion", data)
    train_codes = [b.motion_codes for b in load_built(recipe.train_data, builder) if b.motion_codes is not None]

    def agg(rows: list[dict], key: str) -> float:
        vals = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
        return float(np.mean(vals)) if vals else float("nan")

    keys = ("peak_align_ms", "temporal_corr", "velocity_corr", "mod_mm", "lve_mm", "liveliness_ratio")
    res = {
        "stage": stage,
        "samples": len(per),
        "motion_tokens": n_tok,
        "token_acc_teacher_forced": tf_hits / n_tok,
        "token_acc_free_running": fr_hits / n_tok,
        **chance_levels(train_codes, recipe.model.connector.codebook_size),
        **{k: agg(per, k) for k in keys},
        "peak_align_ms_median": float(np.median([r["peak_align_ms"] for r in per if r["peak_align_ms"] is not None])),
        "tokenizer_ceiling": {k: agg(ceiling, k) for k in keys},
        "mesh": mesh_dir or "proxy",
    }
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.eval_a2llm", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--stage", type=int, default=3, choices=(1, 2, 3))
    ap.add_argument("--data", default=None, help="held-out FLAME-QA directory (default: the recipe's val_data)")
    ap.add_argument("--out", default=None, help="override the recipe's run folder")
    ap.add_argument("--mesh", default=None, help="ARKit mesh folder (Neutral.obj + shapes); default: a proxy mesh")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        recipe = A2LLMRecipe.from_file(args.config)
        if args.out:
            import dataclasses

            recipe = dataclasses.replace(recipe, out=args.out)
        data = args.data or recipe.val_data
        if not data:
            raise InputError("no --data and no val_data in the recipe", args.config)
        res = evaluate(recipe, args.stage, data, args.mesh, args.limit)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = res["tokenizer_ceiling"]
    print(f"stage {res['stage']} on {res['samples']} held-out samples ({res['motion_tokens']} motion tokens)")
    print(f"  motion-token accuracy: teacher-forced {res['token_acc_teacher_forced']:.3f}, free-running "
          f"{res['token_acc_free_running']:.3f}; chance: majority {res['chance_majority']:.3f}, "
          f"uniform {res['chance_uniform']:.3f}")  # fmt: skip
    print(f"  Peak Align {res['peak_align_ms']:.1f} ms (median {res['peak_align_ms_median']:.0f}), "
          f"Temporal Correlation "
          f"{res['temporal_corr']:.3f}, Velocity Correlation {res['velocity_corr']:.3f}, MOD {res['mod_mm']:.2f} mm, "
          f"LVE {res['lve_mm']:.2f} mm  [mesh: {res['mesh']}]")  # fmt: skip
    print(f"  tokenizer ceiling (decoded reference codes): Peak Align {c['peak_align_ms']:.1f} ms, Temporal "
          f"Correlation {c['temporal_corr']:.3f}")  # fmt: skip
    if args.json:
        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
