"""Run the bridge server: ``python -m plugin_bridge.serve --backbone DIR|tiny --motion DIR|tiny``.

``--backbone tiny --motion tiny`` serves the deterministic scripted source (text, a tone, a face sweep) until the
session engine is wired in; the ``--script-*`` options shape it (the benchmark uses them). SIGINT / SIGTERM stop the
server gracefully (turns cancelled, clients told ``SHUTTING_DOWN``).

Examples::

    python -m plugin_bridge.serve --backbone tiny --motion tiny
    python -m plugin_bridge.serve --backbone tiny --motion tiny --livelink 127.0.0.1:11111
    python -m plugin_bridge.serve --make-curve-keys keys/            # then:
    python -m plugin_bridge.serve --backbone tiny --motion tiny --bind tcp://0.0.0.0:5555 --curve-keys keys/
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from a2llm_rt.errors import InputError
from plugin_bridge.event_source import make_source
from plugin_bridge.server import BridgeServer, ServerConfig, make_curve_keys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m plugin_bridge.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="tiny", help="backbone weights folder, or 'tiny' (default)")
    ap.add_argument("--motion", default="tiny", help="motion stack folder, or 'tiny' (default)")
    ap.add_argument("--bind", default="tcp://127.0.0.1:5555", help="ZeroMQ endpoint (default tcp://127.0.0.1:5555)")
    ap.add_argument("--livelink", metavar="HOST:PORT", help="also send Live Link Face UDP packets there")
    ap.add_argument("--curve-keys", metavar="DIR", help="folder with server.key_secret (required off loopback)")
    ap.add_argument("--make-curve-keys", metavar="DIR", help="write server and client CURVE keys into DIR and exit")
    ap.add_argument("--heartbeat-s", type=float, default=1.0)
    ap.add_argument("--session-timeout-s", type=float, default=10.0)
    ap.add_argument("--max-sessions", type=int, default=256)
    ap.add_argument("--max-turn-workers", type=int, default=64)
    ap.add_argument("--max-pending", type=int, default=256, help="messages held per slow client before cancelling")
    ap.add_argument("--script-seconds", type=float, default=2.0, help="tiny source: answer length (s)")
    ap.add_argument("--script-frames-per-event", type=int, default=5, help="tiny source: frames per event window")
    ap.add_argument("--script-pace", type=float, default=1.0, help="tiny source: 1 = real time, 0 = unpaced")
    ap.add_argument("--log-level", default="INFO")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.make_curve_keys:
            pub, client = make_curve_keys(args.make_curve_keys)
            print(f"server public key: {pub}  (give it to clients)\nclient keys: {client}")
            return 0
        source = make_source(
            args.backbone,
            args.motion,
            seconds=args.script_seconds,
            frames_per_event=args.script_frames_per_event,
            pace=args.script_pace,
        )
        config = ServerConfig(
            bind=args.bind,
            curve_keys=args.curve_keys,
            heartbeat_s=args.heartbeat_s,
            session_timeout_s=args.session_timeout_s,
            max_sessions=args.max_sessions,
            max_turn_workers=args.max_turn_workers,
            max_pending=args.max_pending,
            livelink=args.livelink,
        )
        server = BridgeServer(source, config)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("plugin_bridge.serve").info("signal %d: shutting down", signum)
        server.stop(timeout_s=0)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.run()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
