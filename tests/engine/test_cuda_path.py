"""The CUDA path (issue 12): what can be checked on a CPU is checked here on the CPU (sampling with CPU generators
and picks on the logits' device, the repetition-penalty mask from ids, host<->device copies per engine step, batched
motion decoding == per session, TensorRT batch splitting, the runner's eager fallbacks, folded GQA attention); the
rest is ``gpu``-marked (skipped without CUDA) and run by ``tools/gpu_check.sh`` where a GPU is lent."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from a2llm_rt.engine.decode import StepRunner, split_state
from a2llm_rt.engine.events import FaceFrames, TurnEnd
from a2llm_rt.engine.sampling import (
    SamplingBatch,
    SamplingConfig,
    SamplingParams,
    apply_repetition_penalty,
    make_generator,
    motion_uniforms,
    sample_codes,
    sample_motion_codes,
    sample_packed,
    sample_tokens,
)
from a2llm_rt.engine.trt_runner import run_in_batches
from a2llm_rt.errors import InputError
from a2llm_rt.models.backbone import grouped_attention
from tests.engine.engine_helpers import greedy_engine, of, summary, tone

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- sampling -------------------------------------------------------------------------------------------------------
def _penalty_reference(x: torch.Tensor, history: list[list[int]], pen: list[float]) -> torch.Tensor:
    out = x.clone()
    for i, h in enumerate(history):
        for t in set(h):
            out[i, t] = out[i, t] / pen[i] if out[i, t] > 0 else out[i, t] * pen[i]
    return out


def test_penalty_mask_is_built_from_token_ids():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, generator=g) * 3
    history = [[1, 5, 5, 39], [], [0, 2, 4, 6, 8, 10]]
    pen = [1.3, 2.0, 0.7]
    torch.testing.assert_close(apply_repetition_penalty(x, history, pen), _penalty_reference(x, history, pen))
    params = [SamplingParams(temperature=0.0, top_p=1.0, repetition_penalty=p) for p in pen]
    batch = SamplingBatch(params, [None] * 3, history, 40)
    assert batch.any_penalty and batch.host.shape == (3, 5 + 6)  # ids, not a [3, 40] mask, travel to the device
    out = sample_packed(x, batch.host, None, batch.any_stochastic, batch.any_penalty)
    assert torch.equal(out, _penalty_reference(x, history, pen).argmax(-1))


def test_one_uniform_per_stochastic_row_and_none_for_greedy():
    x = torch.randn(3, 30, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=1.0), SamplingParams(temperature=0.0), SamplingParams(temperature=0.5)]
    gens = [make_generator(i) for i in range(3)]
    sample_tokens(x, params, gens)
    ref = [make_generator(i) for i in range(3)]
    torch.rand((), generator=ref[0], dtype=torch.float64)
    torch.rand((), generator=ref[2], dtype=torch.float64)
    for g, r in zip(gens, ref, strict=True):  # exactly one draw for rows 0 and 2, none for the greedy row 1
        assert torch.equal(g.get_state(), r.get_state())


def test_motion_codes_sample_from_cpu_generators_and_pick_on_the_logits_device():
    b, t, q, k = 3, 2, 4, 16
    logits = torch.randn(b, t, q, k, generator=torch.Generator().manual_seed(2)) * 2
    temps = [0.0, 1.0, 0.8]
    gens = [make_generator(10 + i) for i in range(b)]
    u = motion_uniforms(t * q, temps, gens)
    assert (u[0] == -1).all() and ((u[1:] >= 0) & (u[1:] < 1)).all()
    codes = sample_motion_codes(logits, torch.tensor(temps), torch.tensor([0, 0, 3]), u)
    assert codes.shape == (b, t, q) and codes.dtype == torch.long
    assert torch.equal(codes[0], logits[0].argmax(-1))  # greedy row
    top3 = logits[2].topk(3, -1).indices
    assert (top3 == codes[2][..., None]).any(-1).all()  # top-k row stays in its k best
    # same seeds, same codes; the picks follow the softmax (inverse CDF on the uniforms)
    again = sample_motion_codes(logits, torch.tensor(temps), torch.tensor([0, 0, 3]),
                                motion_uniforms(t * q, temps, [make_generator(10 + i) for i in range(b)]))  # fmt: skip
    assert torch.equal(codes, again)
    probs = torch.softmax(logits[1].reshape(-1, k), -1)
    cdf = probs.cumsum(-1)
    want = torch.searchsorted(cdf, (u[1].float() * cdf[:, -1])[:, None], right=True)[:, 0].clamp_max(k - 1)
    assert torch.equal(codes[1].reshape(-1), want)


def test_motion_code_frequencies_follow_the_softmax():
    logits = torch.tensor([[[[2.0, 1.0, 0.0, -1.0]]]]).expand(4000, 1, 1, 4).contiguous()
    g = make_generator(0)
    u = motion_uniforms(1, [1.0] * 4000, [g] * 4000)
    codes = sample_motion_codes(logits, torch.ones(4000), torch.zeros(4000), u).reshape(-1)
    freq = torch.bincount(codes, minlength=4).double() / 4000
    np.testing.assert_allclose(freq.numpy(), torch.softmax(logits[0, 0, 0], -1).double().numpy(), atol=0.03)


def test_engine_samples_motion_with_temperature():
    """Motion temperature > 0 goes through the device pick (the CUDA failure of ``multinomial`` with a CPU generator
    cannot happen: no multinomial), seeded per session."""
    faces = []
    for _ in range(2):
        eng = greedy_engine(max_sessions=1, max_seconds=1.0, min_seconds=1.0)
        s = eng.new_session(sampling=dataclasses.replace(SamplingConfig.greedy(seed=3), motion_temperature=1.0))
        ev = eng.run_turn(s, tone(0.3))
        assert of(ev, TurnEnd)[0].reason != "error" and not summary(ev, s.id)["error"]
        faces.append(summary(ev, s.id)["face"])
    assert faces[0].shape[0] > 0
    np.testing.assert_array_equal(faces[0], faces[1])


# ---- host <-> device copies per step ---------------------------------------------------------------------------------
class _Transfers(TorchFunctionMode):
    """Counts, during engine steps, the calls that are host<->device copies when the model is on a GPU: reads of a
    tensor's values on the host (anywhere), and ``.to(device)`` / ``torch.tensor(..., device=)`` made by the engine's
    own code (``a2llm_rt``). Not counted: ``TokenClasses.allowed`` filling its cache (once per slot-class combination
    in an engine's life)."""

    READS = {"tolist", "item", "cpu", "__bool__", "__int__", "__float__", "__index__"}

    def __init__(self):
        super().__init__()
        self.up = self.down = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        frame = sys._getframe(1)
        caller = frame.f_code.co_filename
        if frame.f_code.co_name == "allowed":
            pass
        elif name in self.READS:
            self.down += 1
        elif "a2llm_rt" in caller:
            to_dev = name == "to" and (any(isinstance(a, (str, torch.device)) for a in args[1:]) or "device" in kwargs)
            made = name in ("tensor", "as_tensor") and kwargs.get("device") is not None
            if to_dev or made:
                self.up += 1
        return func(*args, **kwargs)


def test_one_upload_and_one_download_per_decode_step():
    eng = greedy_engine(max_sessions=3, max_seconds=1.2, min_seconds=1.2)
    sessions = [eng.new_session() for _ in range(3)]
    for s in sessions:  # a first turn: warm-up
        eng.submit(s, tone(0.3))
    eng.run_until_idle()
    for s in sessions:
        eng.submit(s, tone(0.3, 330.0))
    eng.step()  # the prefills
    plain, motion, ends = [], [], []
    while eng.busy:
        with _Transfers() as c:
            events = eng.step()
        kind = ends if of(events, TurnEnd) else motion if of(events, FaceFrames) else plain
        kind.append((c.up, c.down, len(of(events, TurnEnd))))
    assert len(plain) > 20 and motion and ends
    assert {(up, down) for up, down, _ in plain} == {(1, 1)}, plain
    # the windows of the 3 sessions fill together: one batched decoder call (its code check and one frames download)
    assert max(down for _, down, _ in motion) <= 3, motion
    # turns that end together flush their partial windows and decoders in one batch too
    assert all(down <= 1 + 2 * 2 for _, down, n in ends) and max(n for *_, n in ends) == 3, ends


def test_host_cache_length_mirror():
    """The engine plans each step from the history's consumed count, which must equal the cache row's length."""
    eng = greedy_engine(max_sessions=2, max_seconds=0.6, min_seconds=0.6)
    s = eng.new_session()
    for f in (220.0, 330.0):
        eng.run_turn(s, tone(0.3, f))
        assert s.history.consumed == s.cache_length > 0


# ---- batched motion decoding ----------------------------------------------------------------------------------------
def test_batched_motion_decoding_equals_per_session():
    eng = greedy_engine(max_sessions=3)
    motion = eng.stack.motion
    g = torch.Generator().manual_seed(0)
    k, nq = motion.cfg.codebook_size, motion.cfg.num_quantizers
    states = [motion.init_decode_state(1) for _ in range(3)]
    alone = [motion.init_decode_state(1) for _ in range(3)]
    for _ in range(4):
        codes = torch.randint(0, k, (3, 2, nq), generator=g)
        frames, batched = motion.decode_step(codes, type(states[0]).cat(states))
        states = [split_state(batched, i) for i in range(3)]
        for i in range(3):
            f, alone[i] = motion.decode_step(codes[i : i + 1], alone[i])
            torch.testing.assert_close(frames[i : i + 1], f, atol=1e-5, rtol=1e-5)
    for a, b in zip(states, alone, strict=True):
        for name, t in a.tensors().items():
            torch.testing.assert_close(t, b.tensors()[name], atol=1e-5, rtol=1e-5)


# ---- TensorRT batch splitting (our logic; the engine itself is gpu-tested in tests/export/test_tensorrt.py) ----------
def test_trt_batches_above_max_batch_are_split_and_reassembled():
    calls = []

    def run_one(feeds):
        calls.append({k: tuple(v.shape) for k, v in feeds.items()})
        return {"y": feeds["x"] * 2 + feeds["s"][:, :1], "n": feeds["x"].sum(-1, keepdim=True)}

    x = torch.arange(11 * 3, dtype=torch.float32).view(11, 3)
    s = torch.randn(11, 2)
    out = run_in_batches(run_one, {"x": x, "s": s}, max_batch=4)
    assert [c["x"][0] for c in calls] == [4, 4, 3]
    torch.testing.assert_close(out["y"], x * 2 + s[:, :1])
    torch.testing.assert_close(out["n"], x.sum(-1, keepdim=True))
    calls.clear()
    run_in_batches(run_one, {"x": x[:4], "s": s[:4]}, max_batch=4)
    assert len(calls) == 1
    with pytest.raises(InputError, match="batch size"):
        run_in_batches(run_one, {"x": x, "s": s[:3]}, max_batch=4)


# ---- the decode-step runner's fallbacks ------------------------------------------------------------------------------
class _EmptyGraph:
    """What a graph captured on another device's stream does: nothing."""

    def replay(self):
        pass


def _runner_and_inputs():
    eng = greedy_engine(max_sessions=2)
    bb, cache = eng.stack.backbone, eng.cache
    bb.prefill(torch.tensor([[1, 2, 3], [4, 5, 6]]), cache)
    ids = torch.tensor([[7], [8]])
    active = torch.tensor([True, False])
    return bb, cache, ids, active


def test_a_graph_that_does_not_advance_the_cache_falls_back_to_eager(caplog):
    bb, cache, ids, active = _runner_and_inputs()
    saved = cache.lengths.clone()
    want = bb.step(ids, cache, active)
    cache.lengths.copy_(saved)
    runner = StepRunner(bb, cache, "none")
    runner.mode = runner.requested = "cuda_graph"  # pretend: captured, but empty
    runner._graph = _EmptyGraph()
    v, d = want.logits.shape[1], want.hidden.shape[1]
    runner._out = (torch.zeros(2, v), torch.zeros(2, d))
    logits, hidden = runner.run(ids, active)
    assert runner.mode == "none" and "did not advance" in runner.fallback
    assert "falling back to eager" in caplog.text
    torch.testing.assert_close(logits, want.logits)
    torch.testing.assert_close(hidden, want.hidden)
    assert cache.lengths.tolist() == [saved[0].item() + 1, saved[1].item()]


def test_a_capture_that_raises_falls_back_to_eager():
    bb, cache, ids, active = _runner_and_inputs()
    runner = StepRunner(bb, cache, "none")
    runner.mode = runner.requested = "cuda_graph"

    def boom(warmup):
        raise RuntimeError("operation not permitted when stream is capturing")

    runner._capture = boom
    before = cache.lengths.clone()
    logits, _ = runner.run(ids, active)
    assert runner.mode == "none" and "capture failed" in runner.fallback
    assert logits.shape[0] == 2 and (cache.lengths - before).tolist() == [1, 0]


# ---- attention ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [1, 5])
def test_folded_gqa_attention_equals_repeated_kv(t):
    g = torch.Generator().manual_seed(t)
    b, hkv, grp, s, d = 2, 2, 3, 9, 8
    q = torch.randn(b, hkv * grp, t, d, generator=g)
    k, v = torch.randn(b, hkv, s, d, generator=g), torch.randn(b, hkv, s, d, generator=g)
    lengths = torch.tensor([4, 9 - t])
    pos = lengths[:, None] + torch.arange(t)[None]
    mask = (torch.arange(s)[None, None, :] <= pos[:, :, None])[:, None]
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(grp, 1), v.repeat_interleave(grp, 1), mask)
    torch.testing.assert_close(grouped_attention(q, k, v, mask), want, atol=1e-5, rtol=1e-5)


# ---- gpu ------------------------------------------------------------------------------------------------------------
def _answers(device: str, graph: str, lengths=(0.3, 0.9), **kw):
    from a2llm_rt.engine.engine import Engine, EngineConfig

    cfg = EngineConfig(max_sessions=len(lengths), max_seconds=1.0, min_seconds=1.0, graph=graph,
                       sampling=SamplingConfig.greedy(), **kw)  # fmt: skip
    eng = Engine.tiny(0, cfg, device=device)
    sessions = [eng.new_session() for _ in lengths]
    for s, sec in zip(sessions, lengths, strict=True):  # different prompt lengths, decoded in one batch
        eng.submit(s, tone(sec, 200.0 + 100 * sec))
    events = eng.run_until_idle()
    return eng, [list(s.history.ids) for s in sessions], [summary(events, s.id) for s in sessions]


def _same_answers(got: tuple, want: tuple) -> None:
    """Two runs of :func:`_answers` gave the same ids, text, PCM and face frames per session (not only the text)."""
    (_, ids, outs), (_, want_ids, want_outs) = got, want
    assert ids == want_ids
    for o, w in zip(outs, want_outs, strict=True):
        assert o["error"] is None and o["end"] is not None and o["pcm"].size > 0 and o["face"].shape[0] > 0
        assert o["text"] == w["text"] and o["end"].counts == w["end"].counts
        np.testing.assert_allclose(o["pcm"], w["pcm"], atol=1e-5)  # the same codes through the same vocoder
        np.testing.assert_allclose(o["face"], w["face"], atol=1e-3)  # hidden states: graph vs eager kernels


@pytest.mark.gpu
def test_cuda_graph_two_sessions_of_different_lengths_equal_eager():
    eager = _answers("cuda", "none")
    graph = _answers("cuda", "cuda_graph")
    assert graph[0].runner.mode == "cuda_graph" and graph[0].runner.fallback is None
    _same_answers(graph, eager)


def _runner_logits(bb, mode: str, steps: int = 4) -> torch.Tensor:
    """Logits ``[steps, 2, V]`` of ``steps`` decode steps of two rows of different lengths under ``mode``."""
    cache = bb.new_cache(2, 64)
    bb.prefill(torch.tensor([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 0, 0, 0]], device="cuda"), cache, lengths=[7, 4])
    runner = StepRunner(bb, cache, mode)
    ids = torch.tensor([[7], [8]], device="cuda")
    active = torch.tensor([True, True], device="cuda")
    out = torch.stack([runner.run(ids, active)[0].float() for _ in range(steps)])
    assert runner.mode == mode and runner.fallback is None
    assert cache.lengths.tolist() == [7 + steps, 4 + steps]
    return out


@pytest.mark.gpu
def test_compile_mode_uses_cuda_graphs_and_equals_eager():
    from torch._dynamo.utils import counters

    eng = greedy_engine(max_sessions=2)
    bb = eng.stack.backbone.cuda()
    counters.clear()
    eager = _runner_logits(bb, "none")
    compiled = _runner_logits(bb, "compile")  # inductor's kernels: equal up to rounding, not bitwise
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    assert not counters["inductor"].get("cudagraph_skips"), dict(counters["inductor"])
    graph = _runner_logits(bb, "cuda_graph")
    torch.testing.assert_close(graph, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_compile_mode_engine_turns():
    eng, ids, ends = _answers("cuda", "compile")
    assert eng.runner.mode == "compile" and eng.runner.fallback is None
    assert all(e["end"] is not None and e["error"] is None for e in ends) and all(ids)


@pytest.mark.gpu
def test_cuda_graph_on_a_second_gpu():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs (the graph on cuda:1 while cuda:0 is current)")
    torch.cuda.set_device(0)
    eager = _answers("cuda:1", "none")
    graph = _answers("cuda:1", "cuda_graph")
    assert graph[0].runner.mode == "cuda_graph" and graph[0].runner.fallback is None
    _same_answers(graph, eager)


@pytest.mark.gpu
def test_capture_error_on_cuda_falls_back_to_eager(monkeypatch):
    from a2llm_rt.engine.engine import Engine, EngineConfig

    cfg = EngineConfig(max_sessions=2, max_seconds=1.0, graph="cuda_graph")
    eng = Engine.tiny(0, cfg, device="cuda")
    orig = eng.stack.backbone.step

    def syncing_step(ids, cache, active=None):
        int(cache.lengths.sum())  # a host sync: illegal under capture
        return orig(ids, cache, active)

    monkeypatch.setattr(eng.stack.backbone, "step", syncing_step)
    eng.runner.backbone = eng.stack.backbone
    s = eng.new_session()
    ev = eng.run_turn(s, tone(0.3))
    assert eng.runner.mode == "none" and "capture failed" in eng.runner.fallback
    assert of(ev, TurnEnd) and not summary(ev, s.id)["error"]


@pytest.mark.gpu
def test_motion_temperature_on_cuda():
    from a2llm_rt.engine.engine import Engine, EngineConfig

    eng = Engine.tiny(0, EngineConfig(max_sessions=1, max_seconds=1.0, min_seconds=1.0), device="cuda")
    s = eng.new_session(sampling=dataclasses.replace(SamplingConfig.greedy(seed=1), motion_temperature=1.0))
    ev = eng.run_turn(s, tone(0.3))
    assert not summary(ev, s.id)["error"] and summary(ev, s.id)["face"].shape[0] > 0
    logits = torch.randn(2, 2, 3, 8, device="cuda")
    gens = [make_generator(0), make_generator(1)]
    codes = sample_motion_codes(logits, torch.ones(2, device="cuda"), torch.zeros(2, device="cuda"),
                                motion_uniforms(6, [1.0, 1.0], gens).cuda())  # fmt: skip
    assert codes.device.type == "cuda"
    with pytest.raises(RuntimeError):  # the failure this replaces
        sample_codes(logits, 1.0, None, make_generator(0))


@pytest.mark.gpu
def test_sampling_on_cuda_equals_cpu():
    x = torch.randn(4, 300, generator=torch.Generator().manual_seed(5)) * 3
    params = [SamplingParams(temperature=t, top_k=k, top_p=p) for t, k, p in
              [(0.7, 0, 0.9), (1.0, 5, 1.0), (0.0, 0, 1.0), (1.2, 0, 0.5)]]  # fmt: skip
    hist = [[1, 2, 3], [], [7], [299, 0]]
    gc, gg = [make_generator(i) for i in range(4)], [make_generator(i) for i in range(4)]
    cpu = torch.stack([sample_tokens(x, params, gc, history=hist) for _ in range(25)])
    gpu = torch.stack([sample_tokens(x.cuda(), params, gg, history=hist) for _ in range(25)])
    assert gpu.device.type == "cuda"
    assert torch.equal(gpu[:, 2].cpu(), cpu[:, 2])  # the greedy row
    # same uniforms, same inverse CDF: only a draw on a rounding boundary of the two devices' cumsums may differ
    assert (gpu.cpu() == cpu).float().mean() >= 0.95


@pytest.mark.gpu
def test_attention_runs_a_fused_kernel_in_bf16():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(4, 28, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(4, 4, 512, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    mask = (
        torch.arange(512, device="cuda")[None, None, None, :]
        < torch.tensor([5, 100, 300, 512], device="cuda")[:, None, None, None]
    )
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        out = grouped_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(7, 1),
                                         v.float().repeat_interleave(7, 1), mask)  # fmt: skip
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.slow
def test_full_size_bf16_graph_equals_eager():
    """Step-Audio-2-mini shapes, random bf16 weights: the captured step gives eager's logits (a few steps)."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.engine import build_full_stack

    stack = build_full_stack("cuda")
    bb = stack.backbone
    prompt = torch.randint(0, 1000, (2, 17), generator=torch.Generator().manual_seed(0)).cuda()
    outs = []
    for mode in ("none", "cuda_graph"):
        cache = bb.new_cache(2, 512)
        bb.prefill(prompt, cache, lengths=[17, 9])
        runner = StepRunner(bb, cache, mode)
        ids = torch.tensor([[5], [6]], device="cuda")
        active = torch.tensor([True, True], device="cuda")
        got = [runner.run(ids, active)[0].float() for _ in range(3)]
        assert runner.mode == mode
        outs.append(torch.stack(got))
        del cache
    torch.testing.assert_close(outs[1], outs[0], atol=0.05, rtol=0.05)


@pytest.mark.gpu
def test_tensorrt_above_max_batch():
    pytest.importorskip("tensorrt")
    from a2llm_rt.engine.builders import tiny_motion_models
    from a2llm_rt.engine.motion_backend import TensorRTBackend, TorchBackend
    from export.build_engines import build

    connector, motion = tiny_motion_models()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        build(connector, motion, Path(tmp), "fp32", max_batch=2, trt=True)
        trt = TensorRTBackend(tmp)
        assert trt._conn.max_batch == 2
        ref = TorchBackend(connector, motion)
        x = torch.randn(5, connector.cfg.window, connector.cfg.d_llm)
        got = trt.connector_step(x.cuda()).cpu()
        torch.testing.assert_close(got, ref.connector_step(x), atol=1e-3, rtol=1e-3)
