"""The hands-free VAD thresholds are server settings: ``serve --vad-*`` -> ``ServerConfig.vad`` -> the ServerInfo a
v2 client receives and the utterance segmenter the server runs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from a2llm_rt.audio_vad import VadConfig
from plugin_bridge import serve
from plugin_bridge.client import CharacterClient
from plugin_bridge.scripted_source import ScriptedSource
from plugin_bridge.server import BridgeServer, ServerConfig


def test_serve_options_build_the_vad_config():
    args = serve.build_parser().parse_args(
        ["--vad-threshold", "0.7", "--vad-min-silence-ms", "900", "--vad-barge-in-ms", "200"]
    )
    cfg = serve.server_config(args)
    assert cfg.vad == VadConfig(threshold=0.7, min_silence_ms=900.0, barge_in_ms=200.0)
    assert serve.server_config(serve.build_parser().parse_args([])).vad == VadConfig()  # defaults untouched


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--vad-threshold", "1.5"], "threshold must be in (0, 1)"),
     (["--vad-min-silence-ms", "5"], "min_silence_ms in [32, 10000]")],
)  # fmt: skip
def test_serve_refuses_bad_vad_thresholds(argv, message, capsys):
    assert serve.main(["--scripted", *argv]) == 2
    assert message in capsys.readouterr().err


def test_changed_thresholds_reach_server_info_and_the_segmenter():
    vad = VadConfig(threshold=0.7, min_speech_ms=150.0, min_silence_ms=900.0, barge_in_ms=200.0)
    server = BridgeServer(ScriptedSource(pace=0.0), ServerConfig(bind="tcp://127.0.0.1:*", vad=vad)).start()
    try:
        with CharacterClient(server.endpoint, ("arkit52",), idle_face=False) as c:
            info = c.server_info
            assert (info.vad_min_speech_ms, info.vad_min_silence_ms, info.vad_barge_in_ms) == (150, 900, 200)
            c.send_mic(np.zeros(1600, np.float32), 16000, 0)  # the first mic audio starts the segmenter
            deadline = time.monotonic() + 60.0
            while server._segmenter is None and time.monotonic() < deadline:
                time.sleep(0.05)
        seg = server._segmenter
        assert seg is not None and seg.cfg == vad
        assert seg.min_silence == 900 * 16 and seg.barge_in == 200 * 16  # samples at 16 kHz
    finally:
        server.stop()
    default = BridgeServer(ScriptedSource(pace=0.0), ServerConfig(bind="tcp://127.0.0.1:*")).start()
    try:
        with CharacterClient(default.endpoint, ("arkit52",), idle_face=False) as c:
            assert c.server_info.vad_min_silence_ms == round(VadConfig().min_silence_ms) != 900
    finally:
        default.stop()
