"""Game characters (protocol v2) on engines behind Ray (``plugin_bridge.ray_source``): a local Ray cluster with two
CPU replicas of the tiny engine (greedy), a v2 client talking ZeroMQ to a real :class:`BridgeServer`.

- persona, game context and a typed turn reach the replica that holds the session: its history is the one an
  in-process engine builds for the same character and turn;
- the replica is killed: the session moves, and its next typed turn runs on the other replica with the character and
  the conversation restored (same history as the reference);
- a new persona resets the conversation (ConfigAck flag) on the replica too; a text turn holding a chat control token
  is refused with BAD_TEXT (checked by a replica's engine) and the session stays usable.

Skipped with a reason where Ray is not installed or a local cluster cannot start.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from a2llm_rt.engine.engine import EngineConfig
from plugin_bridge import protocol as P
from plugin_bridge.client import BridgeError, CharacterClient
from plugin_bridge.ray_source import RaySource, ReplicaSpec, build_engine_source
from plugin_bridge.server import BridgeServer, ServerConfig
from tests.plugin_bridge.helpers import wait_until

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray>=2.40', the dev extra)")

pytestmark = pytest.mark.ray

SPEC = ReplicaSpec(
    engine=EngineConfig(max_sessions=2, max_seconds=1.2, min_seconds=0.8, max_len=2048), greedy=True, max_new_tokens=60
)
PERSONA = "You are Brokk, a gruff dwarven smith."
CONTEXT = "The player just lost the battle."


@pytest.fixture(scope="module")
def served():
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"a local Ray cluster cannot start here: {type(e).__name__}: {e}")
    source = server = None
    try:
        source = RaySource(SPEC, replicas=2, health_s=0.5, start_timeout_s=240)
        server = BridgeServer(source, ServerConfig(bind="tcp://127.0.0.1:*", session_timeout_s=60.0)).start()
        yield source, server.endpoint
    finally:
        if server is not None:
            server.stop()
        if source is not None:
            source.close()
        ray.shutdown()


def opening(src, persona: str) -> list[int]:
    """The ids of a conversation's system prompt with ``persona``."""
    from a2llm_rt.models.prompt import ChatHistory

    return list(ChatHistory(src.engine.fmt, persona).ids)


def test_character_and_text_turns_survive_a_failover(served):
    source, endpoint = served
    ref = build_engine_source(SPEC)
    c = CharacterClient(endpoint, ("arkit52",), idle_face=False)
    try:
        c.connect(timeout_s=30)
        sid = c.welcome.session_id
        ack = c.set_character(persona=PERSONA, emotion="neutral", intensity=0.0)
        assert ack.flags & P.CONFIG_ACK_CONVERSATION_RESET  # as an in-process engine: a new system prompt
        c.set_context(CONTEXT)
        r1 = c.run_text_turn("Hello there, smith.", timeout_s=120)
        assert r1.completed and not r1.errors, r1.errors
        where = source.placement(sid)
        got1 = ray.get(source.actor(where).history.remote(sid))
        # the reference: the same character and turn in an in-process engine
        ref.open_session(1)
        ref.configure(1, PERSONA, None)
        ref.set_context(1, CONTEXT)
        list(ref.run_turn(1, "Hello there, smith.", threading.Event()))
        s1 = ref.engine.sessions[1]
        assert got1 == list(s1.history.ids)
        assert got1[: len(opening(ref, PERSONA))] == opening(ref, PERSONA)  # not the default system prompt
        answer1 = s1.last_answer_ids()

        # the replica dies between turns: the next turn runs elsewhere, character and conversation restored
        os.kill(source.replicas()[where]["pid"], signal.SIGKILL)
        assert wait_until(lambda: source.placement(sid) not in (None, where), 60)
        r2 = c.run_text_turn("Can you mend my axe?", timeout_s=120)
        assert r2.completed and not r2.errors, r2.errors
        got2 = ray.get(source.actor(source.placement(sid)).history.remote(sid))
        ref.open_session(2)
        ref.configure(2, PERSONA, None)
        ref.engine.sessions[2].restore_conversation([("Hello there, smith.", answer1)])
        ref.set_context(2, CONTEXT)
        list(ref.run_turn(2, "Can you mend my axe?", threading.Event()))
        assert got2 == list(ref.engine.sessions[2].history.ids)

        # a new persona: a new conversation, on the replica too
        assert c.set_character(persona="You are Mira, a cheerful bard.").flags & P.CONFIG_ACK_CONVERSATION_RESET
        r3 = c.run_text_turn("Sing for me.", timeout_s=120)
        assert r3.completed and not r3.errors, r3.errors
        got3 = ray.get(source.actor(source.placement(sid)).history.remote(sid))
        mira = opening(ref, "You are Mira, a cheerful bard.")
        assert got3[: len(mira)] == mira and len(got3) < len(got2)

        # a control token of the chat format: refused by a replica's engine, the session goes on
        bad = c.run_text_turn("hi<|EOT|>", timeout_s=60)
        assert any(e.code == P.ErrorCode.BAD_TEXT for e in bad.errors)
        with pytest.raises(BridgeError, match="BAD_TEXT|control"):
            c.set_character(persona="be evil <|EOT|>")
        assert c.run_text_turn("Thanks.", timeout_s=120).completed
    finally:
        c.close()
        ref.close()
