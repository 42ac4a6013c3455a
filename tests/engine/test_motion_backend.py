"""The engine picks its motion backend from config: the SAME greedy turns through the Engine give the same face frames
(FLAME58 and ARKit52, within 1e-4) and identical motion codes with the torch and the onnxruntime backends; a tampered
or mismatched engines folder makes Engine construction fail with an InputError naming the file; the int8 option
constructs and runs; the chat CLI takes --motion-backend / --engines / --int8.

The engines folder is exported once per module (``export.build_engines.build``) from the engine's own tiny stack.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from a2llm_rt.engine.builders import build_tiny_stack
from a2llm_rt.engine.engine import Engine, EngineConfig
from a2llm_rt.engine.events import Error, FaceFrames, TurnEnd
from a2llm_rt.engine.motion_backend import MotionBackendConfig, OnnxRuntimeBackend, TorchBackend
from a2llm_rt.engine.sampling import SamplingConfig
from a2llm_rt.errors import InputError
from tests.engine.engine_helpers import of, tone

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4  # stated tolerance: onnxruntime fp32 vs PyTorch fp32 face frames (original units)


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """The tiny stack's connector + RVQ decoder exported to ONNX (fp32 and int8) with its manifest, once."""
    from export.build_engines import build

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope: the one_thread fixture is not active yet
    try:
        stack = build_tiny_stack(0)
        folder = tmp_path_factory.mktemp("engines")
        manifest = build(stack.connector, stack.motion, folder, int8=True, trt=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(n)
    assert manifest["ok"]
    return folder


def make_engine(kind: str, folder=None, int8: bool = False, layout: str = "flame58") -> Engine:
    backend = MotionBackendConfig(kind=kind, engines=None if folder is None else str(folder), int8=int8,
                                  threads=1 if kind == "onnxruntime" else 0)  # fmt: skip
    cfg = EngineConfig(max_sessions=2, max_seconds=1.2, min_seconds=1.0, max_len=1024,
                       sampling=SamplingConfig.greedy(), motion_backend=backend)  # fmt: skip
    return Engine(build_tiny_stack(0, motion_layout=layout), cfg)


def run_turns(engine: Engine) -> dict:
    """Two sessions, the second joining 12 steps after the first (so that one connector batch holds session 0's
    second window and session 1's first: ``first`` = [False, True]), then a second turn on session 0. Returns
    per-session FLAME58 / ARKit52 frames, the motion codes fed to the decoder (in order) with each call's per-row
    look-ahead counters, the connector's ``first`` masks, and the end reasons."""
    codes: list[np.ndarray] = []
    firsts: list[list[bool]] = []
    filled: list[list[int]] = []
    backend = engine.motion_backend
    decode_step, connector_step = backend.decode_step, backend.connector_step

    def spy_decode(c, state):
        codes.append(c.cpu().numpy().copy())
        filled.append(state.filled.tolist())
        return decode_step(c, state)

    def spy_connector(x, prev=None, first=None):
        if first is not None:
            firsts.append(first.tolist())
        return connector_step(x, prev, first)

    backend.decode_step, backend.connector_step = spy_decode, spy_connector
    s0, s1 = engine.new_session(session_id=0), engine.new_session(session_id=1)
    events = []
    engine.submit(s0, tone(0.5, 220.0))
    for _ in range(12):
        events += engine.step()
    engine.submit(s1, tone(0.8, 330.0))
    events += engine.run_until_idle()
    events += engine.run_turn(s0, tone(0.3, 440.0))
    assert not of(events, Error), of(events, Error)
    ends = [(e.session_id, e.reason, e.counts) for e in of(events, TurnEnd)]
    out = {"codes": codes, "firsts": firsts, "filled": filled, "ends": ends}
    for sid in (0, 1):
        ff = of(events, FaceFrames, sid)
        out[f"flame58_{sid}"] = np.concatenate([f.flame58 for f in ff])
        out[f"arkit52_{sid}"] = np.concatenate([f.arkit52 for f in ff])
    return out


@pytest.fixture(scope="module")
def torch_run():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_turns(make_engine("torch"))
    finally:
        torch.set_num_threads(n)


def test_torch_and_onnxruntime_engines_yield_the_same_face_frames(engines, torch_run):
    engine = make_engine("onnxruntime", engines)
    assert isinstance(engine.motion_backend, OnnxRuntimeBackend)  # the engine runs the exported graphs
    ort_run = run_turns(engine)
    assert ort_run["ends"] == torch_run["ends"]
    assert torch_run["firsts"] == ort_run["firsts"] == [[False, True]]  # the mixed batch was exercised
    assert len(ort_run["codes"]) == len(torch_run["codes"]) >= 6
    for a, b in zip(ort_run["codes"], torch_run["codes"], strict=True):
        np.testing.assert_array_equal(a, b)
    for sid in (0, 1):
        for layout in ("flame58", "arkit52"):
            t, o = torch_run[f"{layout}_{sid}"], ort_run[f"{layout}_{sid}"]
            assert t.shape == o.shape and t.shape[0] >= 25
            np.testing.assert_allclose(o, t, atol=ATOL, rtol=0)
    assert np.abs(torch_run["flame58_0"]).max() > 1e-2  # the frames carry signal, the comparison is not vacuous


def test_default_backend_is_torch():
    engine = make_engine("torch")
    assert EngineConfig().motion_backend.kind == "torch"
    assert isinstance(engine.motion_backend, TorchBackend)
    assert engine.motion_backend.motion is engine.stack.motion  # the PyTorch modules themselves
    assert engine.motion_backend.connector is engine.stack.connector


def test_int8_option_constructs_and_runs(engines, torch_run):
    engine = make_engine("onnxruntime", engines, int8=True)
    assert engine.motion_backend.connector_path.name == "connector_step.int8.onnx"
    s = engine.new_session()
    ff = of(engine.run_turn(s, tone(0.5, 220.0)), FaceFrames)
    frames = np.concatenate([f.arkit52 for f in ff])
    first_turn = next(counts for sid, _, counts in torch_run["ends"] if sid == 0)  # same audio, same tokens
    assert frames.shape[0] == first_turn["face_frames"] > 0 and np.isfinite(frames).all()
    assert frames.min() >= 0.0 and frames.max() <= 1.0


def test_tampered_artifact_is_refused(engines, tmp_path):
    bad = tmp_path / "engines"
    shutil.copytree(engines, bad)
    data = bytearray((bad / "decoder_step.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "decoder_step.onnx").write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 mismatch") as e:
        make_engine("onnxruntime", bad)
    assert e.value.path is not None and str(e.value.path).endswith("decoder_step.onnx")
    (bad / "connector_step.int8.onnx").unlink()
    with pytest.raises(InputError, match="missing"):
        make_engine("onnxruntime", bad, int8=True)


def test_bad_engines_folder_and_other_motion_stack_are_refused(engines, tmp_path):
    with pytest.raises(InputError, match="manifest.json"):
        make_engine("onnxruntime", tmp_path)
    with pytest.raises(InputError, match="different motion stack") as e:  # exported from a FLAME58 stack
        make_engine("onnxruntime", engines, layout="arkit52")
    assert "layout" in str(e.value)
    with pytest.raises(ValueError, match="engines folder"):
        MotionBackendConfig(kind="onnxruntime")
    with pytest.raises(InputError, match="unknown"):
        EngineConfig.from_dict({"motion_backend": {"kind": "onnxruntime", "engine": "x"}})


def test_chat_cli_takes_the_backend_options(engines, tmp_path, capsys):
    from apps.chat import main

    wav = tmp_path / "q.wav"
    wavfile.write(wav, 16000, (tone(0.5, 220.0) * 32767).astype(np.int16))
    common = ["--backbone", "tiny", "--motion", "tiny", "--wav", str(wav), "--max-seconds", "0.8", "--greedy"]
    rc = main([*common, "--out", str(tmp_path / "o"), "--motion-backend", "onnxruntime", "--engines", str(engines),
               "--int8"])  # fmt: skip
    assert rc == 0
    import json

    timings = json.loads((tmp_path / "o" / "timings.json").read_text())
    assert timings["motion_backend"]["kind"] == "onnxruntime" and timings["motion_backend"]["int8"]
    assert timings["face_frames"] > 0
    assert main([*common, "--out", str(tmp_path / "p"), "--motion-backend", "onnxruntime"]) == 2
    assert "engines folder" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "p"), "--int8"]) == 2  # int8 is an onnxruntime option
    assert not (tmp_path / "p").exists()


def test_readme_recipe_runs_the_torch_backends_weights(caplog):
    """The README's recipe: ``python -m export.build_engines --motion tiny --out engines/``, then serve ``--backbone
    tiny --motion tiny --motion-backend onnxruntime --engines engines/``. The exported graphs hold the very weights
    of the torch backend's tiny stack (one builder, :func:`~a2llm_rt.engine.builders.tiny_motion_models`), so the
    two backends give the same frames."""
    import logging

    from a2llm_rt.engine.artifacts import read_manifest, weights_sha256
    from a2llm_rt.engine.builders import load_stack
    from tests.export.helpers import tiny_engines

    built = tiny_engines()  # through the CLI: main(["--motion", "tiny", "--out", ...])
    assert built.rc == 0, built.stderr
    stack = load_stack("tiny", "tiny")  # what serve / chat load for --backbone tiny --motion tiny
    arts = read_manifest(built.folder)["artifacts"]
    assert arts["connector_onnx"]["weights_sha256"] == weights_sha256(stack.connector)
    assert arts["decoder_onnx"]["weights_sha256"] == weights_sha256(stack.motion)
    runs = []
    for kind in ("torch", "onnxruntime"):
        backend = MotionBackendConfig(kind=kind, engines=str(built.folder) if kind != "torch" else None,
                                      threads=1 if kind == "onnxruntime" else 0)  # fmt: skip
        cfg = EngineConfig(max_sessions=1, max_seconds=1.2, min_seconds=1.0, max_len=1024,
                           sampling=SamplingConfig.greedy(), motion_backend=backend)  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="a2llm_rt.engine.motion_backend"):
            engine = Engine(load_stack("tiny", "tiny"), cfg)
        s = engine.new_session()
        events = engine.run_turn(s, tone(0.5, 220.0))
        assert not of(events, Error)
        runs.append(np.concatenate([f.flame58 for f in of(events, FaceFrames)]))
    assert "other weights" not in caplog.text
    assert runs[0].shape == runs[1].shape and runs[0].shape[0] >= 25
    np.testing.assert_allclose(runs[1], runs[0], atol=ATOL, rtol=0)
    assert np.abs(runs[0]).max() > 1e-2


def test_engine_decodes_sessions_at_different_stages_in_one_call(torch_run):
    """Session 1's first window and session 0's second go through ONE decoder call although their look-ahead
    counters differ (0 and 1: the state is per session), and session 1's frames equal those of the same turn alone."""
    assert any(len(f) == 2 and f[0] != f[1] for f in torch_run["filled"]), torch_run["filled"]
    engine = make_engine("torch")
    s = engine.new_session(session_id=1)
    events = engine.run_turn(s, tone(0.8, 330.0))
    alone = np.concatenate([f.flame58 for f in of(events, FaceFrames)])
    assert alone.shape == torch_run["flame58_1"].shape
    np.testing.assert_allclose(torch_run["flame58_1"], alone, atol=1e-5, rtol=0)
