"""Motion backends: torch and onnxruntime give the same face frames when driven like the engine (greedy), the int8
connector runs as a backend option, and tampered artifacts are refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from a2llm_rt.engine.motion_backend import MotionBackendConfig, OnnxRuntimeBackend, TorchBackend, load_motion_backend
from a2llm_rt.errors import InputError
from tests.export.helpers import tiny_engines


@pytest.fixture(scope="module")
def built():
    return tiny_engines()


@pytest.fixture(scope="module")
def backends(built):
    torch_b = load_motion_backend(MotionBackendConfig(kind="torch"), built.connector, built.motion)
    ort_b = load_motion_backend(MotionBackendConfig(kind="onnxruntime", engines=str(built.folder), threads=1))
    return torch_b, ort_b


def drive(backend, hidden: torch.Tensor, restart_at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The engine's motion path for a batch of sessions: hidden [B, T, d_llm] in windows of W (the last one short,
    padded to a multiple of G by repeating its last state, as the engine's ``pad_window``) -> connector -> greedy codes
    -> streaming decoder -> frames, then flush. ``restart_at``: window index at which session 1 starts a new turn
    (a mixed batch: ``first`` = [False, True]; its decoder row is flushed, then reset, as the engine ends a turn and
    starts the next; session 0 goes on in the same batch). Returns
    (codes [B, T/G, N_q], frames: one [T_b, D] array per session)."""
    cfg = backend.connector_cfg
    w, g = cfg.window, cfg.group
    b, t, _ = hidden.shape
    state = backend.init_decode_state(b, hidden.device)
    prev = None
    codes_all, frames_all = [], [[] for _ in range(b)]
    for i, start in enumerate(range(0, t, w)):
        x = hidden[:, start : start + w]
        if x.shape[1] % g:
            x = torch.cat([x, x[:, -1:].expand(-1, g - x.shape[1] % g, -1)], 1)
        first = None
        if restart_at is not None and i == restart_at and prev is not None:
            first = torch.tensor([False, True], device=hidden.device)
            end, _ = backend.decode_flush(state.select([1]))  # session 1's turn ends: its held-back frames
            frames_all[1].append(end.row(0))
            state.reset(first)  # and its next turn starts from a fresh row while session 0 goes on
        codes = backend.connector_step(x, prev, first).argmax(-1)
        out, state = backend.decode_step(codes, state)
        codes_all.append(codes)
        for r in range(b):
            frames_all[r].append(out.row(r))
        prev = codes
    out, state = backend.decode_flush(state)
    for r in range(b):
        frames_all[r].append(out.row(r))
    return torch.cat(codes_all, 1).cpu().numpy(), [torch.cat(f, 0).cpu().numpy() for f in frames_all]


@pytest.mark.parametrize("restart_at", [None, 2])
def test_torch_and_onnxruntime_yield_the_same_frames(backends, built, restart_at):
    torch.manual_seed(3)
    cfg = built.connector.cfg
    hidden = torch.randn(2, 3 * cfg.window + 3, cfg.d_llm)  # 3 full windows + a short last one
    codes_t, frames_t = drive(backends[0], hidden, restart_at)
    codes_o, frames_o = drive(backends[1], hidden, restart_at)
    assert codes_t.shape == codes_o.shape == (2, 3 * cfg.tokens_per_window + 1, cfg.n_q)
    np.testing.assert_array_equal(codes_o, codes_t)
    n_frames = codes_t.shape[1] * cfg.group  # lookahead frames come out of the flush
    for r in range(2):
        assert frames_t[r].shape == frames_o[r].shape == (n_frames, built.motion.dim)
        np.testing.assert_allclose(frames_o[r], frames_t[r], atol=1e-4, rtol=1e-4)
    assert np.abs(frames_t[0]).max() > 1e-3  # not trivially zero


def test_same_face_frames_through_the_engine_motion_helpers(backends, built):
    """The engine's own helpers (``connector_batch``, ``pad_window``, ``face_layouts``) with either backend's views."""
    decode = pytest.importorskip("a2llm_rt.engine.decode")
    if not all(hasattr(decode, f) for f in ("connector_batch", "pad_window", "face_layouts")):
        pytest.skip("the engine's motion helpers are not there")
    torch.manual_seed(4)
    cfg = built.connector.cfg
    sessions = [torch.randn(2 * cfg.window + 2, cfg.d_llm) for _ in range(2)]
    results = []
    for backend in backends:
        state = backend.init_decode_state(2)
        prev: list = [None, None]
        out: list[list[torch.Tensor]] = [[], []]
        for start in range(0, sessions[0].shape[0], cfg.window):
            wins = [decode.pad_window(list(s[start : start + cfg.window]), cfg.group)[0] for s in sessions]
            codes = decode.connector_batch(backend, wins, prev).argmax(-1)
            y, state = backend.decode_step(codes, state)
            for i in range(2):
                out[i].append(y.row(i))
            prev = [codes[i : i + 1] for i in range(2)]
        y = backend.decode_flush(state)[0]
        results.append([decode.face_layouts(torch.cat([*out[i], y.row(i)]).numpy(), None) for i in range(2)])
    for (f_t, a_t, l_t), (f_o, a_o, l_o) in zip(results[0], results[1], strict=True):
        np.testing.assert_allclose(f_o, f_t, atol=1e-4)
        np.testing.assert_allclose(a_o, a_t, atol=1e-4)
        np.testing.assert_allclose(l_o, l_t, atol=1e-4)


def test_int8_backend_option_runs_and_mostly_agrees(built):
    torch.manual_seed(5)
    cfg = built.connector.cfg
    b8 = OnnxRuntimeBackend(built.folder, int8=True, threads=1)
    assert b8.int8 and b8.connector_path.name == "connector_step.int8.onnx"
    hidden = torch.randn(4, cfg.window, cfg.d_llm)
    prev = torch.randint(0, cfg.codebook_size, (4, cfg.tokens_per_window, cfg.n_q))
    ref = built.connector.step(hidden, prev).argmax(-1)
    got = b8.greedy_codes(hidden, prev)
    assert got.shape == ref.shape and (got == ref).float().mean() > 0.9


def test_decoder_state_is_per_session(backends, built):
    """A state from the exported backend can be split and re-joined like the torch one (select/cat)."""
    _, ort_b = backends
    cfg = built.connector.cfg
    codes = torch.randint(0, cfg.codebook_size, (2, 3, cfg.n_q))
    y_all, st_all = ort_b.decode_step(codes, ort_b.init_decode_state(2))
    y_one, _ = ort_b.decode_step(codes[1:], ort_b.init_decode_state(1))
    np.testing.assert_allclose(y_all.frames[1:].numpy(), y_one.frames.numpy(), atol=1e-5)
    assert type(st_all.select([1])).__name__ == "DecoderState"


def test_tampered_artifact_is_refused(built, tmp_path):
    folder = tmp_path / "engines"
    shutil.copytree(built.folder, folder)
    OnnxRuntimeBackend(folder)  # the copy is intact
    path = folder / "decoder_step.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 mismatch") as e:
        OnnxRuntimeBackend(folder)
    assert e.value.path == path
    (folder / "connector_step.int8.onnx").unlink()
    with pytest.raises(InputError, match="missing"):
        OnnxRuntimeBackend(folder, int8=True)


def test_not_an_engines_folder(tmp_path):
    with pytest.raises(InputError, match="manifest.json"):
        OnnxRuntimeBackend(tmp_path)


def test_backend_config_and_input_checks(backends, built):
    with pytest.raises(ValueError):
        MotionBackendConfig(kind="onnxruntime")  # no engines folder
    with pytest.raises(ValueError):
        MotionBackendConfig(kind="tvm")
    with pytest.raises(InputError):
        load_motion_backend(MotionBackendConfig(kind="torch"))
    assert isinstance(backends[0], TorchBackend)
    cfg = built.connector.cfg
    ort_b = backends[1]
    with pytest.raises(InputError, match="short"):
        ort_b.connector_step(torch.randn(1, cfg.window, cfg.d_llm), torch.zeros(1, 1, cfg.n_q, dtype=torch.long))
    with pytest.raises(InputError):
        ort_b.connector_step(torch.randn(1, cfg.window + cfg.group, cfg.d_llm))
    with pytest.raises(InputError):
        ort_b.decode_step(torch.full((1, 1, cfg.n_q), cfg.codebook_size), ort_b.init_decode_state(1))
