"""The streaming contract's shared checks (``tests/streaming_checks.py``) on the motion decoder as the engine runs it:
through each motion backend (torch, and the exported decoder graph on onnxruntime) at look-ahead 0 and 1. The
exported graph takes and returns every field of the decoder state, so a row reset in the middle of a batch must give
a fresh stream's frames (count and values) from the graph alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from a2llm_rt.engine.builders import TINY_MOTION, tiny_motion_models
from a2llm_rt.engine.motion_backend import MotionBackend, OnnxRuntimeBackend, TorchBackend
from a2llm_rt.models.motion_tokenizer import MotionTokenizer
from tests.export.helpers import tiny_engines
from tests.streaming_checks import StreamCase, check_all


def backend_case(
    name: str, backend: MotionBackend, tokenizer: MotionTokenizer, steps: int = 9, atol: float = 1e-4
) -> StreamCase:
    """Codes ``[B, T, N_q]`` through ``backend.decode_step`` / ``decode_flush`` (outputs brought to the CPU); whole =
    the PyTorch tokenizer's whole-sequence ``decode``."""
    cfg = tokenizer.cfg

    def step(codes, state):
        out, state = backend.decode_step(codes, state)
        return out.frames.cpu(), out.lengths.cpu(), state

    def flush(state):
        out, state = backend.decode_flush(state)
        return out.frames.cpu(), out.lengths.cpu(), state

    def perturb(codes, i):
        codes = codes.clone()
        codes[:, i:] = (codes[:, i:] + 5) % cfg.codebook_size
        return codes

    return StreamCase(
        name=name, init=backend.init_decode_state, step=step, flush=flush, whole=tokenizer.decode,
        make_input=lambda b, t, g: torch.randint(0, cfg.codebook_size, (b, t, cfg.num_quantizers), generator=g),
        perturb=perturb, lookahead=cfg.lookahead, rate=cfg.group, steps=steps, atol=atol, rtol=atol,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lookahead0(tmp_path_factory):
    """An engines folder of a look-ahead-0 tiny motion stack (the shared one has look-ahead 1)."""
    from export.build_engines import build

    connector, _ = tiny_motion_models()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        motion = MotionTokenizer(dataclasses.replace(TINY_MOTION, lookahead=0)).eval()
        motion.set_normalization(torch.zeros(motion.dim), torch.full((motion.dim,), 0.3))
    folder = tmp_path_factory.mktemp("la0")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert build(connector, motion, folder, trt=False, log=lambda *_: None)["ok"]
    finally:
        torch.set_num_threads(n)
    return folder, connector, motion


def test_lookahead_1_graph_and_torch_backend():
    built = tiny_engines()
    assert built.motion.lookahead == 1
    ort_b = OnnxRuntimeBackend(built.folder, threads=1)
    with torch.no_grad():
        check_all(backend_case("onnxruntime la=1", ort_b, built.motion))
        check_all(backend_case("torch la=1", TorchBackend(built.connector, built.motion), built.motion))


def test_lookahead_0_graph_and_torch_backend(lookahead0):
    folder, connector, motion = lookahead0
    ort_b = OnnxRuntimeBackend(folder, threads=1)
    assert ort_b.lookahead == 0
    with torch.no_grad():
        check_all(backend_case("onnxruntime la=0", ort_b, motion))
        check_all(backend_case("torch la=0", TorchBackend(connector, motion), motion))


def test_an_engines_folder_without_the_per_session_counter_is_refused(tmp_path):
    """A folder exported before the look-ahead counter was part of the graph's state cannot run (it would need the
    runtime to re-implement the hold-back): a clear error asks for a re-export."""
    import json
    import shutil

    from a2llm_rt.errors import InputError

    folder = tmp_path / "old"
    shutil.copytree(tiny_engines().folder, folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["decoder_state"] = ["tokens", "frames"]
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="re-export"):
        OnnxRuntimeBackend(folder)
