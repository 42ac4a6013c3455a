"""Step-Audio-2-format checkpoint directories: read and write them with an explicit name map and strict checks.

A directory holds ``config.json`` (``text_config`` + ``audio_encoder_config``), safetensors shards with
``model.safetensors.index.json`` (or one ``model.safetensors``) and tokenizer files. Nothing in it is executed.
"""

from __future__ import annotations

import dataclasses

import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.backbone import BackboneConfig, StepAudio2Backbone
from a2llm_rt.models.token_layout import TokenLayout, get_token_layout

# ---- checkpoint directories ---------------------------------------------------------------------------------------
#: Checkpoint name prefix -> module name prefix. Step-Audio-2-mini's HF checkpoint uses our module names
#: (STEP_AUDIO2.md "Checkpoint layout"; stepfun-ai vLLM ``StepAudio2ForCausalLM``): the map is the identity on these
#: four prefixes and everything else is refused.
CHECKPOINT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.", "model."),
    ("lm_head.", "lm_head."),
    ("encoder.", "encoder."),
    ("adapter.", "adapter."),
)
#: Checkpoint entries that older exports carry and that are recomputed here (not parameters).
IGNORED_CHECKPOINT_SUFFIXES = ("rotary_emb.inv_freq",)
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
ARCHITECTURE = "StepAudio2ForCausalLM"
MODEL_TYPE = "step_audio_2"


def checkpoint_to_module_name(name: str) -> str | None:
    """Our parameter name of checkpoint tensor ``name`` (None: not ours)."""
    for ck, mod in CHECKPOINT_PREFIXES:
        if name.startswith(ck):
            return mod + name[len(ck) :]
    return None


def module_to_checkpoint_name(name: str) -> str:
    for ck, mod in CHECKPOINT_PREFIXES:
        if name.startswith(mod):
            return ck + name[len(mod) :]
    raise KeyError(name)


def config_to_hf_dict(cfg: BackboneConfig, layout: TokenLayout | None = None) -> dict:
    """The ``config.json`` content of a Step-Audio-2-format directory."""
    out = {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "text_config": {
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads,
            "num_attention_groups": cfg.num_kv_heads,
            "num_key_value_heads": cfg.num_kv_heads,
            "rope_theta": cfg.rope_theta,
            "rms_norm_eps": cfg.rms_norm_eps,
            "max_position_embeddings": cfg.max_position_embeddings,
        },
        "audio_encoder_config": {
            "n_mels": cfg.n_mels,
            "n_audio_ctx": cfg.audio_ctx,
            "n_audio_state": cfg.audio_state,
            "n_audio_head": cfg.audio_heads,
            "n_audio_layer": cfg.audio_layers,
            "llm_dim": cfg.hidden_size,
            "kernel_size": cfg.adapter_kernel,
            "adapter_stride": cfg.adapter_stride,
            "adapter_state": cfg.adapter_hidden,
        },
    }
    if layout is not None:
        out["a2llm"] = {"token_layout": layout.to_dict(), "tap_layer": cfg.tap_layer}
    return out


def config_from_hf_dict(data: dict, source=None) -> tuple[BackboneConfig, TokenLayout | None]:
    """Parse ``config.json``; :class:`InputError` listing every missing or inconsistent field."""
    problems: list[str] = []
    if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        problems.append(f"model_type {data.get('model_type')!r} is not {MODEL_TYPE!r}")
    arch = data.get("architectures")
    if arch is not None and ARCHITECTURE not in arch:
        problems.append(f"architectures {arch} do not name {ARCHITECTURE}")
    text, audio = data.get("text_config"), data.get("audio_encoder_config")
    if not isinstance(text, dict):
        problems.append("no text_config mapping")
        text = {}
    if not isinstance(audio, dict):
        problems.append("no audio_encoder_config mapping")
        audio = {}

    def need(d: dict, key: str, where: str, *alts: str):
        for k in (key, *alts):
            if k in d:
                return d[k]
        problems.append(f"{where}.{key} missing")
        return None

    rope = text.get("rope_theta", (text.get("rope_parameters") or {}).get("rope_theta"))
    kv = text.get("num_key_value_heads", text.get("num_attention_groups"))
    kw = dict(
        vocab_size=need(text, "vocab_size", "text_config"),
        hidden_size=need(text, "hidden_size", "text_config"),
        intermediate_size=need(text, "intermediate_size", "text_config"),
        num_layers=need(text, "num_hidden_layers", "text_config"),
        num_heads=need(text, "num_attention_heads", "text_config"),
        num_kv_heads=kv,
        rope_theta=rope,
        rms_norm_eps=text.get("rms_norm_eps", 1e-6),
        max_position_embeddings=text.get("max_position_embeddings", text.get("max_seq_len", 16384)),
        n_mels=need(audio, "n_mels", "audio_encoder_config"),
        audio_ctx=need(audio, "n_audio_ctx", "audio_encoder_config"),
        audio_state=need(audio, "n_audio_state", "audio_encoder_config"),
        audio_heads=need(audio, "n_audio_head", "audio_encoder_config"),
        audio_layers=need(audio, "n_audio_layer", "audio_encoder_config"),
        adapter_kernel=audio.get("kernel_size", 3),
        adapter_stride=audio.get("adapter_stride", 2),
        adapter_hidden=audio.get("adapter_state", 2048),
    )
    if kv is None:
        problems.append("text_config.num_key_value_heads missing")
    if rope is None:
        problems.append("text_config.rope_theta missing")
    llm_dim = audio.get("llm_dim")
    if llm_dim is not None and kw["hidden_size"] is not None and llm_dim != kw["hidden_size"]:
        problems.append(f"audio_encoder_config.llm_dim {llm_dim} != text_config.hidden_size {kw['hidden_size']}")
    extra = data.get("a2llm") or {}
    layout = None
    if "token_layout" in extra:
        try:
            layout = TokenLayout.from_dict(extra["token_layout"], source=source)
        except InputError as e:
            problems.append(f"a2llm.token_layout: {e.problem}")
        kw["token_layout"] = layout.name if layout is not None else "step_audio2"
    else:
        kw["token_layout"] = "step_audio2"
    if "tap_layer" in extra:
        kw["tap_layer"] = extra["tap_layer"]
    if problems:
        raise InputError("config.json does not describe a Step-Audio-2 backbone: " + "; ".join(problems[:8]), source)
    try:
        return BackboneConfig(**kw), layout
    except (TypeError, ValueError) as e:
        raise InputError(f"config.json: invalid backbone config: {e}", source) from None


def _compare_configs(got: BackboneConfig, want: BackboneConfig) -> list[str]:
    skip = {"tap_layer"}
    return [
        f"{f.name}: directory {getattr(got, f.name)!r}, expected {getattr(want, f.name)!r}"
        for f in dataclasses.fields(BackboneConfig)
        if f.name not in skip and getattr(got, f.name) != getattr(want, f.name)
    ]


def _shard_files(path) -> dict[str, str]:
    """tensor name -> shard file name, from the index json or a single ``model.safetensors``."""
    import json
    from pathlib import Path

    path = Path(path)
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"unreadable safetensors index: {e}", index) from None
        missing = sorted({f for f in weight_map.values() if not (path / f).is_file()})
        if missing:
            raise InputError(f"index names missing shard files {missing[:5]}", index)
        return dict(weight_map)
    single = path / SINGLE_FILE
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as f:
            return dict.fromkeys(f.keys(), SINGLE_FILE)  # noqa: SIM118 (safe_open is not a dict)
    raise InputError(f"no {INDEX_FILE} or {SINGLE_FILE}", path)


def expected_tensors(cfg: BackboneConfig, layout: TokenLayout | None = None) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor name -> shape of a backbone of ``cfg``, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = StepAudio2Backbone(cfg, layout)
    return {module_to_checkpoint_name(k): tuple(v.shape) for k, v in model.state_dict().items()}


def tensor_problems(path, expected: dict[str, tuple[int, ...]]) -> list[str]:
    """Every missing, unexpected or wrong-shaped tensor of the directory's safetensors (headers only, nothing is
    loaded), each naming the tensor and its file. :class:`InputError` when the index or a file is unreadable."""
    from pathlib import Path

    from safetensors import safe_open

    path = Path(path)
    files = _shard_files(path)
    problems: list[str] = []
    found: set[str] = set()
    by_file: dict[str, list[str]] = {}
    for name, fname in files.items():
        by_file.setdefault(fname, []).append(name)
    for fname, names in sorted(by_file.items()):
        try:
            with safe_open(str(path / fname), framework="pt") as f:
                keys = set(f.keys())
                for name in sorted(names):
                    if name.endswith(IGNORED_CHECKPOINT_SUFFIXES):
                        continue
                    if name not in keys:
                        problems.append(f"{name}: listed in the index but absent from {fname}")
                        found.add(name)  # reported
                    elif checkpoint_to_module_name(name) is None or name not in expected:
                        problems.append(f"{name}: unexpected tensor (in {fname})")
                    else:
                        shape = tuple(f.get_slice(name).get_shape())
                        if shape != expected[name]:
                            problems.append(
                                f"{name}: shape {list(shape)}, expected {list(expected[name])} (in {fname})"
                            )
                        found.add(name)
                if len(by_file) > 1:
                    stray = sorted(k for k in keys - set(names) if not k.endswith(IGNORED_CHECKPOINT_SUFFIXES))
                    problems += [f"{k}: in {fname} but not in {INDEX_FILE}" for k in stray]
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"unreadable safetensors file: {e}", path / fname) from None
    problems += [f"{name}: missing (no file holds it)" for name in sorted(set(expected) - found)]
    return problems


def check_checkpoint(path, model: StepAudio2Backbone) -> None:
    """Raise :class:`InputError` listing the first problems when the directory's tensors do not match ``model``
    (missing, unexpected or wrong-shaped tensors; each names its file)."""
    from pathlib import Path

    expected = {module_to_checkpoint_name(k): tuple(v.shape) for k, v in model.state_dict().items()}
    problems = tensor_problems(path, expected)
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise InputError(f"weights do not match the backbone: {'; '.join(problems[:8])}{more}", Path(path))


def check_tokenizer(tokenizer, layout: TokenLayout, cfg: BackboneConfig, source=None) -> TokenLayout:
    """The layout resolved against ``tokenizer``; :class:`InputError` (naming ``source``) when the tokenizer's
    vocabulary does not fit the backbone: more ids than ``vocab_size`` rows, special or audio ids elsewhere."""
    if len(tokenizer) > cfg.vocab_size:
        raise InputError(f"tokenizer has {len(tokenizer)} ids, the backbone's vocab_size is {cfg.vocab_size}", source)
    try:
        return layout.resolved(tokenizer)
    except InputError as e:
        raise InputError(e.problem, source) from None


def from_pretrained_dir(
    path,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    expect: BackboneConfig | None = None,
    tap_layer: int | None = None,
):
    """Load a local Step-Audio-2-format directory -> (``StepAudio2Backbone`` in eval mode, ``TextTokenizer`` or None).

    Reads ``config.json`` (refused when it is not a Step-Audio-2 backbone or, with ``expect``, differs from it),
    checks every tensor name and shape before loading, loads shards one at a time (the model is built on the meta
    device, so peak memory is one shard plus the model). The token layout is the directory's own (tiny dirs we
    write) or STEP_AUDIO2, resolved against the tokenizer when the directory has one.
    """
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from a2llm_rt.models.tokenizer import load_tokenizer

    path = Path(path)
    cfg_file = path / "config.json"
    try:
        data = json.loads(cfg_file.read_text())
    except OSError as e:
        raise InputError(f"cannot read config.json: {e.strerror}", cfg_file) from None
    except ValueError as e:
        raise InputError(f"config.json is not JSON: {e}", cfg_file) from None
    cfg, layout = config_from_hf_dict(data, cfg_file)
    if tap_layer is not None:
        cfg = dataclasses.replace(cfg, tap_layer=tap_layer)
    if expect is not None:
        diff = _compare_configs(cfg, expect)
        if diff:
            raise InputError("config.json differs from the expected backbone: " + "; ".join(diff[:8]), cfg_file)
    layout = get_token_layout(cfg.token_layout) if layout is None else layout
    if layout.vocab_size != cfg.vocab_size:
        raise InputError(
            f"text_config.vocab_size {cfg.vocab_size} differs from token layout {layout.name!r} "
            f"({layout.vocab_size} ids): not this backbone's vocabulary",
            cfg_file,
        )
    tokenizer = None
    if (path / "tokenizer.json").is_file() or (path / "vocab.json").is_file():
        tokenizer = load_tokenizer(path)
        layout = check_tokenizer(tokenizer, layout, cfg, path / "tokenizer.json")
    with torch.device("meta"):
        model = StepAudio2Backbone(cfg, layout)
    check_checkpoint(path, model)
    state: dict[str, torch.Tensor] = {}
    for fname in sorted(set(_shard_files(path).values())):
        for name, t in load_file(str(path / fname), device="cpu").items():
            mod = checkpoint_to_module_name(name)
            if mod is not None and not name.endswith(IGNORED_CHECKPOINT_SUFFIXES):
                state[mod] = t.to(dtype=dtype, device=device)
    model.load_state_dict(state, strict=True, assign=True)
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    model.model.rotary_emb = Qwen2RotaryEmbedding(config=model.model.config).to(device)
    return model.to(device).eval(), tokenizer


def save_pretrained_dir(model: StepAudio2Backbone, path, tokenizer=None, max_shard_bytes: int = 4 << 30) -> None:
    """Write ``model`` as a Step-Audio-2-format directory (config.json, safetensors shards + index when more than one
    shard, tokenizer files). Every file is written atomically."""
    import json
    from pathlib import Path

    from safetensors.torch import save

    from a2llm_rt.utils.fileio import atomic_write, atomic_write_json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in model.state_dict().items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][module_to_checkpoint_name(name)] = t.detach().to("cpu").contiguous()
        size += nbytes
    names = (
        [SINGLE_FILE]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for fname, shard in zip(names, shards, strict=True):
        with atomic_write(path / fname, "wb") as f:
            f.write(save(shard, metadata={"format": "pt"}))
    if len(shards) > 1:
        weight_map = {k: fname for fname, shard in zip(names, shards, strict=True) for k in shard}
        total = sum(t.numel() * t.element_size() for s in shards for t in s.values())
        atomic_write_json(path / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    atomic_write_json(path / "config.json", json.loads(json.dumps(config_to_hf_dict(model.cfg, model.layout))))
    if tokenizer is not None:
        tokenizer.save(path)
