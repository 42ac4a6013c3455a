"""Check a Step-Audio-2 checkpoint folder without loading its weights: ``python -m a2llm_rt.models.doctor DIR``.

What it checks (only file headers and small files are read; no tensor is loaded, the model is built on the meta
device to know the expected names and shapes):

- ``config.json``: readable, a Step-Audio-2 backbone (:func:`~a2llm_rt.models.checkpoint.config_from_hf_dict`),
  its sizes printed, compared with Step-Audio-2-mini's when the token layout is ``step_audio2``;
- weights: the safetensors index and every shard header against the name map
  (:data:`~a2llm_rt.models.checkpoint.CHECKPOINT_PREFIXES`): missing, unexpected and wrong-shaped tensors, each
  named with its file; dtypes summarised;
- tokenizer: files present, vocabulary within ``vocab_size``, every special id and ``<audio_0>`` / the audio
  padding code where the token layout expects them (``TokenLayout.resolved``), all specials known;
- ``token2wav/``: the files upstream's ``Token2wav`` opens (``flow.yaml``, ``flow.pt``, ``hift.pt``,
  ``campplus.onnx``, ``speech_tokenizer_v2_25hz.onnx``) present, non-empty and of the right kind (zip archive for
  ``.pt``, ONNX protobuf for ``.onnx``, text for ``.yaml``). A tiny-layout folder may lack it (the tiny test
  backbone uses the built-in vocoder).

Exit status 0 when nothing is wrong, 1 otherwise; ``--json`` prints the report as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main

TOKEN2WAV_FILES = ("flow.yaml", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v2_25hz.onnx")


@dataclasses.dataclass
class Report:
    """What the doctor found: ``problems`` (each names the file and, for weights, the tensor) and ``notes``."""

    path: str
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"checkpoint {self.path}"]
        lines += [f"  ok   {n}" for n in self.notes]
        lines += [f"  FAIL {p}" for p in self.problems]
        lines.append("no problems found" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


def _check_config(path: Path, rep: Report):
    from a2llm_rt.models.backbone import STEP_AUDIO2_MINI
    from a2llm_rt.models.checkpoint import config_from_hf_dict
    from a2llm_rt.models.token_layout import get_token_layout

    f = path / "config.json"
    try:
        data = json.loads(f.read_text())
    except OSError as e:
        rep.problems.append(f"{f.name}: cannot read ({e.strerror})")
        return None, None
    except ValueError as e:
        rep.problems.append(f"{f.name}: not JSON ({e})")
        return None, None
    try:
        cfg, layout = config_from_hf_dict(data, f)
    except InputError as e:
        rep.problems.append(f"{f.name}: {e.problem}")
        return None, None
    layout = get_token_layout(cfg.token_layout) if layout is None else layout
    rep.notes.append(
        f"config.json: vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, {cfg.num_layers} layers, {cfg.num_heads} "
        f"heads / {cfg.num_kv_heads} KV, FFN {cfg.intermediate_size}; audio encoder {cfg.n_mels} mels, "
        f"state {cfg.audio_state}, {cfg.audio_layers} layers, {cfg.audio_heads} heads, ctx {cfg.audio_ctx}; "
        f"token layout {layout.name!r}"
    )
    if layout.vocab_size != cfg.vocab_size:
        rep.problems.append(f"config.json: vocab_size {cfg.vocab_size}, token layout {layout.name!r} has "
                            f"{layout.vocab_size}")  # fmt: skip
    if layout.name == "step_audio2":
        skip = {"tap_layer", "max_position_embeddings", "rms_norm_eps"}
        for fld in dataclasses.fields(cfg):
            got, want = getattr(cfg, fld.name), getattr(STEP_AUDIO2_MINI, fld.name)
            if fld.name not in skip and got != want:
                rep.problems.append(f"config.json: {fld.name} {got!r}, Step-Audio-2-mini has {want!r}")
    return cfg, layout


def _check_weights(path: Path, cfg, layout, rep: Report) -> None:
    from safetensors import safe_open

    from a2llm_rt.models.checkpoint import _shard_files, expected_tensors, tensor_problems

    try:
        expected = expected_tensors(cfg, layout)
        problems = tensor_problems(path, expected)
        files = _shard_files(path)
    except InputError as e:
        where = Path(e.path).name if getattr(e, "path", None) else "weights"
        rep.problems.append(f"{where}: {e.problem}")
        return
    rep.problems += problems
    dtypes: Counter = Counter()
    for fname in sorted(set(files.values())):
        with safe_open(str(path / fname), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                dtypes[str(f.get_slice(k).get_dtype())] += 1
    n_files = len(set(files.values()))
    rep.notes.append(
        f"weights: {len(files)} tensors in {n_files} file(s), {len(expected)} expected; dtypes "
        + ", ".join(f"{d} x{n}" for d, n in sorted(dtypes.items()))
    )


def _check_tokenizer(path: Path, cfg, layout, rep: Report) -> None:
    from a2llm_rt.models.checkpoint import check_tokenizer
    from a2llm_rt.models.token_layout import SPECIAL_TOKENS
    from a2llm_rt.models.tokenizer import load_tokenizer

    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        rep.problems.append("tokenizer.json: missing (no tokenizer files)")
        return
    try:
        tok = load_tokenizer(path)
        full = check_tokenizer(tok, layout, cfg, path / "tokenizer.json")
    except InputError as e:
        rep.problems.append(f"tokenizer.json: {e.problem}")
        return
    for f, t in SPECIAL_TOKENS.items():
        if tok.token_to_id(t) is None and getattr(full, f) is not None:
            rep.problems.append(f"tokenizer.json: no {t} token (the token layout expects id {getattr(full, f)})")
    missing = [SPECIAL_TOKENS[f] for f in SPECIAL_TOKENS if getattr(full, f) is None]
    if missing:
        rep.problems.append(f"tokenizer.json: no id for {', '.join(missing)}")
    if layout.name == "step_audio2":
        for code in (0, layout.audio_codes - 1, layout.audio_codes):
            if tok.token_to_id(f"<audio_{code}>") is None:
                rep.problems.append(
                    f"tokenizer.json: no <audio_{code}> token (expected at {layout.audio_offset + code})"
                )
    ids = ", ".join(f"{SPECIAL_TOKENS[f]}={getattr(full, f)}" for f in SPECIAL_TOKENS if getattr(full, f) is not None)
    rep.notes.append(f"tokenizer: {len(tok)} ids; {ids}; audio code 0 = id {full.audio_offset}")


def _kind_problem(f: Path) -> str | None:
    size = f.stat().st_size
    if size == 0:
        return "empty file"
    with f.open("rb") as fh:
        head = fh.read(4)
    if f.suffix == ".pt" and head[:2] != b"PK":
        return "not a torch.save zip archive"
    if f.suffix == ".onnx" and head[:1] != b"\x08":
        return "not an ONNX model (protobuf ir_version field first)"
    if f.suffix == ".yaml":
        try:
            f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            return "not UTF-8 text"
    return None


def _check_token2wav(path: Path, layout, rep: Report) -> None:
    d = path / "token2wav"
    if not d.is_dir():
        if layout is not None and layout.name == "tiny":
            rep.notes.append("token2wav/: absent (tiny test backbone: built-in vocoder)")
        else:
            rep.problems.append("token2wav/: missing (speech output needs " + ", ".join(TOKEN2WAV_FILES) + ")")
        return
    present = []
    for name in TOKEN2WAV_FILES:
        f = d / name
        if not f.is_file():
            rep.problems.append(f"token2wav/{name}: missing")
            continue
        why = _kind_problem(f)
        if why:
            rep.problems.append(f"token2wav/{name}: {why}")
        else:
            present.append(f"{name} ({f.stat().st_size / 1e6:.1f} MB)")
    if present:
        rep.notes.append("token2wav/: " + ", ".join(present))


def diagnose(path: str | Path) -> Report:
    """Check the checkpoint folder ``path`` (see the module docstring); never loads a tensor."""
    path = Path(path)
    rep = Report(str(path))
    if not path.is_dir():
        rep.problems.append(f"{path}: not a directory")
        return rep
    cfg, layout = _check_config(path, rep)
    if cfg is not None:
        _check_weights(path, cfg, layout, rep)
        _check_tokenizer(path, cfg, layout, rep)
    _check_token2wav(path, layout, rep)
    return rep


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m a2llm_rt.models.doctor", description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    rep = diagnose(args.directory)
    if args.json:
        print(json.dumps(dataclasses.asdict(rep) | {"ok": rep.ok}, indent=1))
    else:
        print(rep.text())
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
