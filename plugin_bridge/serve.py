"""Run the bridge server: ``python -m plugin_bridge.serve --backbone DIR|tiny --motion DIR|tiny``.

The server drives the session engine (``a2llm_rt.engine``): ``--backbone tiny --motion tiny`` (the default) runs the
real engine on seeded random tiny models (CPU, starts in seconds; the answers are noise, the "voice" is the test
vocoder's tones), weight folders run the real models (``--device cuda``, ``--vocoder TOKEN2WAV_DIR``). With tiny
models the events are paced to real time (``--pace``), as a model running at real time would deliver them.

``--ray [ADDRESS] --replicas N`` puts the engines on Ray (:mod:`plugin_bridge.ray_source`): N replica actors, one
GPU each where the cluster has GPUs, sessions placed on the least-loaded one and moved to another when theirs dies.
ADDRESS: none starts a local Ray, ``auto`` joins ``ray start --head`` on this machine, ``ray://host:10001`` a remote
cluster through Ray Client.

``--scripted`` serves the deterministic scripted source instead (text, a 220 Hz tone, a face sweep; every value a
pure function of time), for tests that check exact values; any ``--script-*`` option implies it. SIGINT / SIGTERM
stop the server gracefully (turns cancelled, clients told ``SHUTTING_DOWN``).

Examples::

    python -m plugin_bridge.serve --backbone tiny --motion tiny
    python -m plugin_bridge.serve --backbone models/step-audio-2-mini --motion models/motion --device cuda \\
        --vocoder models/step-audio-2-mini/token2wav --prompt-wav voice.wav
    python -m plugin_bridge.serve --scripted --script-seconds 2 --script-pace 0
    python -m plugin_bridge.serve --backbone tiny --motion tiny --ray --replicas 2
    python -m plugin_bridge.serve --backbone models/step-audio-2-mini --motion models/motion --ray auto --replicas 8
    python -m plugin_bridge.serve --backbone tiny --motion tiny --livelink 127.0.0.1:11111
    python -m plugin_bridge.serve --make-curve-keys keys/            # then:
    python -m plugin_bridge.serve --backbone tiny --motion tiny --bind tcp://0.0.0.0:5555 --curve-keys keys/
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from a2llm_rt.audio_vad import VadConfig
from a2llm_rt.config import add_config_args, config_from_args
from a2llm_rt.engine.motion_backend import add_motion_backend_args, motion_backend_from_args
from a2llm_rt.engine.presets import preset
from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main
from plugin_bridge.engine_source import EngineSource, StackOptions
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.server import BridgeServer, ServerConfig, make_curve_keys

log = logging.getLogger("plugin_bridge.serve")

# EngineConfig fields on the command line (destinations engine_<field>). They are spelled out below rather than derived
# from EngineConfig like the server's options: EngineConfig lives in a2llm_rt.engine.engine, which imports torch and
# transformers (~10 s), and the scripted server must start without them. They restate no default: None = the preset.
_ENGINE_FIELDS = ("max_sessions", "max_seconds", "min_seconds", "max_len", "max_new_tokens")


def build_parser() -> argparse.ArgumentParser:
    """The options: ``ServerConfig`` and ``StackOptions`` fields derived from the dataclasses
    (:func:`~a2llm_rt.config.add_config_args`), the engine's limits (None = :mod:`a2llm_rt.engine.presets`), sources,
    Ray and keys."""
    ap = argparse.ArgumentParser(
        prog="python -m plugin_bridge.serve",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--backbone", default="tiny", help="Step-Audio-2-format backbone folder, or 'tiny'")
    ap.add_argument("--motion", default="tiny", help="motion folder (tokenizer/ + connector/), or 'tiny'")
    ap.add_argument("--make-curve-keys", metavar="DIR", help="write server and client CURVE keys into DIR and exit")
    add_config_args(ap, ServerConfig, helps={"max_sessions": "bridge sessions (with the engine: at most its rows)"})
    v = ap.add_argument_group("hands-free talk: voice-activity thresholds (a2llm_rt.audio_vad.VadConfig)")
    add_config_args(v, VadConfig, prefix="vad_", flags={f.name: "--vad-" + f.name.replace("_", "-")
                                                        for f in dataclasses.fields(VadConfig)})  # fmt: skip
    ap.add_argument("--pace", type=float, default=None,
                    help="1 = release audio/face no faster than real time, 0 = as generated (default: 1 for tiny "
                    "models and the scripted source, 0 for real weights)")  # fmt: skip
    g = ap.add_argument_group("engine")
    add_config_args(g, StackOptions, skip=("voices",), defaults={"device": None}, helps={
        "device": "torch device (cpu, cuda, cuda:1; default cpu, or cuda on Ray replicas where the cluster has GPUs)",
        "seed": "tiny weights seed; session n samples with seed + n",
    })  # fmt: skip
    g.add_argument("--voice", action="append", default=[], metavar="NAME=PATH",
                   help="a token2wav voice: prompt wav or voice file (python -m a2llm_rt.speech.make_voice); "
                   "repeatable, the first is the default")  # fmt: skip
    tiny, real = preset("tiny"), preset("real")
    g.add_argument("--engine-sessions", dest="engine_max_sessions", type=int, default=8,
                   help="engine cache rows = sessions at once")  # fmt: skip
    g.add_argument(
        "--max-seconds",
        dest="engine_max_seconds",
        type=float,
        default=None,
        help=f"answer length limit (default: tiny {tiny.max_seconds:g}, real {real.max_seconds:g})",
    )
    g.add_argument(
        "--min-seconds",
        dest="engine_min_seconds",
        type=float,
        default=None,
        help=f"answer length before a stop (tiny {tiny.min_seconds:g}, real {real.min_seconds:g})",
    )
    g.add_argument(
        "--max-len",
        dest="engine_max_len",
        type=int,
        default=None,
        help=f"tokens per cache row (tiny {tiny.max_len}, real {real.max_len})",
    )
    g.add_argument(
        "--max-new-tokens",
        dest="engine_max_new_tokens",
        type=int,
        default=None,
        help="tokens per answer (default: the engine's)",
    )
    g.add_argument("--no-align", action="store_true", help="send audio as soon as it is made, ahead of its face")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 for tiny on the CPU)")
    add_motion_backend_args(g)
    r = ap.add_argument_group("engines on Ray (plugin_bridge.ray_source)")
    r.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the engines as Ray actors; ADDRESS: none = a local Ray, 'auto', 'ray://host:10001'",
    )
    r.add_argument("--replicas", type=int, default=2, help="engine replicas (each --engine-sessions rows)")
    r.add_argument(
        "--replica-gpus",
        type=float,
        default=None,
        help="GPUs per replica (default: 1 when the Ray cluster has GPUs and --device is not cpu, else 0)",
    )
    r.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica")
    r.add_argument("--replica-restarts", type=int, default=-1, help="times Ray restarts a dead replica (-1 = always)")
    s = ap.add_argument_group("scripted source (deterministic; for tests)")
    s.add_argument("--scripted", action="store_true", help="serve the scripted source instead of the engine")
    s.add_argument("--script-seconds", type=float, default=None, help="answer length, s (2; implies --scripted)")
    s.add_argument("--script-frames-per-event", type=int, default=None, help="frames per event (5; implies --scripted)")
    s.add_argument("--script-pace", type=float, default=None, help="same as --pace (implies --scripted)")
    ap.add_argument("--log-level", default="INFO")
    return ap


def _source(args: argparse.Namespace):
    script_opts = {
        "seconds": args.script_seconds,
        "frames_per_event": args.script_frames_per_event,
    }
    implied = any(v is not None for v in script_opts.values()) or args.script_pace is not None
    scripted = args.scripted or implied
    if implied and not args.scripted:
        log.info("--script-* options given: serving the scripted source")
    p = preset(args.backbone)
    pace = args.pace if args.pace is not None else args.script_pace
    if pace is None:
        pace = 1.0 if scripted else p.pace
    if pace < 0:
        raise InputError(f"--pace must be >= 0, got {pace}")
    if scripted:
        return ScriptedSource(pace=pace, **{k: v for k, v in script_opts.items() if v is not None})
    import torch

    from a2llm_rt.engine.presets import engine_config
    from a2llm_rt.engine.sampling import SamplingConfig

    device = args.device or "cpu"
    threads = args.threads if args.threads is not None else p.threads
    if threads is not None and device == "cpu":
        torch.set_num_threads(max(1, threads))  # tiny models: thread start-up costs more than it saves
    stack = config_from_args(StackOptions, args, device=device, voices=parse_voices(args.voice))
    fields = {f: getattr(args, "engine_" + f) for f in _ENGINE_FIELDS if getattr(args, "engine_" + f) is not None}
    config = engine_config(args.backbone, **fields, sampling=SamplingConfig(seed=args.seed),
                           motion_backend=motion_backend_from_args(args, threads or 0))  # fmt: skip
    if args.ray is not None:
        return _ray_source(args, stack, config, pace, threads)
    source = EngineSource.load(args.backbone, args.motion, stack, config, pace=pace, align=not args.no_align)
    log.info("engine: backbone %s, motion %s on %s, %d sessions, pace %g", args.backbone, args.motion, device,
             source.max_sessions, pace)  # fmt: skip
    return source


def _ray_source(args: argparse.Namespace, stack: StackOptions, config, pace: float, threads: int | None):
    from plugin_bridge.ray_source import RaySource, ReplicaSpec

    gpus = args.replica_gpus
    if gpus is None and args.device == "cpu":
        gpus = 0.0  # an explicit --device cpu keeps the replicas off the GPUs
    spec = ReplicaSpec(args.backbone, args.motion, stack, config, pace=pace, align=not args.no_align, threads=threads)
    source = RaySource(
        spec, replicas=args.replicas, address=None if args.ray == "local" else args.ray, gpus=gpus,
        cpus=args.replica_cpus, max_restarts=args.replica_restarts,
    )  # fmt: skip
    log.info("engines on Ray: %d replicas x %d sessions (%g GPU each), backbone %s, motion %s, pace %g",
             args.replicas, config.max_sessions, source.gpus, args.backbone, args.motion, pace)  # fmt: skip
    return source


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Exit 0 after a clean stop; 2 for bad options or weight folders (``error: ...`` on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.make_curve_keys:
        pub, client = make_curve_keys(args.make_curve_keys)
        print(
            f"server public key: {pub}  (give it to clients)\nclient keys: {client} (allowed: listed in "
            f"{Path(args.make_curve_keys) / 'clients'}; add more clients' public keys there)"
        )
        return 0
    source = None
    try:
        try:
            source = _source(args)
            max_sessions = args.max_sessions
            if hasattr(source, "max_sessions"):
                max_sessions = min(max_sessions, source.max_sessions)
            config = server_config(args, max_sessions)
            server = BridgeServer(source, config)
        except ValueError as e:  # an invalid option combination (Config.validate)
            raise InputError(str(e)) from None

        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal %d: shutting down", signum)
            server.stop(timeout_s=0)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        server.run()
    finally:
        _close(source)
    return 0


def server_config(args: argparse.Namespace, max_sessions: int | None = None) -> ServerConfig:
    """The :class:`ServerConfig` of the parsed options (its ``vad`` from the ``--vad-*`` ones); ``ValueError`` for
    invalid values."""
    vad = config_from_args(VadConfig, args, prefix="vad_")
    return config_from_args(ServerConfig, args, vad=vad, **({} if max_sessions is None else
                                                            {"max_sessions": max_sessions}))  # fmt: skip


def parse_voices(specs: list[str]) -> tuple[tuple[str, str], ...]:
    """``["alice=a.wav", ...]`` -> ``(("alice", "a.wav"), ...)``; a clear error on a bad or repeated name."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--voice wants NAME=PATH, got {spec!r}")
        if name in out:
            raise InputError(f"--voice {name} given twice")
        out[name.strip()] = path.strip()
    return tuple(out.items())


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


if __name__ == "__main__":
    sys.exit(main())
