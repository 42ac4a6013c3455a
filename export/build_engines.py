"""Export the motion stack to verified ONNX (and TensorRT when available) with a manifest.

    python -m export.build_engines --motion DIR|tiny --out ENGINES/ [--precision fp32|fp16|bf16] [--window W]
        [--max-batch B] [--int8] [--int8-scheme weight_only|dynamic] [--trt] [--d-llm N] [--seed S]

Steps: export the connector step and the RVQ decoder step graphs (``export/onnx_export.py``), verify each with
onnxruntime against PyTorch on fresh random inputs at batch 1 and 3 (``export/parity.py``), optionally quantize the
connector to int8 and measure its greedy-code agreement (``--int8``; the schemes are described in
``export/quantize.py``), build TensorRT engines when TensorRT and a GPU are present (``export/trt_build.py``) and
re-verify them, then write ``manifest.json`` (``export/manifest.py``).

``--motion`` is a motion directory (``tokenizer/`` and ``connector/`` with ``config.json`` + ``model.safetensors``, read
by :func:`a2llm_rt.engine.builders.load_motion_dir`) or ``tiny``: the test-sized models of
:func:`a2llm_rt.engine.builders.tiny_motion_models`, the very weights of the engine's ``tiny`` motion stack (same
``--seed``, default 0; ``--d-llm`` sizes the connector for a real backbone, as ``load_stack(DIR, "tiny")`` does).
Exit codes: 0 done (also when TensorRT is absent and ``--trt`` was not asked), 1 a parity check failed or ``--trt``
was asked but TensorRT could not run, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from a2llm_rt.engine.builders import TINY_BACKBONE, TINY_CONNECTOR, load_motion_dir, tiny_motion_models
from a2llm_rt.errors import InputError
from a2llm_rt.models.connector import MotionConnector
from a2llm_rt.models.motion_tokenizer import MotionTokenizer
from a2llm_rt.utils.cli import cli_main
from export import onnx_export as ox
from export.manifest import artifact_entry, write_manifest
from export.parity import connector_parity, decoder_parity, greedy_code_agreement, ort_runner

FILES = {
    "connector_onnx": "connector_step.onnx",
    "decoder_onnx": "decoder_step.onnx",
    "connector_int8_onnx": "connector_step.int8.onnx",
    "connector_trt": "connector_step.plan",
    "decoder_trt": "decoder_step.plan",
}


def load_models(
    spec: str, window: int | None, d_llm: int | None = None, seed: int = 0
) -> tuple[MotionConnector, MotionTokenizer]:
    """The motion models ``--motion`` names: ``tiny`` (:func:`~a2llm_rt.engine.builders.tiny_motion_models`, the same
    weights as the engine's tiny stack for the same ``seed``, sized to a backbone of width ``d_llm``, default the tiny
    backbone's) or a motion directory (:func:`~a2llm_rt.engine.builders.load_motion_dir`)."""
    if spec == "tiny":
        try:
            return tiny_motion_models(seed, d_llm or TINY_BACKBONE.hidden_size, window or TINY_CONNECTOR.window)
        except ValueError as e:
            raise InputError(f"bad tiny model settings: {e}") from None
    if d_llm is not None:
        raise InputError("--d-llm sizes the tiny models only (a motion directory's connector has its own)")
    connector, motion, _ = load_motion_dir(spec)
    if window is not None and window != connector.cfg.window:
        raise InputError(f"--window {window} differs from the connector's trained window {connector.cfg.window} "
                         "(its query positions are sized W/G)", Path(spec) / "connector" / "config.json")  # fmt: skip
    return connector.float(), motion.float()


def _check_models(connector: MotionConnector, motion: MotionTokenizer) -> None:
    c, m = connector.cfg, motion.cfg
    if (c.n_q, c.codebook_size, c.group) != (m.num_quantizers, m.codebook_size, m.group):
        raise InputError(f"connector (N_q {c.n_q}, K {c.codebook_size}, G {c.group}) does not match the motion "
                         f"tokenizer (N_q {m.num_quantizers}, K {m.codebook_size}, G {m.group})")  # fmt: skip


def build(
    connector: MotionConnector,
    motion: MotionTokenizer,
    out: str | Path,
    precision: str = "fp32",
    max_batch: int = 8,
    int8: bool = False,
    trt: bool | None = None,
    log=print,
    int8_scheme: str = "weight_only",
) -> dict[str, Any]:
    """Export, verify, (quantize, build TensorRT) and write the manifest into ``out``; returns the manifest.

    ``int8_scheme``: ``weight_only`` (default) or ``dynamic``, see :mod:`export.quantize`.

    ``trt``: True = required, None = when available, False = never. The manifest's ``ok`` is False when a parity
    check failed; ``trt.built`` says whether engines were built and why not.
    """
    ox.check_precision(precision)
    _check_models(connector, motion)
    connector, motion = connector.eval(), motion.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = connector.cfg
    artifacts: dict[str, Any] = {}
    ok = True
    steps = ["connector", "decoder"] + (["int8"] if int8 else []) + (["tensorrt"] if trt is not False else [])
    bar = tqdm(steps, desc="build_engines", unit="step", disable=not sys.stderr.isatty())
    import onnxruntime as ort  # noqa: F401  (fail early if missing)

    from a2llm_rt.engine.motion_backend import ort_session

    def export_graph(key: str, graph: str, export, parity) -> bool:
        """Export one graph to ``FILES[key]``, verify it with onnxruntime and record it; True when it passed."""
        f = FILES[key]
        meta = export(out / f)
        par = _ort_parity(parity, ort_session, out / f)
        artifacts[key] = artifact_entry(
            out, f, "onnx", graph=graph, precision=precision, weights_sha256=meta["a2llm.weights_sha256"], parity=par
        )
        log(f"{graph}.onnx: {_verdict(par)}")
        return bool(par.get("passed"))

    for step in bar:
        bar.set_postfix_str(step)
        if step == "connector":
            ok &= export_graph(
                "connector_onnx",
                "connector_step",
                lambda path: ox.export_connector(connector, path, precision),
                lambda s: connector_parity(connector, ort_runner(s), precision),
            )
        elif step == "decoder":
            ok &= export_graph(
                "decoder_onnx",
                "decoder_step",
                lambda path: ox.export_decoder(motion, path, precision, cfg.window),
                lambda s: decoder_parity(motion, ort_runner(s), precision),
            )
        elif step == "int8":
            from export.quantize import quantize_connector

            with tempfile.TemporaryDirectory(dir=out) as tmp:
                src = out / FILES["connector_onnx"]
                if precision != "fp32":  # quantize from an fp32 graph
                    src = Path(tmp) / "connector_fp32.onnx"
                    ox.export_connector(connector, src, "fp32")
                f = FILES["connector_int8_onnx"]
                meta = quantize_connector(src, out / f, int8_scheme)
            sess = ort_session(out / f)
            agree = greedy_code_agreement(connector, ort_runner(sess))
            par = connector_parity(connector, ort_runner(sess), "int8")
            agree.update(goal=0.99, met=agree["fraction_unchanged"] >= 0.99, logits_max_abs_err=par["max_abs_err"])
            artifacts["connector_int8_onnx"] = artifact_entry(out, f, "onnx", graph="connector_step", precision="int8",
                                                              weights_sha256=meta["a2llm.weights_sha256"],
                                                              quantization=meta["a2llm.quantization"],
                                                              int8_scheme=meta["a2llm.int8_scheme"],
                                                              int8_settings=json.loads(meta["a2llm.int8_settings"]),
                                                              greedy_codes=agree)  # fmt: skip
            verdict = "met" if agree["met"] else "NOT met"
            log(f"connector_step.int8.onnx ({int8_scheme}): {agree['fraction_unchanged']:.2%} of {agree['codes']} "
                f"greedy codes unchanged on fresh inputs (goal >= 99%: {verdict})")  # fmt: skip
    trt_info = _tensorrt(connector, motion, out, precision, max_batch, artifacts, trt, log)
    ok &= trt_info.get("passed", True) is not False
    state = motion.init_decode_state(1).tensors()
    manifest = {
        "ok": ok,
        "precision": precision,
        "window": cfg.window,
        "max_batch": max_batch,
        "versions": {**ox.versions(), "tensorrt": trt_info.get("tensorrt")},
        "connector": cfg.to_dict(),
        "tokenizer": motion.cfg.to_dict(),
        "decoder_state": list(state),
        "decoder_state_shapes": {k: list(v.shape[1:]) for k, v in state.items()},
        "decoder_state_dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()},
        "artifacts": artifacts,
        "trt": trt_info,
    }
    write_manifest(out, manifest)
    return manifest


def _ort_parity(check, session_fn, path: Path) -> dict[str, Any]:
    """Run ``check(session)``; a graph onnxruntime cannot load or run (e.g. no bf16 CPU kernel) is reported, not
    hidden: ``passed`` is False with the error."""
    try:
        return check(session_fn(path))
    except Exception as e:  # onnxruntime raises its own exception types
        return {"passed": False, "error": f"onnxruntime could not run the graph: {type(e).__name__}: {e}"[:500]}


def _verdict(par: dict[str, Any]) -> str:
    if "error" in par:
        return f"NOT VERIFIED ({par['error']})"
    s = f"max abs error {par['max_abs_err']:.3g} ({par['tolerance']}): {'ok' if par['passed'] else 'FAILED'}"
    if "code_agreement" in par:
        s += f"; greedy codes equal {par['code_agreement']:.2%}"
    return s


def _tensorrt(connector, motion, out: Path, precision: str, max_batch: int, artifacts: dict, trt, log) -> dict:
    from a2llm_rt.engine.trt_runner import TrtRunner
    from export import trt_build

    if trt is False:
        return {"built": False, "reason": "not requested"}
    usable, reason = trt_build.tensorrt_available()
    if not usable:
        msg = f"TensorRT engines not built: {reason}. The ONNX graphs and manifest are complete."
        log(msg if trt is None else f"error: {msg}")
        return {"built": False, "reason": reason, "passed": None if trt is None else False}
    cfg, mcfg = connector.cfg, motion.cfg
    state = {k: tuple(v.shape[1:]) for k, v in motion.init_decode_state(1).tensors().items()}
    jobs = [
        ("connector_trt", "connector_onnx", trt_build.connector_profiles(cfg.window, cfg.d_llm, cfg.n_q,
                                                                         cfg.tokens_per_window, max_batch)),
        ("decoder_trt", "decoder_onnx", trt_build.decoder_profiles(mcfg.num_quantizers, state,
                                                                   cfg.tokens_per_window, max_batch)),
    ]  # fmt: skip
    info: dict[str, Any] = {"built": True, "passed": True}
    for name, src, prof in jobs:
        facts = trt_build.build_engine(out / artifacts[src]["file"], out / FILES[name], prof, precision)
        runner = TrtRunner(out / FILES[name])
        if name == "connector_trt":
            par = connector_parity(connector, runner.numpy_runner(["logits", "codes"]), precision)
        else:
            outs = list(ox.DECODER_OUTPUTS)
            par = decoder_parity(motion, runner.numpy_runner(outs), precision, tokens=(1, cfg.tokens_per_window))
        info["passed"] &= bool(par["passed"])
        info["tensorrt"] = facts["tensorrt"]
        artifacts[name] = artifact_entry(out, FILES[name], "tensorrt", source=artifacts[src]["file"],
                                         precision=precision, parity=par, **facts)  # fmt: skip
        log(f"{FILES[name]}: {_verdict(par)}")
    return info


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.build_engines", description=__doc__.split("\n\n")[0])
    ap.add_argument("--motion", required=True, help="motion directory, or 'tiny' for seeded test-sized models")
    ap.add_argument("--out", required=True, help="engines folder to write (manifest.json + artifacts)")
    ap.add_argument("--precision", default="fp32", choices=sorted(ox.DTYPES))
    ap.add_argument("--window", type=int, default=None, help="window W (tiny: default 10; a directory: must match)")
    ap.add_argument("--d-llm", type=int, default=None,
                    help="tiny only: hidden width of its backbone (default: the tiny backbone's)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="tiny only: weight seed (the engine's tiny stack uses 0)")
    ap.add_argument("--max-batch", type=int, default=8, help="largest batch of the TensorRT profiles (default 8)")
    ap.add_argument("--int8", action="store_true", help="also write the int8 weight-quantized connector (CPU)")
    ap.add_argument("--int8-scheme", default="weight_only", choices=["weight_only", "dynamic"],
                    help="weight_only (default): MatMulNBits int8 blocks of 16, sensitive matmuls fp32; "
                    "dynamic: quantize_dynamic, everything int8 (faster, less accurate)")  # fmt: skip
    ap.add_argument("--trt", action="store_true", help="require TensorRT engines (non-zero exit when impossible)")
    args = ap.parse_args(argv)
    if args.max_batch < 1:
        raise InputError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.motion != "tiny" and args.seed != 0:
        raise InputError("--seed seeds the tiny models only")
    connector, motion = load_models(args.motion, args.window, args.d_llm, args.seed)
    manifest = build(connector, motion, args.out, args.precision, args.max_batch, args.int8,
                     True if args.trt else None, int8_scheme=args.int8_scheme)  # fmt: skip
    print(f"wrote {Path(args.out) / 'manifest.json'}")
    if not manifest["ok"]:
        print("error: a parity check failed or TensorRT could not be built (see manifest.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
