"""Many engines behind one bridge: :class:`RaySource`, a :class:`~plugin_bridge.turn_source.TurnSource` whose
engines are Ray actors (``python -m plugin_bridge.serve --ray [ADDRESS] --replicas N``).

The bridge server stays the ZeroMQ front door and knows nothing of Ray. Each *replica* is a Ray actor
(:class:`EngineReplica`: ``num_gpus=1`` where the cluster has GPUs, a CPU actor otherwise) holding one
:class:`~plugin_bridge.engine_source.EngineSource`, i.e. one engine with its batched sessions (cache rows). A turn is
one call of the actor's streaming generator (``num_returns="streaming"``): the engine's events, as the replica's
``EngineSource`` yields them (the same event path as an engine in the bridge's process), come back through Ray's
object store (each object a list of the events ready at that moment); there is no transport of our own. Replicas do
not pace: the bridge server paces a ``RaySource`` turn (:attr:`ReplicaSpec.pace`) as it paces any other source's.

Placement: a new session goes to the least-loaded live replica (sessions / rows) that has a free row, and stays there;
``SERVER_BUSY`` (:class:`SourceBusyError`) only when every live replica is full. The session is opened on the replica
by its first turn (``open_session`` runs on the server's loop thread and never waits for Ray).

Failure (a replica's process killed, a GPU error, a node lost): every turn running on it fails with a
:class:`TurnError` that names the replica; its sessions are placed on other replicas at once (where rows are free, else
at their next turn) and their next turn continues the conversation there. For that the bridge keeps each session's
conversation itself, as the user's audio (``[n]`` float32 16 kHz, as the server passed it) and the answer's token ids
of every exchange the engine's history holds (the replica reports both at the end of every turn, before its
``TurnEnd``); the new replica rebuilds the history (:meth:`~a2llm_rt.engine.session.Session.restore_conversation`) and
prefills it with the next utterance. Sessions on other replicas never notice. Ray restarts a dead replica
(``max_restarts``, default: always); a health check (every ``health_s``) sees it come back under a new incarnation and
gives it new sessions again, and closes sessions a replica holds that the bridge has moved away.

Game characters (protocol v2): the bridge keeps each session's character (persona, voice, game context) and sends it
with every turn, so the replica that runs the turn applies it first (no extra call; a failover's new replica gets it
back before the restored conversation). Persona and typed text are checked by a replica's engine (the tokenizer
lives there) with one blocking Ray call; a typed turn is kept in the conversation like an utterance.

What is not recovered: the turn that was running (the client gets ``TURN_FAILED`` and asks again), and the sampling
generator's position (a restored session samples from its seed again; greedy answers are unaffected). A replica that
hangs without dying is not detected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from a2llm_rt.errors import InputError
from plugin_bridge.engine_source import EngineSource, StackOptions
from plugin_bridge.turn_source import CharacterLimits, Event, SourceBusyError, TurnEnd, TurnError

if TYPE_CHECKING:
    from a2llm_rt.engine.engine import EngineConfig

log = logging.getLogger("plugin_bridge.ray_source")

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class ReplicaSpec:
    """What each replica loads: the same arguments as :meth:`EngineSource.load` (``stack.device`` is set to
    ``cuda`` on GPU replicas), plus torch CPU threads and greedy sampling (parity tests)."""

    backbone: str = "tiny"
    motion: str = "tiny"
    stack: StackOptions = dataclasses.field(default_factory=StackOptions)
    engine: EngineConfig | None = None
    """Each replica's engine (None: :func:`a2llm_rt.engine.presets.engine_config` for ``backbone``, 8 rows)."""
    pace: float = 0.0
    """The bridge's release pace of these replicas' answers (1 = real time; the replicas themselves never wait)."""
    align: bool = True
    threads: int | None = None
    """torch CPU threads in the replica's process (None: 1 for tiny models, torch's default otherwise)."""
    greedy: bool = False
    """Argmax sampling everywhere (the answers then depend only on the conversation, not on the replica)."""
    max_new_tokens: int | None = None
    """Tokens per answer (None: the engine's default; tiny random models speak mostly text tokens, so tests and
    benches bound their turns with this)."""

    def engine_config(self) -> EngineConfig:
        from a2llm_rt.engine.presets import engine_config

        return self.engine if self.engine is not None else engine_config(self.backbone, max_sessions=8)


def build_engine_source(spec: ReplicaSpec) -> EngineSource:
    """The :class:`EngineSource` a replica holds (also used in-process by tests and benches as the reference); it
    does not pace (``pace`` 0): the bridge paces."""
    import torch

    from a2llm_rt.engine.presets import preset

    threads = spec.threads if spec.threads is not None else preset(spec.backbone).threads
    if threads is not None and spec.stack.device == "cpu":
        torch.set_num_threads(max(1, threads))
    cfg = dataclasses.replace(spec.engine_config())
    src = EngineSource.load(spec.backbone, spec.motion, spec.stack, cfg, pace=0.0, align=spec.align)
    if spec.greedy:
        from a2llm_rt.engine.sampling import SamplingConfig

        src.engine.cfg.sampling = SamplingConfig.greedy(cfg.sampling.seed)  # type: ignore[attr-defined]
    if spec.max_new_tokens is not None:
        src.engine.cfg.max_new_tokens = int(spec.max_new_tokens)  # type: ignore[attr-defined]
    return src


# --- what a replica sends besides the bridge's events ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Sync:
    """End of a turn on the replica: the session's history now holds ``exchanges`` exchanges; ``answer`` is this
    turn's answer ids when the turn added one (None otherwise)."""

    exchanges: int
    answer: list[int] | None


@dataclasses.dataclass(frozen=True)
class _Failed:
    """The turn failed on the replica (the engine's Error event or refused input): raise ``TurnError`` as is."""

    message: str
    kind: str


@dataclasses.dataclass(frozen=True)
class _NotOpen:
    """The replica does not hold the session (it restarted since): the bridge reopens it with its conversation."""


@dataclasses.dataclass(frozen=True)
class Character:
    """A session's character as the bridge keeps it (protocol v2): sent with every turn, so the replica that runs
    the turn (the first, or a new one after a failover) applies it before the turn. ``persona`` / ``voice``: None
    for the engine's defaults; ``context``: the game context (with the emotion sentence) for the next turn."""

    persona: str | None = None
    voice: str | None = None
    context: str | None = None


class EngineReplica:
    """The Ray actor: one engine (:func:`build_engine_source`) and its sessions. Threaded (``max_concurrency``):
    every running turn holds one thread, control calls (ping, cancel, close) run beside them."""

    def __init__(self, spec: ReplicaSpec):
        self.source = build_engine_source(spec)
        self.incarnation = uuid.uuid4().hex
        self._cancels: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._t0 = time.time()

    def info(self) -> dict:
        """Identity and load: incarnation (new after every restart), pid, node, GPUs, rows, open sessions."""
        import ray

        ctx = ray.get_runtime_context()
        return {
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "node": ctx.get_node_id(),
            "gpus": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])],
            "device": str(self.source.engine.device),  # type: ignore[attr-defined]
            "max_sessions": self.source.max_sessions,
            "layouts": list(self.source.layouts),
            "sessions": sorted(self.source.engine.sessions),  # type: ignore[attr-defined]
            "busy": [sid for sid, s in list(self.source.engine.sessions.items()) if s.busy],  # type: ignore[attr-defined]
            "up_s": time.time() - self._t0,
            "voices": list(self.source.voices),
            "limits": dataclasses.asdict(self.source.limits),
        }

    def check_text(self, text: str, what: str, max_chars: int, allow_empty: bool) -> tuple[str | None, str | None]:
        """The engine's check of untrusted text: (cleaned text, None), or (None, why) when refused."""
        try:
            return self.source.check_text(text, what, max_chars, allow_empty), None
        except InputError as e:
            return None, str(e)

    def close_session(self, session_id: int) -> None:
        self.cancel(session_id)
        self.source.close_session(session_id)

    def cancel(self, session_id: int) -> None:
        with self._lock:
            ev = self._cancels.get(session_id)
        if ev is not None:
            ev.set()

    def _open(self, session_id: int, restore: list | None, character: Character, wait_s: float = 10.0) -> bool:
        """Open the session (with its character, then restoring its conversation) unless open; False when it is not
        open and ``restore`` is None. A full engine is retried for ``wait_s``: the bridge counts rows exactly, so a
        full engine only means a close it sent has not run yet."""
        engine = self.source.engine
        if session_id in engine.sessions and restore is None:  # type: ignore[attr-defined]
            return True
        if restore is None:
            return False
        self.source.close_session(session_id)  # a stale copy (a previous placement) goes first
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.source.open_session(session_id)
                break
            except SourceBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.source.configure(session_id, character.persona, character.voice)  # before the history: it reopens
        if restore:
            engine.sessions[session_id].restore_conversation(restore)  # type: ignore[attr-defined]
        return True

    def turn(
        self, session_id: int, audio: np.ndarray | str, restore: list | None, character: Character | None = None
    ) -> Iterator[list]:
        """Streaming generator: the bridge events of one turn, then :class:`_Sync` right before ``TurnEnd`` (or
        :class:`_Sync` + :class:`_Failed`, or a lone :class:`_NotOpen`), in lists: each yield carries every item
        ready at that moment (one Ray object costs the receiving process ~0.4 ms of CPU, whatever its size; the
        engine releases audio, face and text in bursts). Nothing waits to fill a list."""
        items: queue.Queue = queue.Queue()
        end = object()
        crash: list[BaseException] = []

        def produce() -> None:
            try:
                for item in self._turn_items(session_id, audio, restore, character or Character()):
                    items.put(item)
            except BaseException as e:  # noqa: BLE001 - handed to the Ray task below
                crash.append(e)
            finally:
                items.put(end)

        threading.Thread(target=produce, name=f"turn-{session_id}", daemon=True).start()
        while True:
            batch = [items.get()]
            while batch[-1] is not end and len(batch) < 256:
                try:
                    batch.append(items.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is end
            if done:
                batch.pop()
            if batch:
                yield batch
            if done:
                if crash:
                    raise crash[0]
                return

    def _turn_items(
        self, session_id: int, audio: np.ndarray | str, restore: list | None, character: Character
    ) -> Iterator[object]:
        cancel = threading.Event()
        if not isinstance(audio, str):  # str: a typed turn
            audio = np.array(audio, np.float32)  # Ray hands out read-only arrays
        with self._lock:
            self._cancels[session_id] = cancel
        try:
            try:
                if not self._open(session_id, restore, character):
                    yield _NotOpen()
                    return
                # the character as the bridge holds it (same persona: no reset; the bridge reopens on a new one)
                self.source.configure(session_id, character.persona, character.voice)
                self.source.set_context(session_id, character.context)
            except SourceBusyError as e:
                yield _Failed(f"the replica has no free row: {e}", "busy")
                return
            except InputError as e:  # the bridge checked it with a replica's engine: only a stale copy lands here
                yield _Failed(f"character refused: {e}", "input")
                return
            session = self.source.engine.sessions[session_id]  # type: ignore[attr-defined]
            done_before = session.turns_done
            try:
                for e in self.source.run_turn(session_id, audio, cancel):
                    if isinstance(e, TurnEnd):
                        yield self._sync(session, done_before)
                    yield e
            except TurnError as e:
                yield self._sync(session, done_before)
                yield _Failed(str(e), e.kind)
        finally:
            with self._lock:
                if self._cancels.get(session_id) is cancel:
                    del self._cancels[session_id]

    @staticmethod
    def _sync(session: object, done_before: int) -> _Sync:
        added = session.turns_done > done_before  # type: ignore[attr-defined]
        return _Sync(session.exchanges(), session.last_answer_ids() if added else None)  # type: ignore[attr-defined]

    def history(self, session_id: int) -> list[int]:
        """The session's conversation as token ids (tests compare it across replicas)."""
        return list(self.source.engine.sessions[session_id].history.ids)  # type: ignore[attr-defined]

    def kill_self(self) -> None:
        """Tests: end this replica's process at once, as a crash would."""
        os._exit(1)


# --- the bridge side -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Replica:
    index: int
    actor: object
    capacity: int
    incarnation: str | None = None
    """None while the replica is down (dead, restarting, unreachable)."""
    pid: int = 0
    node: str = ""
    sessions: set[int] = dataclasses.field(default_factory=set)
    ping: object | None = None  # the outstanding health-check ObjectRef
    ping_sent: float = 0.0

    @property
    def up(self) -> bool:
        return self.incarnation is not None

    def name(self) -> str:
        return f"replica {self.index} (pid {self.pid} on node {self.node[:8]})"


class _Watch:
    """A running turn: its cancel event, and its replica to tell (once)."""

    def __init__(self, cancel: threading.Event, actor: object, sid: int):
        self.cancel, self.actor, self.sid = cancel, actor, sid
        self._sent = False
        self._lock = threading.Lock()

    def forward(self) -> None:
        with self._lock:
            if self._sent:
                return
            self._sent = True
        with contextlib.suppress(Exception):  # a dead replica: nothing to stop
            self.actor.cancel.remote(self.sid)  # type: ignore[attr-defined]


@dataclasses.dataclass
class _Conversation:
    replica: int | None = None
    """Index of the replica the session is placed on; None: not placed (its replica died and none had room)."""
    opened_on: str | None = None
    """The incarnation of that replica that holds the session (None: open it there, restoring the exchanges)."""
    exchanges: list[tuple[np.ndarray | str, list[int]]] = dataclasses.field(default_factory=list)
    """(the user's audio ``[n]`` float32 16 kHz or typed text, answer ids) of each exchange the replica holds."""
    character: Character = dataclasses.field(default_factory=Character)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def mirror_exchanges(
    exchanges: list[tuple[np.ndarray | str, list[int]]], audio: np.ndarray | str, answer: list[int] | None, held: int
) -> list[tuple[np.ndarray | str, list[int]]]:
    """The bridge's copy of a conversation after a turn: the replica's history holds ``held`` exchanges, the last
    ones of ``exchanges`` plus this turn's (``audio``, ``answer``) when the turn added one (``answer`` not None).
    Fewer than before means the engine forgot (a failed turn resets the conversation; one that outgrows the cache
    row starts over with the current exchange)."""
    candidates = exchanges + ([(audio, answer)] if answer is not None else [])
    return candidates[max(0, len(candidates) - held) :] if held > 0 else []


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """:class:`InputError` at once when nothing listens at ``[ray://]host:port`` (Ray itself would retry for
    minutes before giving up)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--ray {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise InputError(f"cannot reach Ray at {address}: nothing answers at {host}:{port} ({e})") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'ray>=2.40' (in the dev and curate extras)") from None
    return ray


class RaySource:
    """:class:`~plugin_bridge.turn_source.TurnSource` over ``replicas`` :class:`EngineReplica` actors (see the
    module docstring). ``address``: None starts a local Ray (unless this process already joined one), ``auto`` joins
    the cluster of ``ray start --head`` on this machine, ``ray://host:10001`` goes through Ray Client, any other value
    is passed to ``ray.init``. ``gpus``: per replica (None: 1 when the cluster has GPUs, else 0). Raises
    :class:`InputError` when Ray is missing, unreachable, or the replicas do not start within ``start_timeout_s``."""

    def __init__(
        self,
        spec: ReplicaSpec,
        replicas: int = 2,
        address: str | None = None,
        gpus: float | None = None,
        cpus: float = 1.0,
        max_restarts: int = -1,
        health_s: float = 1.0,
        start_timeout_s: float = 600.0,
        check_timeout_s: float = 10.0,
    ):
        if replicas < 1:
            raise InputError(f"--replicas must be >= 1, got {replicas}")
        ray = _import_ray()
        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            if address not in (None, "auto", "local"):
                _probe(address)
            try:
                if address is None:
                    ray.init(include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=address, log_to_driver=False)
            except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors, ...
                raise InputError(f"cannot reach Ray at {address or 'a new local cluster'}: {e}") from None
            self._started_ray = True
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        if gpus > 0 and spec.stack.device == "cpu":
            spec = dataclasses.replace(spec, stack=dataclasses.replace(spec.stack, device="cuda"))
        self.spec = spec
        self.pace = float(spec.pace)  # the bridge server paces this source's turns
        self.gpus = gpus
        self.cpus = cpus
        self.health_s = health_s
        self.check_timeout_s = check_timeout_s
        rows = spec.engine_config().max_sessions
        actor_cls = ray.remote(EngineReplica)
        opts = {
            "num_gpus": gpus,
            "num_cpus": cpus,
            "max_restarts": max_restarts,
            "max_task_retries": 0,  # a turn is never replayed behind the client's back
            "max_concurrency": rows + 8,  # one thread per running turn, plus control calls
            "runtime_env": {"env_vars": {"PYTHONPATH": f"{REPO}:${{PYTHONPATH}}"}},
        }
        self._replicas = [_Replica(i, actor_cls.options(**opts).remote(spec), rows) for i in range(replicas)]
        self._lock = threading.Lock()
        self._conversations: dict[int, _Conversation] = {}
        self._closing: list[object] = []  # fire-and-forget refs (close_session), reaped by the health thread
        self._stop = threading.Event()
        self._watches: set[_Watch] = set()  # running turns whose cancel events the watcher forwards
        try:
            infos = self._wait_ready(start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.layouts: tuple[str, ...] = tuple(infos[0]["layouts"])
        self.voices: tuple[str, ...] = tuple(infos[0]["voices"])
        """The replicas' voice names, the default first (protocol v2 ServerInfo; all replicas load the same)."""
        self.limits = CharacterLimits(**infos[0]["limits"])
        self._thread = threading.Thread(target=self._health_loop, name="ray-source-health", daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(target=self._watch_loop, name="ray-source-cancel", daemon=True)
        self._watcher.start()

    # ---- start / stop ----------------------------------------------------------------------------------------------
    def _wait_ready(self, timeout_s: float) -> list[dict]:
        ray = self._ray
        refs = [r.actor.info.remote() for r in self._replicas]  # type: ignore[attr-defined]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if len(ready) < len(refs):
            need = f"{self.gpus:g} GPU + " if self.gpus else ""
            raise InputError(
                f"only {len(ready)} of {len(refs)} replicas started within {timeout_s:g} s (each needs {need}"
                f"{self.cpus:g} CPU; the cluster has {ray.cluster_resources()})"
            )
        infos = []
        for r, ref in zip(self._replicas, refs, strict=True):
            try:
                info = ray.get(ref)
            except Exception as e:  # noqa: BLE001
                raise InputError(f"replica {r.index} failed to load its engine: {e}") from None
            self._mark_up(r, info)
            infos.append(info)
            log.info("%s up: %s, %d rows, GPUs %s", r.name(), info["device"], info["max_sessions"], info["gpus"])
        return infos

    def close(self) -> None:
        """Stop the health check, end the replicas, and Ray itself when this source started it."""
        self._stop.set()
        for name in ("_thread", "_watcher"):
            t = getattr(self, name, None)
            if t is not None:
                t.join(timeout=5)
        for r in getattr(self, "_replicas", []):
            with contextlib.suppress(Exception):
                self._ray.kill(r.actor)
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False

    # ---- state -----------------------------------------------------------------------------------------------------
    @property
    def max_sessions(self) -> int:
        return sum(r.capacity for r in self._replicas)

    def replicas(self) -> list[dict]:
        """Per replica: index, up, pid, node, incarnation, sessions placed there (for logs, tests and benches)."""
        with self._lock:
            return [
                {"index": r.index, "up": r.up, "pid": r.pid, "node": r.node, "incarnation": r.incarnation,
                 "sessions": sorted(r.sessions), "capacity": r.capacity}
                for r in self._replicas
            ]  # fmt: skip

    def placement(self, session_id: int) -> int | None:
        with self._lock:
            c = self._conversations.get(session_id)
            return None if c is None else c.replica

    def actor(self, index: int) -> object:
        return self._replicas[index].actor

    def _mark_up(self, r: _Replica, info: dict) -> None:
        with self._lock:
            if r.incarnation is not None and r.incarnation != info["incarnation"]:
                self._orphan(r, "restarted")  # it came back between two checks: its sessions are gone
            if r.incarnation != info["incarnation"]:
                log.info("replica %d up (pid %d)", r.index, info["pid"])
            r.incarnation, r.pid, r.node = info["incarnation"], int(info["pid"]), str(info["node"])
            r.capacity = int(info["max_sessions"])
            stale = [sid for sid in info["sessions"] if sid not in r.sessions]
            self._place_orphans()
        for sid in stale:  # sessions the bridge moved away or closed while the replica was unreachable
            self._closing.append(r.actor.close_session.remote(sid))  # type: ignore[attr-defined]

    def _mark_down(self, r: _Replica, why: str, incarnation: str | None) -> None:
        """The replica failed (``incarnation``: the one that failed; None = whatever is current)."""
        with self._lock:
            if r.incarnation is None or (incarnation is not None and r.incarnation != incarnation):
                return  # already handled
            log.warning("%s is down: %s", r.name(), why)
            r.incarnation = None
            self._orphan(r, why)
            self._place_orphans()

    def _orphan(self, r: _Replica, why: str) -> None:
        """Lock held: unplace every session of ``r``; they reopen elsewhere with their conversation."""
        for sid in r.sessions:
            c = self._conversations.get(sid)
            if c is not None:
                c.replica, c.opened_on = None, None
        if r.sessions:
            log.warning("replica %d %s: %d sessions to move", r.index, why, len(r.sessions))
        r.sessions = set()

    def _place_orphans(self) -> None:
        """Lock held: place unplaced sessions where rows are free."""
        for sid, c in self._conversations.items():
            if c.replica is None:
                r = self._least_loaded()
                if r is None:
                    return
                c.replica, c.opened_on = r.index, None
                r.sessions.add(sid)

    def _least_loaded(self) -> _Replica | None:
        free = [r for r in self._replicas if r.up and len(r.sessions) < r.capacity]
        return min(free, key=lambda r: (len(r.sessions) / r.capacity, r.index), default=None)

    def _watch_loop(self, period_s: float = 0.02) -> None:
        """Forward the server's cancel of a running turn to its replica (the turn's thread is blocked on Ray)."""
        while not self._stop.wait(period_s):
            with self._lock:
                watches = list(self._watches)
            for w in watches:
                if w.cancel.is_set():
                    w.forward()

    # ---- health ----------------------------------------------------------------------------------------------------
    def _health_loop(self) -> None:
        ray = self._ray
        while not self._stop.wait(self.health_s):
            for r in self._replicas:
                if r.ping is None:
                    r.ping, r.ping_sent = r.actor.info.remote(), time.monotonic()  # type: ignore[attr-defined]
                    continue
                ready, _ = ray.wait([r.ping], timeout=0)
                if not ready:
                    continue
                ref, r.ping = r.ping, None
                try:
                    info = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - dead, restarting, unreachable
                    self._mark_down(r, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}", None)
                    continue
                self._mark_up(r, info)
            if self._closing:
                done, self._closing = ray.wait(self._closing, num_returns=len(self._closing), timeout=0)
                for ref in done:
                    with contextlib.suppress(Exception):  # the replica died: nothing left to close
                        ray.get(ref)

    # ---- TurnSource ------------------------------------------------------------------------------------------------
    def open_session(self, session_id: int) -> None:
        """Place the session (no Ray call: this runs on the server's loop thread)."""
        with self._lock:
            r = self._least_loaded()
            if r is None:
                up = [x for x in self._replicas if x.up]
                if not up:
                    raise SourceBusyError(f"no replica is up (of {len(self._replicas)})")
                raise SourceBusyError(f"all {len(up)} live replicas are full ({self.max_sessions} sessions)")
            r.sessions.add(session_id)
            self._conversations[session_id] = _Conversation(r.index)

    def close_session(self, session_id: int) -> None:
        with self._lock:
            c = self._conversations.pop(session_id, None)
            if c is None or c.replica is None:
                return
            r = self._replicas[c.replica]
            r.sessions.discard(session_id)
            if c.opened_on is not None and c.opened_on == r.incarnation:
                self._closing.append(r.actor.close_session.remote(session_id))  # type: ignore[attr-defined]
            self._place_orphans()  # a row is free: a session whose replica died may take it

    # ---- game characters (protocol v2) -----------------------------------------------------------------------------
    def check_text(self, text: str, what: str, max_chars: int, allow_empty: bool = False) -> str:
        """The engine's check of untrusted text (control tokens of the chat format need the tokenizer, which lives
        in the replicas): one call to a live replica, waiting ``check_timeout_s`` at most.
        :class:`~a2llm_rt.errors.InputError` when refused or when no replica answers."""
        ray = self._ray
        with self._lock:
            up = [r for r in self._replicas if r.up]
        if not up:
            raise InputError(f"{what} cannot be checked now: no replica is up; try again")
        r = min(up, key=lambda r: len(r.sessions))
        try:
            clean, why = ray.get(
                r.actor.check_text.remote(text, what, max_chars, allow_empty),  # type: ignore[attr-defined]
                timeout=self.check_timeout_s,
            )
        except Exception as e:  # noqa: BLE001 - the replica died or is stuck
            raise InputError(f"{what} cannot be checked now ({r.name()}: {type(e).__name__}); try again") from None
        if why is not None:
            raise InputError(why)
        return clean

    def _conversation(self, session_id: int) -> _Conversation:
        with self._lock:
            c = self._conversations.get(session_id)
        if c is None:
            raise InputError(f"session {session_id} is not open")
        return c

    def configure(self, session_id: int, persona: str | None, voice: str | None) -> bool:
        """Persona (None: the engine's default) and voice (None: the default) of a session, between turns, as
        :meth:`EngineSource.configure`: the persona is checked by a replica's engine (blocking, see
        :meth:`check_text`); the character is kept here and goes with every turn to the replica that runs it (a
        restored session gets it back before its conversation). A changed persona starts a new conversation (the
        replica's copy is reopened at the next turn); returns True then. :class:`~a2llm_rt.errors.InputError` for
        bad text or an unknown voice (nothing changed)."""
        c = self._conversation(session_id)
        if voice is not None and self.voices and voice not in self.voices:
            raise InputError(f"unknown voice {voice!r}")
        if persona is not None:
            persona = self.check_text(persona, "persona", self.limits.persona)
        with c.lock:  # between turns: a turn of this session holds it
            reset = persona != c.character.persona
            with self._lock:
                c.character = dataclasses.replace(c.character, persona=persona, voice=voice)
                if reset:
                    c.exchanges, c.opened_on = [], None  # its replica reopens it (new persona, empty history)
        return reset

    def set_context(self, session_id: int, text: str | None) -> None:
        """The game context for the next turns (no reset): sent with the next turn. The server checked it with
        :meth:`check_text` when it arrived."""
        c = self._conversation(session_id)
        with self._lock:
            c.character = dataclasses.replace(c.character, context=text or None)

    # ---- turns -------------------------------------------------------------------------------------------------------
    def run_turn(self, session_id: int, audio: np.ndarray | str, cancel: threading.Event) -> Iterator[Event]:
        """One turn: ``audio`` ``[n]`` float32 16 kHz, or a typed turn's text (protocol v2 UserText)."""
        with self._lock:
            c = self._conversations.get(session_id)
        if c is None:
            raise TurnError(f"session {session_id} is not open")
        if not isinstance(audio, str):
            audio = np.asarray(audio, np.float32)
        with c.lock:  # one turn of a session at a time (the previous one's exchange recorded)
            yield from self._turn(session_id, c, audio, cancel)

    def _turn(self, sid: int, c: _Conversation, audio: np.ndarray | str, cancel: threading.Event) -> Iterator[Event]:
        ray = self._ray
        for _attempt in range(3):  # a replica found dead / restarted before anything was sent: place and retry
            with self._lock:
                if c.replica is None:
                    self._place_orphans()
                if c.replica is None:
                    raise TurnError(
                        "this session's replica died and no other replica has a free row right now; "
                        "the conversation is kept: try the turn again"
                    )
                r = self._replicas[c.replica]
                incarnation = r.incarnation
                restore = None if (c.opened_on is not None and c.opened_on == incarnation) else list(c.exchanges)
                character = c.character
            gen = r.actor.turn.options(num_returns="streaming").remote(  # type: ignore[attr-defined]
                sid, audio, restore, character
            )
            sent = False
            watch = _Watch(cancel, r.actor, sid)
            with self._lock:
                self._watches.add(watch)
            try:
                while True:
                    try:  # blocks: polling with ray.wait costs ~0.4 ms of CPU a poll; the watcher forwards cancels
                        batch = ray.get(next(gen))
                    except StopIteration:
                        return
                    if isinstance(batch[0], _NotOpen):
                        with self._lock:
                            c.opened_on = None
                        break  # retry with the conversation
                    if isinstance(batch[0], _Failed) and batch[0].kind == "busy":  # not opened there
                        raise TurnError(f"{r.name()}: {batch[0].message}")
                    if restore is not None:
                        with self._lock:
                            c.opened_on, restore = incarnation, None
                    for item in batch:
                        if isinstance(item, _Sync):
                            self._record(c, audio, item)
                        elif isinstance(item, _Failed):
                            raise TurnError(item.message, item.kind)
                        else:
                            sent = True
                            yield item  # type: ignore[misc]
            except GeneratorExit:  # the server stopped reading (cancel, client gone): stop the replica's turn too
                watch.forward()
                raise
            except TurnError:
                raise
            except Exception as e:  # noqa: BLE001 - the replica died, restarted or cannot be reached
                if isinstance(e, ray.exceptions.RayTaskError):  # our actor code raised: a bug, the replica lives
                    with self._lock:
                        c.opened_on = None  # its copy of the session may be out of step: restore next turn
                    raise TurnError(f"{r.name()} failed this turn: {e}") from None
                why = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                self._mark_down(r, why, incarnation)
                if sent or cancel.is_set():
                    raise TurnError(
                        f"{r.name()} died during this turn ({why}); the next turn continues the conversation on "
                        "another replica"
                    ) from None
                log.warning("session %d: %s died before the turn started; retrying elsewhere", sid, r.name())
            finally:
                with self._lock:
                    self._watches.discard(watch)
            if cancel.is_set():
                return
        raise TurnError("no replica could take this turn (they keep failing)")

    def _record(self, c: _Conversation, audio: np.ndarray | str, sync: _Sync) -> None:
        with self._lock:
            c.exchanges = mirror_exchanges(c.exchanges, audio, sync.answer, sync.exchanges)


def check_ray_available() -> str:
    """Ray's version, or :class:`InputError` saying how to install it."""
    return str(_import_ray().__version__)
