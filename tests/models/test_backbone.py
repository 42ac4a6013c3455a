"""Backbone: cached decoding == full forward, batched sessions == alone, checkpoint directories, presets, GPU."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from a2llm_rt.errors import InputError
from a2llm_rt.models.backbone import (
    STEP_AUDIO2_MINI,
    TINY_BACKBONE,
    StepAudio2Backbone,
)
from a2llm_rt.models.checkpoint import from_pretrained_dir, save_pretrained_dir
from a2llm_rt.models.prompt import ChatFormat, ChatHistory
from a2llm_rt.models.token_layout import STEP_AUDIO2, TINY
from a2llm_rt.models.tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return StepAudio2Backbone(TINY_BACKBONE).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _audio_prompt(tokenizer, seconds: float, seed: int, text: str = "Hi"):
    g = torch.Generator().manual_seed(seed)
    h = ChatHistory(ChatFormat(tokenizer, TINY), system_prompt="You are a helpful assistant.")
    h.add_user_audio(torch.randn(int(16000 * seconds), generator=g) * 0.1, text=text)
    h.start_assistant()
    return h.full()


def test_step_by_step_equals_full_forward(model, tokenizer):
    p = _audio_prompt(tokenizer, 0.5, 1)
    ids = p.tensor()
    cont = torch.randint(0, TINY.vocab_size, (1, 6), generator=torch.Generator().manual_seed(2))
    all_ids = torch.cat([ids, cont], 1)
    with torch.no_grad():
        full = model(all_ids, model.encode_audio(p.mels))
    cache = model.new_cache(1, 128)
    t0 = ids.shape[1]
    pre = model.prefill(ids, cache, audio_mels=p.mels)
    torch.testing.assert_close(pre.logits, full.logits[:, t0 - 1])
    torch.testing.assert_close(pre.hidden, full.hidden[:, :t0])
    for j in range(cont.shape[1]):
        out = model.step(cont[:, j : j + 1], cache)
        torch.testing.assert_close(out.logits, full.logits[:, t0 + j], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.hidden, full.hidden[:, t0 + j], atol=1e-5, rtol=1e-5)
    assert int(cache.lengths[0]) == all_ids.shape[1]


def test_tap_layer_matches_transformers_hidden_states(model):
    ids = torch.randint(0, 280, (2, 9), generator=torch.Generator().manual_seed(3))
    for tap in (0, 1, 2):
        with torch.no_grad():
            full = model(ids, tap_layer=tap)
            _, tapped = model.extend(model.embed(ids), model.new_cache(2, 16), tap_layer=tap)
        torch.testing.assert_close(tapped, full.hidden)


def _greedy(model, cache, first_logits, steps, active=None):
    toks, logits = [], []
    nxt = first_logits.argmax(-1, keepdim=True)
    for _ in range(steps):
        toks.append(nxt)
        out = model.step(nxt, cache, active)
        logits.append(out.logits)
        nxt = out.logits.argmax(-1, keepdim=True)
    return torch.cat(toks, 1), torch.stack(logits, 1)


def test_batched_sessions_of_different_lengths_equal_each_alone(model, tokenizer):
    prompts = [_audio_prompt(tokenizer, s, i, text=t) for i, (s, t) in enumerate(
        [(0.3, "Hi"), (0.9, "Hello there"), (0.5, ""), (1.3, "What is your name?")])]  # fmt: skip
    steps = 8
    alone = []
    for p in prompts:
        cache = model.new_cache(1, 160)
        pre = model.prefill(p.tensor(), cache, audio_mels=p.mels)
        alone.append(_greedy(model, cache, pre.logits, steps))
    # batched: one right-padded prefill of all rows, then batched steps
    lens = [len(p.ids) for p in prompts]
    ids = torch.full((4, max(lens)), TINY.pad)
    for i, p in enumerate(prompts):
        ids[i, : lens[i]] = torch.tensor(p.ids)
    cache = model.new_cache(4, 160)
    pre = model.prefill(ids, cache, audio_mels=[m for p in prompts for m in p.mels], lengths=lens)
    assert cache.lengths.tolist() == lens
    toks, logits = _greedy(model, cache, pre.logits, steps)
    for i in range(4):
        assert toks[i].tolist() == alone[i][0][0].tolist()
        torch.testing.assert_close(logits[i], alone[i][1][0], atol=1e-5, rtol=1e-5)


def test_rows_join_late_continue_and_idle(model):
    g = torch.Generator().manual_seed(5)
    a, b, more = (torch.randint(0, 280, (1, n), generator=g) for n in (7, 4, 3))
    ref = model.new_cache(1, 32)
    model.prefill(a, ref)
    model.prefill(more, ref)  # a new turn continues the row
    ref_out = model.step(b[:, :1], ref)

    cache = model.new_cache(3, 32)
    model.prefill(a, cache, rows=[2])  # session joins in row 2 only
    assert cache.lengths.tolist() == [0, 0, 7]
    model.prefill(more, cache, rows=[2])
    active = torch.tensor([False, False, True])
    out = model.step(torch.stack([b[:, 0]] * 3), cache, active)
    assert cache.lengths.tolist() == [0, 0, 11]  # idle rows did not advance
    torch.testing.assert_close(out.logits[2], ref_out.logits[0], atol=1e-5, rtol=1e-5)
    cache.reset(torch.tensor([False, False, True]))
    assert cache.lengths.tolist() == [0, 0, 0]


def test_bad_inputs_are_refused(model):
    cache = model.new_cache(1, 8)
    with pytest.raises(InputError, match="overflows"):
        model.prefill(torch.zeros(1, 9, dtype=torch.long), cache)
    ids = torch.tensor([[1, TINY.audio_patch, 2]])
    with pytest.raises(InputError, match="audio_patch"):
        model.prefill(ids, cache)
    with pytest.raises(InputError, match="lengths"):
        model.prefill(torch.zeros(2, 3, dtype=torch.long), model.new_cache(2, 8), lengths=[3, 0])


def test_save_load_round_trip(tmp_path, model, tokenizer):
    save_pretrained_dir(model, tmp_path, tokenizer=tokenizer, max_shard_bytes=40_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert "model.embed_tokens.weight" in index["weight_map"] and "encoder.after_norm.weight" in index["weight_map"]
    loaded, tok = from_pretrained_dir(tmp_path, dtype=torch.float32, expect=TINY_BACKBONE)
    assert tok is not None and tok.encode("Hello") == tokenizer.encode("Hello")
    assert loaded.layout == TINY
    ids = torch.randint(0, 280, (1, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, atol=0, rtol=0)


def _single_file_dir(tmp_path, model):
    save_pretrained_dir(model, tmp_path)
    return tmp_path / "model.safetensors"


def test_wrong_shape_missing_or_unexpected_tensors_are_refused(tmp_path, model):
    f = _single_file_dir(tmp_path, model)
    sd = load_file(str(f))
    sd["lm_head.weight"] = torch.zeros(10, 64)
    del sd["encoder.after_norm.bias"]
    sd["vision_tower.weight"] = torch.zeros(2)
    save_file(sd, str(f))
    with pytest.raises(InputError) as e:
        from_pretrained_dir(tmp_path, dtype=torch.float32)
    msg = str(e.value)
    assert "lm_head.weight: shape [10, 64], expected [368, 64]" in msg
    assert "encoder.after_norm.bias: missing" in msg
    assert "vision_tower.weight: unexpected" in msg


def test_unexpected_config_is_refused(tmp_path, model):
    _single_file_dir(tmp_path, model)
    cfg_file = tmp_path / "config.json"
    data = json.loads(cfg_file.read_text())
    with pytest.raises(InputError, match="num_layers: directory 2, expected 28"):
        from_pretrained_dir(tmp_path, dtype=torch.float32, expect=STEP_AUDIO2_MINI)
    bad = dict(data, model_type="llama")
    del bad["audio_encoder_config"]
    cfg_file.write_text(json.dumps(bad))
    with pytest.raises(InputError, match="model_type 'llama'.*no audio_encoder_config"):
        from_pretrained_dir(tmp_path, dtype=torch.float32)
    (tmp_path / "config.json").unlink()
    with pytest.raises(InputError, match="cannot read config.json"):
        from_pretrained_dir(tmp_path)


def test_full_preset_shapes_on_meta_device():
    with torch.device("meta"):
        big = StepAudio2Backbone(STEP_AUDIO2_MINI, STEP_AUDIO2)
    sd = big.state_dict()
    assert sd["lm_head.weight"].shape == (158720, 3584)
    assert sd["model.layers.27.mlp.gate_proj.weight"].shape == (18944, 3584)
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (512, 3584)
    assert sd["encoder.blocks.31.attn.query.weight"].shape == (1280, 1280)
    assert sd["encoder.conv1.weight"].shape == (1280, 128, 3)
    assert sd["adapter.linear2.weight"].shape == (3584, 2048)
    per_step = sum(v.numel() for k, v in sd.items() if k.startswith(("model.layers.", "model.norm.", "lm_head.")))
    assert 7.0e9 < per_step < 7.2e9  # STEP_AUDIO2.md: ~7.09 B parameters read per decode step


def test_layout_must_fit_vocab():
    with pytest.raises(InputError, match="vocab"):
        StepAudio2Backbone(dataclasses.replace(TINY_BACKBONE, vocab_size=400))


@pytest.mark.gpu
def test_tiny_model_on_cuda_step_equals_full():
    torch.manual_seed(0)
    m = StepAudio2Backbone(TINY_BACKBONE).cuda().eval()
    ids = torch.randint(0, 280, (2, 12), device="cuda")
    with torch.no_grad():
        full = m(ids)
    cache = m.new_cache(2, 32)
    m.prefill(ids[:, :6], cache)
    for j in range(6, 12):
        out = m.step(ids[:, j : j + 1], cache)
        torch.testing.assert_close(out.logits, full.logits[:, j], atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_step_replays_under_cuda_graph_capture():
    """The engine captures ``step`` in a CUDA graph: static shapes, in-place cache, no host sync."""
    torch.manual_seed(0)
    m = StepAudio2Backbone(TINY_BACKBONE).cuda().eval()
    prompt = torch.randint(0, 280, (2, 5), device="cuda")
    ref_cache, cache = m.new_cache(2, 32), m.new_cache(2, 32)
    m.prefill(prompt, ref_cache)
    m.prefill(prompt, cache)
    tok = torch.zeros(2, 1, dtype=torch.long, device="cuda")
    saved = cache.lengths.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            m.step(tok, cache)
    torch.cuda.current_stream().wait_stream(side)
    cache.lengths.copy_(saved)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = m.step(tok, cache)
    for j in range(4):
        nxt = torch.full((2, 1), 7 + j, device="cuda")
        tok.copy_(nxt)
        graph.replay()
        ref = m.step(nxt, ref_cache)
        torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=1e-4)
    assert cache.lengths.tolist() == ref_cache.lengths.tolist() == [9, 9]
