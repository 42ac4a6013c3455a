"""``serve --speech-engines DIR --speech-backend onnxruntime``: the server's stack options reach the native token2wav
(:func:`a2llm_rt.engine.builders.load_stack` -> :meth:`NativeToken2WavVocoder.from_directory`), a turn through the
engine speaks the same PCM as the torch backend, and a missing or incompatible folder is a clear error (exit 2)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from a2llm_rt.engine.events import AudioChunk
from a2llm_rt.speech.config import FlowConfig
from a2llm_rt.speech.token2wav import load_token2wav
from export.speech_export import export_speech
from plugin_bridge import serve
from tests.engine.engine_helpers import of, tone

from .helpers import tiny_model, tiny_voice
from .test_checkpoint import _write_folder

pytestmark = pytest.mark.slow

TINY_CODES = 64  # the tiny backbone's audio codes (a token2wav must know exactly the backbone's codes)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A token2wav folder of the tiny real-architecture model sized to the tiny backbone, a voice file, the folder's
    ONNX export, an export of another model (other hyperparameters) and a folder of another manifest format."""
    root = tmp_path_factory.mktemp("serve_speech")
    model = tiny_model(seed=4, flow=dataclasses.replace(FlowConfig.tiny(), vocab_size=TINY_CODES))
    folder = _write_folder(root, model)
    tiny_voice(model, seed=1, name="alice").save(root / "alice.voice.safetensors")
    export_speech(load_token2wav(folder), root / "engines")
    export_speech(tiny_model(seed=5), root / "other_engines")  # vocab 6561: not this folder's graphs
    (root / "motion_engines").mkdir()
    (root / "motion_engines" / "manifest.json").write_text('{"format": "a2llm-engines/1", "artifacts": {}}')
    return root


def _args(root, *extra: str) -> list[str]:
    return ["--backbone", "tiny", "--motion", "tiny", "--vocoder", str(root / "token2wav"),
            "--voice", f"alice={root / 'alice.voice.safetensors'}", "--max-seconds", "3.0", "--min-seconds", "2.4",
            "--pace", "0", *extra]  # fmt: skip


def _turn_pcm(argv: list[str]) -> tuple[np.ndarray, str]:
    """The PCM of one turn through the engine the serve CLI builds from ``argv``; and the estimator's runtime."""
    source = serve._source(serve.build_parser().parse_args(argv))
    try:
        eng = source.engine
        est = type(eng.stack.vocoder.model.flow.decoder.estimator.graph_step).__name__
        s = eng.new_session(session_id=0)
        ev = eng.run_turn(s, tone(0.5, 220.0))
        return np.concatenate([c.pcm for c in of(ev, AudioChunk, s.id)]), est
    finally:
        source.close()


def test_serve_speech_engines_onnxruntime_speaks_like_torch(speech):
    ref, est_ref = _turn_pcm(_args(speech, "--speech-backend", "torch"))
    got, est = _turn_pcm(_args(speech, "--speech-engines", str(speech / "engines"), "--speech-backend", "onnxruntime"))
    assert est == "_OrtEstimatorStep" and est_ref != est  # the graphs really ran
    assert ref.size >= (28 + 25) * 960  # two token2wav chunks at least: the streamed path ran
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) <= 1e-3 * float(np.abs(ref).max()) + 1e-5
    auto, est_auto = _turn_pcm(_args(speech, "--speech-engines", str(speech / "engines")))  # auto: ORT on a CPU
    assert est_auto == "_OrtEstimatorStep" and np.allclose(auto, got, atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--speech-engines", "{root}/nowhere"), "unreadable speech engines manifest"),
        (("--speech-engines", "{root}/other_engines"), "other token2wav hyperparameters"),
        (("--speech-backend", "onnxruntime"), "needs a speech engines folder"),
        (("--speech-backend", "cuda-magic"), "unknown speech backend 'cuda-magic'"),
        (("--speech-engines", "{root}/motion_engines"), "not a speech engines folder"),
    ],
)
def test_serve_refuses_bad_speech_engines(speech, capsys, extra, message):
    argv = _args(speech, *(e.format(root=speech) for e in extra))
    assert serve.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_speech_engines_need_a_token2wav_vocoder(speech, capsys, tmp_path):
    assert serve.main(["--backbone", "tiny", "--motion", "tiny", "--speech-engines", str(speech / "engines")]) == 2
    assert "test tone vocoder" in capsys.readouterr().err
    shutil.copytree(speech / "engines", tmp_path / "engines")
    (tmp_path / "engines" / "hift_decoder.onnx").write_bytes(b"tampered")
    assert serve.main(_args(speech, "--speech-engines", str(tmp_path / "engines"))) == 2
    assert "sha256" in capsys.readouterr().err
