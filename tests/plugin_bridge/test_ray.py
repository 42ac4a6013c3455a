"""Engines on Ray behind one bridge (``plugin_bridge.ray_source``), on a local Ray cluster started by the test:
two CPU replicas of the tiny engine (greedy), clients talking ZeroMQ to a real :class:`BridgeServer`.

- placement: sessions spread over the replicas; SERVER_BUSY only when both are full;
- six sessions at once: every answer is the one a single in-process engine gives for the same conversation (text,
  audio and face; and the replicas' histories hold the reference's token ids);
- one replica's process killed mid-answer: its sessions' turns fail with TURN_FAILED naming the replica, their next
  turn runs on the other replica with the conversation restored (same answer as the reference), the other sessions'
  turns are untouched; Ray restarts the replica and it takes new sessions again;

Skipped with a reason where Ray is not installed or a local cluster cannot start.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

import numpy as np
import pytest
import torch

from a2llm_rt.engine.engine import EngineConfig
from plugin_bridge import protocol as P
from plugin_bridge.client import BridgeClient, BridgeError
from plugin_bridge.ray_source import RaySource, ReplicaSpec, build_engine_source
from plugin_bridge.server import BridgeServer, ServerConfig
from plugin_bridge.turn_source import AudioChunk, FaceFrames, TextDelta, TurnEnd
from tests.plugin_bridge.helpers import wait_until

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray>=2.40', the dev extra)")

pytestmark = pytest.mark.ray

ROWS = 6  # per replica: the 3 sessions of a dead replica fit on the other one
SPEC = ReplicaSpec(
    engine=EngineConfig(max_sessions=ROWS, max_seconds=1.2, min_seconds=1.2, max_len=2048),
    pace=1.0,  # answers leave in real time: a kill on the first audio lands mid-answer
    greedy=True,
    max_new_tokens=400,
)


def tone(freq: float, seconds: float = 0.4) -> np.ndarray:
    return (0.2 * np.sin(2 * np.pi * freq * np.arange(int(16000 * seconds)) / 16000)).astype(np.float32)


class Recorder:
    """Passes a :class:`RaySource` through to the server and keeps the audio of every turn as the source got it."""

    def __init__(self, inner: RaySource):
        self.inner = inner
        self.layouts = inner.layouts
        self.audio: dict[int, list[np.ndarray]] = {}

    def open_session(self, sid: int) -> None:
        self.inner.open_session(sid)

    def close_session(self, sid: int) -> None:
        self.inner.close_session(sid)

    def run_turn(self, sid: int, audio: np.ndarray, cancel: threading.Event):
        self.audio.setdefault(sid, []).append(np.array(audio, np.float32))
        return self.inner.run_turn(sid, audio, cancel)


@pytest.fixture(scope="module")
def served():
    if ray.is_initialized():  # another test module left its cluster running in this process
        ray.shutdown()
    try:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"a local Ray cluster cannot start here: {type(e).__name__}: {e}")
    source = None
    server = None
    try:
        source = RaySource(SPEC, replicas=2, health_s=0.5, start_timeout_s=240)
        rec = Recorder(source)
        server = BridgeServer(
            rec, ServerConfig(bind="tcp://127.0.0.1:*", heartbeat_s=0.2, session_timeout_s=30.0)
        ).start()
        yield source, rec, server.endpoint
    finally:
        if server is not None:
            server.stop()
        if source is not None:
            source.close()
        ray.shutdown()


def connect(endpoint: str, n: int) -> list[BridgeClient]:
    clients = [BridgeClient(endpoint, ("arkit52",)) for _ in range(n)]
    for c in clients:
        c.connect(timeout_s=30)
    return clients


def run_all(clients: list[BridgeClient], audios: list[np.ndarray], on_message=None) -> list:
    """One turn on every client at once; the results in client order."""
    out: list = [None] * len(clients)
    go = threading.Barrier(len(clients))

    def run(i: int) -> None:
        go.wait()
        cb = None if on_message is None else (lambda m, r, i=i: on_message(i, m, r))
        try:
            out[i] = clients[i].run_turn(audios[i], 16000, timeout_s=120, retries=0, on_message=cb)
        except Exception as e:  # noqa: BLE001
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    return out


def reference(conversations: dict[int, list[np.ndarray]]) -> dict[int, tuple[list[tuple], list[int]]]:
    """Each conversation on ONE in-process engine (greedy, the same spec): per turn (text, pcm, arkit52 frames),
    and the final history ids. Sessions run at once (batched), their turns in order."""
    torch.set_num_threads(1)
    src = build_engine_source(dataclasses.replace(SPEC, pace=0.0))
    out: dict = {}

    def run(sid: int) -> None:
        src.open_session(sid)
        turns = []
        for a in conversations[sid]:
            ev = list(src.run_turn(sid, a, threading.Event()))
            assert isinstance(ev[-1], TurnEnd)
            turns.append(
                (
                    "".join(e.text for e in ev if isinstance(e, TextDelta)),
                    np.concatenate([e.pcm for e in ev if isinstance(e, AudioChunk)]),
                    np.concatenate([e.frames["arkit52"] for e in ev if isinstance(e, FaceFrames)]),
                )
            )
        out[sid] = (turns, list(src.engine.sessions[sid].history.ids))

    try:
        threads = [threading.Thread(target=run, args=(sid,)) for sid in conversations]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        src.close()
    return out


def same_answer(res, ref: tuple) -> None:
    assert res.completed, (res.turn_end, [e.message for e in res.errors])
    assert res.text == ref[0]
    np.testing.assert_array_equal(res.audio, ref[1])
    np.testing.assert_allclose(res.face["arkit52"], ref[2], atol=1e-5)


def test_sessions_spread_and_server_busy_only_when_every_replica_is_full(served):
    source, _, endpoint = served
    clients = connect(endpoint, 2 * ROWS)
    try:
        per_replica = [len(r["sessions"]) for r in source.replicas()]
        assert per_replica == [ROWS, ROWS]
        placed = [source.placement(c.welcome.session_id) for c in clients[:4]]
        assert sorted(placed) == [0, 0, 1, 1]  # least-loaded first: new sessions alternate
        extra = BridgeClient(endpoint)
        with pytest.raises(BridgeError, match="SERVER_BUSY"):
            extra.connect(timeout_s=10)
        extra.close()
    finally:
        for c in clients:
            c.close()
    assert wait_until(lambda: all(not r["sessions"] for r in source.replicas()), 10)


def test_cancel_mid_turn_reaches_the_replica_then_the_next_turn_completes(served):
    source, _, endpoint = served
    (c,) = connect(endpoint, 1)
    try:
        sid = c.welcome.session_id

        def cancel_on_audio(msg, res):
            if isinstance(msg, P.AudioChunk) and msg.sample_offset == 0:
                c.cancel(res.turn_id)

        res = c.run_turn(tone(210), 16000, timeout_s=120, retries=0, on_message=cancel_on_audio)
        assert res.turn_end.status == P.TurnStatus.CANCELLED
        assert res.turn_end.audio_samples < 1.2 * 24000  # stopped before the whole (paced) answer
        replica = source.actor(source.placement(sid))
        # the replica's engine stopped too: the cancelled exchange is closed in its history, no turn is left running
        assert wait_until(lambda: not ray.get(replica.info.remote())["busy"], 30)
        res2 = c.run_turn(tone(230), 16000, timeout_s=120, retries=0)
        assert res2.completed, (res2.turn_end, res2.errors)
        assert res2.turn_end.audio_samples >= round(1.2 * 24000)  # min_seconds = max_seconds: the whole answer
    finally:
        c.close()
    assert wait_until(lambda: all(not r["sessions"] for r in source.replicas()), 10)


def test_six_sessions_match_one_engine_and_survive_a_replica_killed_mid_answer(served):
    source, rec, endpoint = served
    clients = connect(endpoint, 6)
    try:
        sids = [c.welcome.session_id for c in clients]
        where = [source.placement(s) for s in sids]
        assert sorted(where) == [0, 0, 0, 1, 1, 1]
        victims = [i for i in range(6) if where[i] == 0]
        survivors = [i for i in range(6) if where[i] == 1]
        dead_pid = source.replicas()[0]["pid"]

        # turn 1: six sessions at once
        res1 = run_all(clients, [tone(150 + 40 * i) for i in range(6)])
        for i, r in enumerate(res1):
            assert not isinstance(r, Exception) and r.completed, (i, r)

        # turn 2: replica 0's process is killed once each of its sessions has received answer audio (paced in
        # real time, every answer still has most of its 1.2 s to go)
        killed = threading.Event()
        lock = threading.Lock()
        heard: set[int] = set()

        def kill_on_audio(i: int, msg: P.Message, _res) -> None:
            if i in victims and isinstance(msg, P.AudioChunk):
                with lock:
                    heard.add(i)
                    if heard == set(victims) and not killed.is_set():
                        os.kill(dead_pid, signal.SIGKILL)
                        killed.set()

        res2 = run_all(clients, [tone(170 + 40 * i, 0.3) for i in range(6)], on_message=kill_on_audio)
        assert killed.is_set()
        for i in victims:
            r = res2[i]
            assert r.turn_end is not None and r.turn_end.status == P.TurnStatus.FAILED, (i, r.turn_end)
            assert [e.code for e in r.errors] == [P.ErrorCode.TURN_FAILED]
            msg = r.errors[0].message
            assert "replica 0" in msg and "died" in msg and "another replica" in msg, msg
        for i in survivors:
            assert res2[i].completed and not res2[i].errors, (i, res2[i].turn_end, res2[i].errors)

        # turn 3: every session answers; the dead replica's sessions now run on replica 1
        res3 = run_all(clients, [tone(190 + 40 * i, 0.5) for i in range(6)])
        assert [source.placement(s) for s in sids] == [1] * 6
        histories = {s: ray.get(source.actor(1).history.remote(s)) for s in sids}

        # the reference: one engine, each conversation as the replicas hold it (the failed turn is not part of it)
        conv = {s: [a for k, a in enumerate(rec.audio[s]) if not (i in victims and k == 1)] for i, s in enumerate(sids)}
        assert all(len(conv[s]) == (2 if i in victims else 3) for i, s in enumerate(sids))
        ref = reference(conv)
        for i, s in enumerate(sids):
            turns, ids = ref[s]
            same_answer(res1[i], turns[0])
            if i in survivors:  # untouched by the other replica's death
                same_answer(res2[i], turns[1])
            same_answer(res3[i], turns[-1])  # victims: the restored conversation continues as on one engine
            assert histories[s] == ids, f"session {s}: the replica's history differs from the reference"

        # Ray restarts the replica; it comes back under a new process and takes new sessions again
        assert wait_until(lambda: source.replicas()[0]["up"] and source.replicas()[0]["pid"] != dead_pid, 180)
        late = connect(endpoint, 1)[0]
        try:
            lsid = late.welcome.session_id
            assert source.placement(lsid) == 0
            r = late.run_turn(tone(400), 16000, timeout_s=120, retries=0)
            assert r.completed, (r.turn_end, r.errors)
            # a replica that dies between turns: the next turn runs elsewhere (or on its restart) without an error,
            # with the conversation restored
            clients.pop().close()  # frees a row on replica 1
            before = ray.get(source.actor(0).history.remote(lsid))
            os.kill(source.replicas()[0]["pid"], signal.SIGKILL)
            r = late.run_turn(tone(420), 16000, timeout_s=120, retries=0)
            assert r.completed and not r.errors, (r.turn_end, r.errors)
            after = ray.get(source.actor(source.placement(lsid)).history.remote(lsid))
            assert after[: len(before)] == before and len(after) > len(before)
        finally:
            late.close()
    finally:
        for c in clients:
            c.close()


def test_replicas_that_cannot_be_placed_are_a_clear_error(served):
    from a2llm_rt.errors import InputError

    with pytest.raises(InputError, match=r"only 0 of 1 replicas started within 3 s \(each needs 64 CPU"):
        RaySource(SPEC, replicas=1, cpus=64, start_timeout_s=3)  # the test cluster has 4
