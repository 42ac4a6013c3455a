"""Evaluate an A2-LLM stage on held-out FLAME-QA samples: the paper's protocol (§6.3), and a teacher-forced diagnostic.

``python -m training.eval_a2llm --config RECIPE.yaml --stage 3 [--data VAL_DIR] [--protocol free|teacher-forced|both]
[--oracle precomputed:DIR] [--gen-dir DIR] [--mesh ARKIT_MESH_DIR | --flame FLAME.npz] [--json F]``

**Free generation (the paper's protocol, ``--protocol free``, the default).** The model answers each held-out
spoken question on its own through the engine (:mod:`training.free_generation`): its own text, its own speech, its own
face. Its speech is the audio: the face is measured

- reference-free with UFD (eq. 12), which needs no reference at all, and
- against a *pseudo-oracle* (:mod:`training.pseudo_oracle`): the face an audio-driven model the user names computed
  from the same generated speech (DiffPoseTalk in the paper; not bundled). ``--gen-dir`` keeps each answer's
  ``{key}.wav`` for that model; ``--oracle precomputed:DIR`` reads its results ``DIR/{key}.npz``. The metrics are
  MOD (eq. 11), UFD of both, and Temporal / Velocity / Lip Width Correlation, Liveliness Ratio and Peak Align
  (eq. 13-17), reported as mean and standard deviation over samples as in the paper's Tables 3 and 4. Without
  ``--oracle`` only the reference-free part is reported (and the wavs written, when ``--gen-dir`` is given).

**Teacher-forced diagnostic (``--protocol teacher-forced``; ours, not the paper's).** The backbone runs over the
sample's *true* answer tokens; the connector then runs free, window by window (:meth:`MotionConnector.step`, as in
the engine), and its decoded motion is compared with the recorded motion. Reported under ``teacher_forced_diagnostic``:
token accuracy (teacher-forced and free-running connector) against the majority-code and uniform chance levels, the
same metrics against the recorded face, and the tokenizer's own ceiling (decoded reference codes). It isolates the
connector from the backbone's generation; its numbers are not comparable with the paper's tables.

Meshes: ARKit motion on the ARKit mesh (``--mesh``; without it a small proxy mesh whose mouth opening is ``jawOpen``),
FLAME58 motion on your FLAME model (``--flame``), both in canonical zero pose (App. C).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.audio import FACE_FPS
from a2llm_rt.engine.sampling import sample_codes
from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import ARKIT_INDEX
from a2llm_rt.face.motion_metrics import compute_metrics, reference_free_ufd
from a2llm_rt.face.regions import FaceRegions
from a2llm_rt.utils.cli import cli_main
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


def metric_mesh_for(layout: str, mesh_dir: str | None = None, flame: str | None = None):
    """The :class:`~a2llm_rt.face_tools.metrics.MetricMesh` of a motion layout: FLAME (``flame``), the ARKit mesh
    (``mesh_dir``) or, for ARKit motion without a mesh, the proxy mesh."""
    from a2llm_rt.face_tools.metrics import MetricMesh, metric_mesh

    if layout == "flame58":
        return metric_mesh("flame", flame=flame)
    if mesh_dir:
        return metric_mesh("arkit", mesh=mesh_dir)
    proxy = ProxyMesh()
    return MetricMesh("proxy", proxy.regions, proxy.vertices(np.zeros((1, 52)))[0], proxy.vertices, "arkit52")


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


PAPER_KEYS = ("mod_mm", "ufd", "temporal_corr", "velocity_corr", "lip_width_corr", "liveliness_ratio", "peak_align_ms")
EXTRA_KEYS = ("ufd_ref", "lve_mm", "xcorr_lag_ms")


def _finite(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]


def mean_std(rows: list[dict], keys: Sequence[str]) -> dict:
    """``{key: {"mean", "std", "n"}}`` over the rows' finite values (NaN/None skipped; ``n`` says how many counted)."""
    out = {}
    for k in keys:
        v = _finite(rows, k)
        out[k] = {
            "mean": float(np.mean(v)) if v else float("nan"),
            "std": float(np.std(v)) if v else float("nan"),
            "n": len(v),
        }
    return out


# ---- the paper's protocol: free generation --------------------------------------------------------------------------


def evaluate_free(
    recipe: A2LLMRecipe,
    stage: int,
    data: str,
    *,
    oracle=None,
    gen_dir: str | Path | None = None,
    mesh_dir: str | None = None,
    flame: str | None = None,
    limit: int | None = None,
    vocoder: str = "tone",
    prompt_wav: str | None = None,
    progress: bool = False,
    engine_config=None,
) -> dict:
    """The §6.3 protocol: free generation from held-out questions; UFD (reference-free) and, with a pseudo-oracle,
    the paper's metrics against the oracle's face computed from the generated speech."""
    from a2llm_rt.face.resample import resample
    from training.data.format import read_samples
    from training.free_generation import generate_answers, stage_stack, write_answers

    samples = read_samples(data)
    if limit:
        samples = samples[:limit]
    stack = stage_stack(recipe, stage, vocoder=vocoder, prompt_wav=prompt_wav)
    answers, notes = generate_answers(stack, samples, engine_config=engine_config, seed=recipe.seed, progress=progress)
    if not answers:
        raise InputError("no held-out sample produced an answer with a face (spoken questions needed)", data)
    if gen_dir is not None:
        write_answers(answers, gen_dir)
    layout = answers[0].motion.layout
    own = metric_mesh_for(layout, mesh_dir, flame)
    fps = float(answers[0].motion.fps)
    per_ufd: list[dict] = []
    per_oracle: list[dict] = []
    missing: list[str] = []
    for a in answers:
        v = own.vertices(a.motion)
        per_ufd.append({"key": a.key, "ufd": reference_free_ufd(v, own.regions, own.template) if len(v) > 1 else None})
        if oracle is None:
            continue
        ref = oracle.motion(a.key, a.audio, a.sample_rate)
        if ref is None:
            missing.append(a.key)
            continue
        ref = resample(ref, fps)
        pred = a.motion
        if ref.layout != "flame58" and pred.layout == "flame58":
            from a2llm_rt.face.clip import MotionClip

            pred = MotionClip(a.arkit52, fps, "arkit52")  # compare on the oracle's (ARKit) mesh
        mesh = own if pred.layout == layout else metric_mesh_for(pred.layout, mesh_dir, flame)
        if ref.layout == "flame58" and pred.layout != "flame58":
            raise InputError("the pseudo-oracle gives FLAME58 but the model's motion is ARKit: map one of them first")
        m = compute_metrics(mesh.vertices(pred), mesh.vertices(ref), mesh.regions, fps, template=mesh.template)
        per_oracle.append({"key": a.key, **m.to_dict()})
    if missing:
        notes.append(f"the pseudo-oracle has no motion for {len(missing)} answers (e.g. {missing[0]!r})")
    res: dict = {
        "protocol": "free generation from held-out questions (A2-LLM §6.3)",
        "stage": stage,
        "samples": len(answers),
        "layout": layout,
        "mesh": own.kind,
        "ufd_reference_free": mean_std(per_ufd, ["ufd"])["ufd"],
        "pseudo_oracle": None if oracle is None else getattr(oracle, "name", "pseudo-oracle"),
        "generation_dir": None if gen_dir is None else str(gen_dir),
        "notes": notes,
        "per_sample_ufd": per_ufd,
    }
    if oracle is not None:
        res["vs_pseudo_oracle"] = {
            "samples": len(per_oracle),
            "paper_metrics": mean_std(per_oracle, PAPER_KEYS),
            "extras": mean_std(per_oracle, EXTRA_KEYS),
            "per_sample": per_oracle,
        }
    return res


# ---- diagnostic: teacher-forced backbone, free-running connector ----------------------------------------------------


@torch.no_grad()
def evaluate_teacher_forced(
    recipe: A2LLMRecipe, stage: int, data: str, mesh_dir: str | None = None, limit: int | None = None
) -> dict:
    """The teacher-forced diagnostic (ours, not the paper's protocol; see the module docstring)."""
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
    template = mesh.vertices(np.zeros((1, 52)))[0]
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
            raise InputError("the teacher-forced diagnostic's meshes are ARKit: motion must be arkit52")
        vref = mesh.vertices(ref)
        per.append(compute_metrics(mesh.vertices(pred), vref, regions, FACE_FPS, template=template).to_dict())
        ceiling.append(compute_metrics(mesh.vertices(rec), vref, regions, FACE_FPS, template=template).to_dict())
    if not per:
        raise InputError("no held-out samples with motion", data)
    train_codes = [b.motion_codes for b in load_built(recipe.train_data, builder) if b.motion_codes is not None]

    def agg(rows: list[dict], key: str) -> float:
        vals = _finite(rows, key)
        return float(np.mean(vals)) if vals else float("nan")

    keys = (*PAPER_KEYS, *EXTRA_KEYS)
    peaks = _finite(per, "peak_align_ms")
    return {
        "protocol": "teacher-forced diagnostic (true answer tokens, free-running connector; not the paper's)",
        "stage": stage,
        "samples": len(per),
        "motion_tokens": n_tok,
        "token_acc_teacher_forced": tf_hits / n_tok,
        "token_acc_free_running": fr_hits / n_tok,
        **chance_levels(train_codes, recipe.model.connector.codebook_size),
        **{k: agg(per, k) for k in keys},
        "peak_align_ms_median": float(np.median(peaks)) if peaks else float("nan"),
        "tokenizer_ceiling": {k: agg(ceiling, k) for k in keys},
        "mesh": mesh_dir or "proxy",
    }


def _fmt(d: dict) -> str:
    return "nan" if not math.isfinite(d["mean"]) else f"{d['mean']:.3f} ± {d['std']:.3f} (n {d['n']})"


def print_free(res: dict) -> None:
    print(f"stage {res['stage']}, {res['protocol']}: {res['samples']} answers ({res['layout']}, mesh {res['mesh']})")
    print(f"  UFD (eq. 12, reference-free): {_fmt(res['ufd_reference_free'])}")
    vs = res.get("vs_pseudo_oracle")
    if vs is None:
        print("  no pseudo-oracle given (--oracle): only the reference-free UFD"
              + (f"; run your audio-driven model on the wavs in {res['generation_dir']}" if res["generation_dir"]
                 else ""))  # fmt: skip
    else:
        print(f"  against the pseudo-oracle {res['pseudo_oracle']!r} ({vs['samples']} answers):")
        for k, v in {**vs["paper_metrics"], **vs["extras"]}.items():
            print(f"    {k:<18} {_fmt(v)}")
    for n in res["notes"]:
        print(f"  note: {n}")


def print_teacher_forced(res: dict) -> None:
    c = res["tokenizer_ceiling"]
    print(f"stage {res['stage']}, {res['protocol']}: {res['samples']} samples ({res['motion_tokens']} motion tokens)")
    print(f"  motion-token accuracy: teacher-forced {res['token_acc_teacher_forced']:.3f}, free-running "
          f"{res['token_acc_free_running']:.3f}; chance: majority {res['chance_majority']:.3f}, "
          f"uniform {res['chance_uniform']:.3f}")  # fmt: skip
    print(f"  vs the recorded face: Peak Align {res['peak_align_ms']:.1f} ms "
          f"(median {res['peak_align_ms_median']:.0f}), Temporal Correlation {res['temporal_corr']:.3f}, "
          f"Velocity Correlation {res['velocity_corr']:.3f}, "
          f"MOD {res['mod_mm']:.2f} mm, LVE {res['lve_mm']:.2f} mm  [mesh: {res['mesh']}]")  # fmt: skip
    print(f"  tokenizer ceiling (decoded reference codes): Peak Align {c['peak_align_ms']:.1f} ms, Temporal "
          f"Correlation {c['temporal_corr']:.3f}")  # fmt: skip


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.eval_a2llm", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--stage", type=int, default=3, choices=(1, 2, 3))
    ap.add_argument("--data", default=None, help="held-out FLAME-QA directory (default: the recipe's val_data)")
    ap.add_argument("--out", default=None, help="override the recipe's run folder")
    ap.add_argument("--protocol", default="free", choices=("free", "teacher-forced", "both"),
                    help="free: the paper's §6.3 protocol (default); teacher-forced: our diagnostic")  # fmt: skip
    ap.add_argument(
        "--oracle",
        default=None,
        help="pseudo-oracle: precomputed:DIR (DIR/{key}.npz from your audio-driven model) or module:attr",
    )
    ap.add_argument("--oracle-name", default=None, help="what the pseudo-oracle is (e.g. DiffPoseTalk), for the report")
    ap.add_argument("--gen-dir", default=None, help="keep each generated answer here ({key}.wav/.npz/.txt)")
    ap.add_argument("--mesh", default=None, help="ARKit mesh folder (Neutral.obj + shapes); default: a proxy mesh")
    ap.add_argument("--flame", default=None, help="FLAME model .npz (for FLAME58 motion)")
    ap.add_argument("--vocoder", default="tone", help="tone (test) or a token2wav directory (with --prompt-wav)")
    ap.add_argument("--prompt-wav", default=None)
    ap.add_argument("--max-seconds", type=float, default=30.0, help="longest generated answer (engine limit)")
    ap.add_argument("--min-seconds", type=float, default=0.0, help="shortest generated answer (engine limit; 0: none)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    recipe = A2LLMRecipe.from_file(args.config)
    if args.out:
        import dataclasses

        recipe = dataclasses.replace(recipe, out=args.out)
    data = args.data or recipe.val_data
    if not data:
        raise InputError("no --data and no val_data in the recipe", args.config)
    res: dict = {}
    if args.protocol in ("free", "both"):
        from a2llm_rt.engine.engine import EngineConfig
        from training.pseudo_oracle import load_oracle

        oracle = load_oracle(args.oracle, args.oracle_name) if args.oracle else None
        lo, hi = args.min_seconds, args.max_seconds
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > 0 and 0 <= lo <= hi):
            raise InputError(f"need 0 <= --min-seconds ({lo}) <= --max-seconds ({hi}) and --max-seconds > 0")
        res["free_generation"] = evaluate_free(
            recipe, args.stage, data, oracle=oracle, gen_dir=args.gen_dir, mesh_dir=args.mesh, flame=args.flame,
            limit=args.limit, vocoder=args.vocoder, prompt_wav=args.prompt_wav, progress=True,
            engine_config=EngineConfig(max_sessions=1, max_seconds=args.max_seconds, min_seconds=args.min_seconds),
        )  # fmt: skip
        print_free(res["free_generation"])
    if args.protocol in ("teacher-forced", "both"):
        res["teacher_forced_diagnostic"] = evaluate_teacher_forced(recipe, args.stage, data, args.mesh, args.limit)
        print_teacher_forced(res["teacher_forced_diagnostic"])
    if args.json:
        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
