"""Safe loading of a Step-Audio-2 ``token2wav/`` folder: ``flow.yaml`` (hyperparameters), ``flow.pt``, ``hift.pt``.

- ``flow.yaml`` is hyperpyyaml upstream (its ``!new:`` tags build Python objects). We read it with PyYAML's
  ``SafeLoader`` extended by constructors that only *record* ``!new:``/``!name:`` tags of the known upstream classes
  (:data:`KNOWN_CLASSES`), resolve ``!ref <key>`` to a top-level value and skip the seeding ``!apply:`` calls;
  every other tag, and any unknown class, is refused. Nothing is imported or called.
- ``flow.pt`` / ``hift.pt`` are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling), or better
  converted once to ``flow.safetensors`` / ``hift.safetensors`` (:func:`convert_folder`, ``python -m
  a2llm_rt.speech.checkpoint FOLDER``), which the runtime prefers.
- HiFT's weight-normalised convolutions are folded into plain weights (:func:`fold_weight_norm`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from a2llm_rt.errors import InputError
from a2llm_rt.speech.config import FlowConfig, HiFTConfig
from a2llm_rt.utils.cli import cli_main

#: Final class names that a ``!new:`` / ``!name:`` tag may name (any module path): Step-Audio-2's flow classes,
#: CosyVoice2 / flashcosyvoice's HiFT and its F0 predictor.
KNOWN_CLASSES = frozenset({
    "CausalMaskedDiffWithXvec", "UpsampleConformerEncoderV2", "CausalConditionalCFM", "DiT",
    "HiFTGenerator", "ConvRNNF0Predictor",
})
#: ``!apply:`` targets that only seed random generators (ignored).
IGNORED_APPLY = frozenset({"random.seed", "numpy.random.seed", "torch.manual_seed"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class _Ref:
    def __init__(self, key: str):
        self.key = key


class _SafeHyperLoader(yaml.SafeLoader):
    """SafeLoader + inert handling of hyperpyyaml's tags (see the module docstring)."""


def _class_node(loader: _SafeHyperLoader, suffix: str, node: yaml.Node, kind: str) -> dict[str, Any]:
    if not _NAME.match(suffix) or suffix.rsplit(".", 1)[-1] not in KNOWN_CLASSES:
        raise InputError(f"flow.yaml: refusing unknown class {kind}:{suffix}")
    if isinstance(node, yaml.MappingNode):
        args = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.ScalarNode) and node.value == "":
        args = {}
    else:
        raise InputError(f"flow.yaml: {kind}:{suffix} must take keyword arguments")
    return {"__class__": suffix.rsplit(".", 1)[-1], "__kind__": kind, **args}


def _apply(loader: _SafeHyperLoader, suffix: str, node: yaml.Node) -> None:
    if suffix not in IGNORED_APPLY:
        raise InputError(f"flow.yaml: refusing !apply:{suffix}")
    return None


def _ref(loader: _SafeHyperLoader, node: yaml.Node) -> _Ref:
    m = re.fullmatch(r"<([A-Za-z_][A-Za-z0-9_]*)>", str(loader.construct_scalar(node)).strip())
    if m is None:
        raise InputError(f"flow.yaml: only plain !ref <key> references are supported, got {node.value!r}")
    return _Ref(m.group(1))


_SafeHyperLoader.add_multi_constructor("!new:", lambda lo, s, n: _class_node(lo, s, n, "!new"))
_SafeHyperLoader.add_multi_constructor("!name:", lambda lo, s, n: _class_node(lo, s, n, "!name"))
_SafeHyperLoader.add_multi_constructor("!apply:", _apply)
_SafeHyperLoader.add_constructor("!ref", _ref)


def _resolve(obj: Any, top: dict[str, Any], depth: int = 0) -> Any:
    if depth > 20:
        raise InputError("flow.yaml: !ref chain too deep")
    if isinstance(obj, _Ref):
        if obj.key not in top:
            raise InputError(f"flow.yaml: !ref <{obj.key}> names no top-level key")
        return _resolve(top[obj.key], top, depth + 1)
    if isinstance(obj, dict):
        return {k: _resolve(v, top, depth) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, top, depth) for v in obj]
    return obj


def read_hyper_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a hyperpyyaml file without building anything: classes become ``{"__class__": name, **kwargs}``."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SafeHyperLoader)  # noqa: S506 (safe subclass)
    except InputError as e:
        raise InputError(e.problem, path=path) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"not valid YAML: {e}", path=path) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping at the top level", path=path)
    return _resolve(data, data)


def _expect(d: dict[str, Any], cls: str, where: str) -> dict[str, Any]:
    if not isinstance(d, dict) or d.get("__class__") != cls:
        raise InputError(f"flow.yaml: {where} must be !new:...{cls}")
    return d


def _check(d: dict[str, Any], key: str, allowed: Any, where: str) -> None:
    if key in d and d[key] != allowed:
        raise InputError(f"flow.yaml: {where}.{key} = {d[key]!r} is not supported (only {allowed!r})")


def flow_config_from_yaml(path: str | Path) -> FlowConfig:
    """The :class:`FlowConfig` that ``flow.yaml``'s ``flow:`` entry describes (unsupported variants refused)."""
    data = read_hyper_yaml(path)
    flow = _expect(data.get("flow"), "CausalMaskedDiffWithXvec", "flow")
    enc = _expect(flow.get("encoder"), "UpsampleConformerEncoderV2", "flow.encoder")
    dec = _expect(flow.get("decoder"), "CausalConditionalCFM", "flow.decoder")
    est = _expect(dec.get("estimator"), "DiT", "flow.decoder.estimator")
    for k, v in (("input_layer", "linear"), ("pos_enc_layer_type", "rel_pos_espnet"),
                 ("selfattention_layer_type", "rel_selfattn"), ("normalize_before", True),
                 ("activation_type", "swish"), ("key_bias", True), ("output_type", "mel")):
        _check(enc if k != "output_type" else flow, k, v, "flow.encoder" if k != "output_type" else "flow")
    size = int(enc.get("output_size", 256))
    if int(enc.get("input_size", size)) != size or int(flow.get("input_size", 512)) != size:
        raise InputError("flow.yaml: encoder input_size, output_size and flow input_size must be equal")
    if float(enc.get("up_scale_factor", enc.get("up_stride", 2))) != float(enc.get("up_stride", 2)):
        raise InputError("flow.yaml: encoder up_scale_factor must equal up_stride")
    out = int(flow.get("output_size", 80))
    if int(est.get("in_channels", 4 * out)) != 4 * out or int(est.get("out_channels", out)) != out:
        raise InputError("flow.yaml: estimator in_channels/out_channels must be 4*mel/mel")
    try:
        return FlowConfig(
            vocab_size=int(flow.get("vocab_size", 5121)), input_size=size, output_size=out,
            spk_embed_dim=int(flow.get("spk_embed_dim", 192)), encoder_heads=int(enc.get("attention_heads", 4)),
            encoder_blocks=int(enc.get("num_blocks", 6)), encoder_up_blocks=int(enc.get("num_up_blocks", 4)),
            encoder_linear_units=int(enc.get("linear_units", 2048)),
            pre_lookahead_len=int(enc.get("pre_lookahead_len", 3)), up_stride=int(enc.get("up_stride", 2)),
            dit_depth=int(est.get("depth", 28)), dit_hidden=int(est.get("hidden_size", 256)),
            dit_heads=int(est.get("num_heads", 8)), dit_head_dim=int(est.get("head_dim", 64)),
            dit_mlp_ratio=float(est.get("mlp_ratio", 4.0)), cfg_rate=float(dec.get("inference_cfg_rate", 0.7)))
    except (TypeError, ValueError) as e:
        raise InputError(f"flow.yaml: bad value: {e}", path=path) from None


# ---- state dicts --------------------------------------------------------------------------------------------------
def fold_weight_norm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-norm pairs by the weight they stand for: w = g * v / ||v|| (norm over all dims but 0).

    Accepts the old ``X.weight_g`` / ``X.weight_v`` and the parametrization ``X.parametrizations.weight.original0``
    (g) / ``original1`` (v) spellings; other entries pass through.
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        for suffix, role in ((".weight_g", "g"), (".weight_v", "v"), (".parametrizations.weight.original0", "g"),
                             (".parametrizations.weight.original1", "v")):
            if k.endswith(suffix) or k == suffix[1:]:
                pairs.setdefault(k[: -len(suffix)] if k.endswith(suffix) else "", {})[role] = v
                break
        else:
            out[k] = v
    for base, p in pairs.items():
        if set(p) != {"g", "v"}:
            raise InputError(f"weight norm of {base}: needs both g and v")
        g, v = p["g"].float(), p["v"].float()
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        out[f"{base}.weight" if base else "weight"] = (g * v / norm).to(p["v"].dtype)
    return out


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        raise InputError(f"cannot read as a weights-only torch checkpoint: {e}", path=path) from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise InputError("expected a flat dict of name -> tensor", path=path)
    return obj


def load_state(folder: str | Path, stem: str) -> dict[str, torch.Tensor]:
    """``stem.safetensors`` if present, else ``stem.pt`` (weights only). HiFT: ``generator.`` prefix dropped and
    weight norm folded."""
    folder = Path(folder)
    path = folder / f"{stem}.safetensors"
    if not path.exists():
        path = folder / f"{stem}.pt"
    if not path.exists():
        raise InputError(f"missing {stem}.safetensors or {stem}.pt", path=folder)
    sd = _load_tensors(path)
    if stem == "hift":
        sd = fold_weight_norm({k[len("generator."):] if k.startswith("generator.") else k: v for k, v in sd.items()})
    return sd


def load_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a readable error naming missing / unexpected / mis-shaped tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    shapes = [f"{k}: {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in own if k in sd
              and sd[k].shape != own[k].shape]
    if missing or extra or shapes:
        raise InputError(f"{what}: state dict does not match the model (missing {missing[:5]}, unexpected "
                         f"{extra[:5]}, shapes {shapes[:5]})")
    module.load_state_dict(sd, strict=True)


def convert_folder(folder: str | Path) -> list[Path]:
    """Write ``flow.safetensors`` and ``hift.safetensors`` (HiFT with weight norm folded) next to the ``.pt`` files."""
    from safetensors.torch import save_file

    folder = Path(folder)
    written = []
    for stem in ("flow", "hift"):
        sd = load_state(folder, stem)
        dst = folder / f"{stem}.safetensors"
        tmp = dst.with_suffix(".safetensors.tmp")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
        tmp.replace(dst)
        written.append(dst)
    return written


def load_hift_config(folder: str | Path) -> HiFTConfig:
    """Step-Audio-2 builds HiFT with its default arguments (``HiFTGenerator()``); so do we. An optional
    ``hift.json`` (our addition, e.g. for tiny test folders) names other :class:`HiFTConfig` fields."""
    path = Path(folder) / "hift.json"
    if not path.exists():
        return HiFTConfig.step_audio2()
    import dataclasses
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON: {e}", path=path) from None
    names = {f.name for f in dataclasses.fields(HiFTConfig)}
    if not isinstance(data, dict) or not set(data) <= names:
        raise InputError(f"expected an object with HiFTConfig fields {sorted(names)}", path=path)

    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return HiFTConfig(**{k: tup(v) for k, v in data.items()})


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert a token2wav folder's flow.pt/hift.pt to safetensors, once.")
    p.add_argument("folder")
    a = p.parse_args(argv)
    for path in convert_folder(a.folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
