"""The demo (``make demo``): a spoken question through the bridge server and the session engine, end to end.

``python -m apps.demo --out demo_out [--backbone DIR|tiny --motion DIR|tiny] [--question TEXT]``

1. starts the bridge server (``python -m plugin_bridge.serve``, the tiny seeded random models by default) on a free
   loopback port and waits until it answers;
2. speaks the question offline with espeak-ng into ``question.wav`` (a synthetic tone when espeak-ng is missing);
3. runs the Python bridge client against the server: ``answer.wav``, ``answer.txt``, the face streams
   (``face_<layout>.npz``, Live Link CSV ``face_livelink.csv``, Audio2Face JSON ``face_a2f.json``) and the latency
   report ``latency.json``;
4. draws the answer's jawOpen / eyeBlinkLeft / mouthSmileLeft / browInnerUp (``curves.png``) and renders frames of
   it on Apple's ARKit face mesh (``sheet.png``; skipped without ``../shared/data/arkit_mesh``);
5. since tiny random models make meaningless faces, also shows the face pipeline on a real Live Link Face capture
   when ``../shared/data`` holds it: ``capture_curves.png``, ``capture_sheet.png`` and ``capture_metrics.json``
   (the capture against itself delayed by 2 frames: Peak Align reads 80 ms);
6. stops the server (SIGTERM), also on errors, and prints where everything is.

Exit codes: 0 done, 1 the turn failed or the server did not answer, 2 bad input (a missing weight folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from a2llm_rt.audio import FACE_FPS
from a2llm_rt.errors import InputError
from a2llm_rt.face_tools.plot import resolve_curve
from a2llm_rt.utils.cli import cli_main

REPO = Path(__file__).resolve().parents[1]
DEMO_CURVES = ("jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browInnerUp")
DEFAULT_QUESTION = "Hello! Can you tell me what the weather will be like tomorrow?"
FPS = FACE_FPS
DELAY_FRAMES = 2


def shared_data_dir() -> Path:
    """``$A2LLM_SHARED_DATA`` when set, else ``<repo>/../shared/data``."""
    base = os.environ.get("A2LLM_SHARED_DATA")
    return Path(base) if base else REPO.parent / "shared" / "data"


# --- the question ----------------------------------------------------------------------------------------------------
def make_question(path: Path, text: str) -> str:
    """Speak ``text`` into the WAV ``path`` with espeak-ng (offline); without it, a 2 s synthetic vowel-like tone.

    Returns how the question was made (``espeak-ng`` or ``tone``).
    """
    from a2llm_rt.audio import INPUT_SAMPLE_RATE, write_wav

    exe = shutil.which("espeak-ng")
    if exe is not None:
        tmp = path.with_name(path.name + ".tmp.wav")
        r = subprocess.run([exe, "-w", str(tmp), text], capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and tmp.is_file() and tmp.stat().st_size > 44:
            os.replace(tmp, path)
            return "espeak-ng"
        tmp.unlink(missing_ok=True)
        print(f"note: espeak-ng failed ({r.stderr.strip() or r.returncode}); using a synthetic tone as the question")
    else:
        print("note: espeak-ng is not installed (apt-get install espeak-ng); using a synthetic tone as the question")
    rate = INPUT_SAMPLE_RATE
    t = np.arange(2 * rate) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)  # a gliding "voice" with a few harmonics and syllable-rate bursts
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    write_wav(path, 0.3 * x / np.abs(x).max(), rate)
    return "tone"


# --- the server and extra services ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DemoContext:
    """What the demo runs: the server endpoint, the output folder, and everything to stop at the end."""

    out: Path
    endpoint: str = ""
    server: subprocess.Popen | None = None
    server_log: Path | None = None
    services: list[Callable[[], None]] = field(default_factory=list)
    """Stop functions of extra services, called in reverse order at shutdown."""
    notes: list[str] = field(default_factory=list)
    """Lines printed in the summary (where a service listens, what was skipped)."""
    viewer_port: int | None = None
    """Port of the browser viewer's gateway (None: no viewer)."""
    mesh: Path | None = None
    """ARKit mesh folder the viewer builds its head from."""
    viewer_url: str | None = None


def start_server(ctx: DemoContext, backbone: str, motion: str, extra_args: list[str], timeout_s: float = 60.0) -> None:
    """Start ``python -m plugin_bridge.serve`` on a free loopback port and wait until it says Welcome.

    Raises :class:`RuntimeError` (with the server log's tail) when it exits or does not answer in ``timeout_s``.
    """
    from plugin_bridge.client import BridgeClient, BridgeError

    ctx.endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx.server_log = ctx.out / "server.log"
    cmd = [sys.executable, "-m", "plugin_bridge.serve", "--backbone", backbone, "--motion", motion,
           "--bind", ctx.endpoint, "--log-level", "INFO", *extra_args]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    with open(ctx.server_log, "wb") as log:
        ctx.server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"server: {' '.join(cmd[1:])}")
    deadline = time.monotonic() + timeout_s
    probe = BridgeClient(ctx.endpoint)
    try:
        while True:
            if ctx.server.poll() is not None:
                raise RuntimeError(f"the server exited with code {ctx.server.returncode}:\n{_tail(ctx.server_log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout_s:g} s:\n{_tail(ctx.server_log)}")
            try:
                probe.connect(timeout_s=1.0)
                return
            except BridgeError:
                continue
    finally:
        probe.close()


def start_extra_services(ctx: DemoContext) -> None:
    """Services beside the bridge server: the browser viewer's gateway when ``ctx.viewer_port`` is set.

    A service starts here against ``ctx.endpoint``, appends its stop function to ``ctx.services`` (called at
    shutdown, also after errors) and a line to ``ctx.notes`` (printed in the summary).
    """
    if ctx.viewer_port is None:
        return
    cmd = [sys.executable, "-m", "plugin_bridge.web", "--server", ctx.endpoint, "--port", str(ctx.viewer_port)]
    if ctx.mesh is not None and (ctx.mesh / "Neutral.obj").is_file():
        cmd += ["--mesh", str(ctx.mesh)]
    log = open(ctx.out / "viewer.log", "wb")  # noqa: SIM115 - closed by the stop function
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def stop() -> None:
        terminate(proc)
        log.close()

    ctx.services.append(stop)
    ctx.viewer_url = f"http://127.0.0.1:{ctx.viewer_port}/"
    ctx.notes.append(f"browser viewer: {ctx.viewer_url} (log: {ctx.out / 'viewer.log'})")


def wait_for_ctrl_c(ctx: DemoContext) -> None:
    """Keep the server and the viewer up until Ctrl-C (or SIGTERM)."""
    # the handler first and the announcement inside the try: whoever reads it may send SIGTERM at once
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"\nTalk to the avatar in your browser: open {ctx.viewer_url}  (Ctrl-C stops the server and the viewer)",
              flush=True)  # fmt: skip
        while ctx.server is not None and ctx.server.poll() is None:
            time.sleep(0.5)
        print("the bridge server stopped", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping")


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; nothing when it already ended."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(ctx: DemoContext) -> None:
    """Stop extra services, then the server with SIGTERM (SIGKILL after 10 s)."""
    for stop in reversed(ctx.services):
        try:
            stop()
        except Exception as e:  # noqa: BLE001 - keep stopping the rest
            print(f"warning: stopping a service failed: {e}", file=sys.stderr)
    ctx.services.clear()
    if ctx.server is not None:
        terminate(ctx.server)
    ctx.server = None


def _tail(path: Path | None, n: int = 20) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# --- pictures --------------------------------------------------------------------------------------------------------
def liveliest_window(values: np.ndarray, length: int) -> int:
    """First frame of the ``length``-frame window of ``values [T, C]`` with the largest summed per-curve std."""
    t = len(values)
    if t <= length:
        return 0
    c = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, 0)])
    c2 = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values.astype(np.float64) ** 2, 0)])
    mean = (c[length:] - c[:-length]) / length  # [T - length + 1, C]
    var = (c2[length:] - c2[:-length]) / length - mean**2
    return int(np.argmax(np.sqrt(np.maximum(var, 0)).sum(1)))


def pick_frames(clip, start: int, stop: int, at_least: int = 0) -> list[tuple[int, str]]:
    """``(frame, why)`` of telling frames in ``[start, stop)``: mouth closed and open, blink, smile, brows up;
    topped up with evenly spaced frames to ``at_least``."""
    seg = clip.values[start:stop]
    col = {n: resolve_curve(clip, n) for n in DEMO_CURVES}
    jaw = seg[:, col["jawOpen"]]
    picks = [
        (int(np.argmin(jaw)), "mouth closed", "jawOpen"),
        (int(np.argmax(jaw)), "mouth open", "jawOpen"),
        (int(np.argmax(seg[:, col["eyeBlinkLeft"]])), "left eye blink", "eyeBlinkLeft"),
        (int(np.argmax(seg[:, col["mouthSmileLeft"]])), "smile (left)", "mouthSmileLeft"),
        (int(np.argmax(seg[:, col["browInnerUp"]])), "brows up", "browInnerUp"),
    ]
    seen: dict[int, str] = {}
    for f, why, curve in picks:
        seen.setdefault(start + f, f"{why} ({curve} {seg[f, col[curve]]:.2f})")
    for f in np.linspace(start, stop - 1, max(at_least, 2)).round().astype(int):
        if len(seen) >= at_least:
            break
        seen.setdefault(int(f), "")
    return sorted(seen.items())


def face_pictures(clip, out: Path, prefix: str, title: str, mesh_dir: Path | None, start: int = 0,
                  stop: int | None = None) -> tuple[Path, Path | None]:  # fmt: skip
    """``<prefix>curves.png`` of ``clip`` frames ``[start, stop)`` and, with a mesh, ``<prefix>sheet.png``."""
    from a2llm_rt.face_tools.plot import plot_curves

    stop = clip.num_frames if stop is None else stop
    t0, t1 = start / clip.fps, max(stop - 1, start + 1) / clip.fps
    curves = plot_curves([clip], DEMO_CURVES, out / f"{prefix}curves.png", labels=[f"{title} ({clip.fps:g} fps)"],
                         title=title, start=t0, end=t1)  # fmt: skip
    if mesh_dir is None:
        return curves, None
    from a2llm_rt.face.arkit_mesh import ArkitMesh
    from a2llm_rt.face_tools.render import contact_sheet, render_frames

    mesh = ArkitMesh.load(mesh_dir)
    chosen = pick_frames(clip, start, stop, at_least=6)
    weights = np.clip(clip.values[[f for f, _ in chosen], :52], 0, 1)
    captions = [f"frame {f} · {f / clip.fps:.2f} s\n{why}" for f, why in chosen]
    sheet = contact_sheet(render_frames(mesh, weights), captions, out / f"{prefix}sheet.png",
                          f"{title} on the ARKit mesh")  # fmt: skip
    return curves, sheet


def capture_section(out: Path, capture: Path, mesh_dir: Path, seconds: float = 20.0) -> dict[str, Path]:
    """The face pipeline on real data: the liveliest ``seconds`` of a Live Link Face capture, resampled to 25 fps,
    drawn (``capture_curves.png``), rendered (``capture_sheet.png``) and measured against itself delayed by 2 frames
    (``capture_metrics.json``, Peak Align 80 ms)."""
    from a2llm_rt.face.arkit_mesh import ArkitMesh
    from a2llm_rt.face.arkit_regions import arkit_regions
    from a2llm_rt.face.io import load_clip
    from a2llm_rt.face.motion_metrics import compute_metrics, format_table
    from a2llm_rt.face.resample import resample
    from a2llm_rt.utils.fileio import atomic_write_json

    raw = load_clip(capture)
    clip = resample(raw, FPS)
    print(f"capture: {capture.name}: {raw.num_frames} frames at {raw.fps:g} fps -> {clip.num_frames} at {FPS:g} fps")
    length = min(clip.num_frames, int(round(seconds * FPS)))
    cols = [resolve_curve(clip, n) for n in DEMO_CURVES]
    start = liveliest_window(clip.values[:, cols], length)
    stop = start + length
    title = f"{capture.name}: {start / FPS:.0f}-{(stop - 1) / FPS:.0f} s"
    curves, sheet = face_pictures(clip, out, "capture_", title, mesh_dir, start, stop)

    mesh = ArkitMesh.load(mesh_dir)
    ref = mesh.vertices(np.clip(clip.values[start:stop, :52], 0, 1))  # [T, V, 3]
    pred = np.concatenate([np.repeat(ref[:1], DELAY_FRAMES, 0), ref[:-DELAY_FRAMES]])  # ref delayed by 2 frames
    metrics = compute_metrics(pred, ref, arkit_regions(mesh), FPS, template=mesh.neutral)
    print(f"motion metrics: the capture against itself delayed by {DELAY_FRAMES} frames ({DELAY_FRAMES * 40} ms)")
    print(format_table(metrics))
    path = out / "capture_metrics.json"
    atomic_write_json(path, {"pred": f"ref delayed by {DELAY_FRAMES} frames", **metrics.to_dict()})
    return {"capture curves": curves, "capture contact sheet": sheet, "capture metrics": path}


# --- the demo --------------------------------------------------------------------------------------------------------
def _fmt_s(x: float | None) -> str:
    return "-" if x is None or x < 0 else f"{x * 1000:.0f} ms"


def print_summary(out: Path, written: dict[str, Path | None], ctx: DemoContext, tiny: bool, seconds: float) -> None:
    print(f"\ndemo done in {seconds:.1f} s; outputs in {out.resolve()}:")
    for what, p in written.items():
        if p is not None:
            print(f"  {what:<22} {p.resolve()}")
    for line in ctx.notes:
        print(f"  ({line})")
    if tiny:
        print(
            "\nNOTE: these are TINY RANDOM models (seeded, untrained): the answer is no meaningful speech. The 'voice' "
            "is the test vocoder's tones, the text is random tokens and the face moves at random (and barely). The "
            "plumbing is real: engine, bridge protocol, streaming, A/V sync, timings. The capture_* files show the "
            "face pipeline on real data."
        )
        print(
            "To run real weights: python -m apps.demo --backbone DIR --motion DIR [--device cuda]  (backbone: a "
            "Step-Audio-2-mini folder; motion: tokenizer/ + connector/ as written by training; see README)."
        )


def run(args: argparse.Namespace) -> int:
    from a2llm_rt.audio import INPUT_SAMPLE_RATE, read_wav
    from a2llm_rt.face.clip import MotionClip
    from plugin_bridge.client import BridgeClient, write_outputs

    out = Path(args.out)
    tiny = args.backbone == "tiny" and args.motion == "tiny"
    for what, p in (("backbone", args.backbone), ("motion", args.motion)):
        if p != "tiny" and not Path(p).is_dir():
            raise InputError(f"the {what} weights folder does not exist", Path(p))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    written: dict[str, Path | None] = {}
    ctx = DemoContext(out, mesh=Path(args.mesh) if args.mesh else None)
    if args.viewer == "yes" or (args.viewer == "auto" and sys.stdin.isatty() and sys.stdout.isatty()):
        ctx.viewer_port = args.viewer_port
    else:
        ctx.notes.append("browser viewer not started (not a terminal): --viewer yes serves it until Ctrl-C")
    try:
        how = make_question(out / "question.wav", args.question)
        written["question"] = out / "question.wav"
        print(f"question: {args.question!r} -> {written['question']} ({how})")
        extra = ["--device", args.device] + (["--pace", str(args.pace)] if args.pace is not None else [])
        start_server(ctx, args.backbone, args.motion, extra, timeout_s=args.timeout_s)
        print(f"server answering on {ctx.endpoint} (log: {ctx.server_log})")
        written["server log"] = ctx.server_log
        start_extra_services(ctx)

        audio, rate = read_wav(out / "question.wav", sample_rate=INPUT_SAMPLE_RATE)
        with BridgeClient(ctx.endpoint, ("arkit52", "livelink61", "flame58")) as client:
            result = client.run_turn(audio, rate, timeout_s=args.timeout_s)
        for p in write_outputs(result, out):
            written[p.name] = p
        rep = result.latency_report()
        if not result.completed:
            errs = "; ".join(f"{e.code.name}: {e.message}" for e in result.errors) or "no TurnEnd"
            print(f"error: the turn did not complete ({rep['status']}): {errs}", file=sys.stderr)
            return 1
        te = result.turn_end
        print(f"answer: {result.audio.shape[0] / result.sample_rate:.2f} s of audio, {te.face_frames} face frames, "
              f"{len(result.text)} characters of text")  # fmt: skip
        print(f"latency (A2-LLM §6.1, server side, from the end of the question): TTFT {_fmt_s(te.ttft_s)} (first "
              f"audio token) | TTFA {_fmt_s(te.ttfa_s)} (first face motion) | RTF {te.rtf:.3f}; first audio chunk sent "
              f"{_fmt_s(te.first_audio_s)} | turn {te.total_s:.2f} s")  # fmt: skip

        mesh_dir = Path(args.mesh) if args.mesh and Path(args.mesh).is_dir() else None
        arkit = MotionClip(result.face["arkit52"], result.fps, "arkit52", {"source": "a2llm demo answer"})
        label = "answer (tiny random models)" if tiny else "answer"
        curves, sheet = face_pictures(arkit, out, "", label, mesh_dir)
        written["curves"], written["contact sheet"] = curves, sheet
        if sheet is None:
            ctx.notes.append(f"contact sheet skipped: no ARKit mesh at {args.mesh}")

        capture = Path(args.capture) if args.capture else None
        if capture is None:
            pass
        elif capture.is_file() and mesh_dir is not None:
            print()
            written.update(capture_section(out, capture, mesh_dir, args.seconds))
        else:
            ctx.notes.append(f"real-capture section skipped: {capture} or the ARKit mesh is missing")
        print_summary(out, written, ctx, tiny, time.monotonic() - t_start)
        if ctx.viewer_url:
            wait_for_ctrl_c(ctx)
    finally:
        stop_all(ctx)
    return 0


def build_parser() -> argparse.ArgumentParser:
    data = shared_data_dir()
    p = argparse.ArgumentParser(prog="python -m apps.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--backbone", default="tiny", help="Step-Audio-2-format backbone folder, or 'tiny' (default)")
    p.add_argument("--motion", default="tiny", help="motion folder (tokenizer/ + connector/), or 'tiny' (default)")
    p.add_argument("--device", default="cpu", help="torch device of the server (cpu, cuda)")
    p.add_argument("--pace", type=float, default=None, help="server pacing (default: real time for tiny)")
    p.add_argument("--question", default=DEFAULT_QUESTION, help="what to ask (spoken with espeak-ng)")
    p.add_argument("--mesh", default=str(data / "arkit_mesh"), help="ARKit mesh folder (contact sheets)")
    p.add_argument("--capture", default=str(data / "arkit_capture" / "livelinkface_rom_3.csv"),
                   help="Live Link Face CSV for the real-capture section ('' to skip it)")  # fmt: skip
    p.add_argument("--seconds", type=float, default=20.0, help="capture stretch to show (s)")
    p.add_argument(
        "--viewer",
        choices=("auto", "yes", "no"),
        default="auto",
        help="keep the server up with the browser viewer until Ctrl-C (auto: when run from a terminal)",
    )
    p.add_argument("--viewer-port", type=int, default=8080, help="browser viewer port on 127.0.0.1 (default 8080)")
    p.add_argument("--timeout-s", type=float, default=120.0, help="server start-up and turn time limit (s)")
    return p


@cli_main(failures=(OSError, RuntimeError))
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.seconds > 1.0):
        raise InputError(f"--seconds must be more than 1, got {args.seconds}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
