"""Write golden parity fixtures from upstream Step-Audio-2 code (never copied into this repository).

Usage (paths of upstream checkouts, outside this repository)::

    python tools/make_upstream_fixtures.py \\
        --vllm-mini /tmp/upstream-vllm-mini --vllm-mini-commit 9ecabf22f542a2dd2962527a7eb9359021b3cc9f \\
        --vllm-new /tmp/upstream-vllm --vllm-new-commit 484a5a5a5b478858ce8b091fbfe201c0fbaae08f \\
        --out tests/fixtures/upstream

``--vllm-mini``: stepfun-ai/vllm, branch ``step-audio2-mini`` (the branch the Step-Audio2 README points to);
``--vllm-new``: branch ``feat/step-audio-support`` (later; optional). A checkout needs only the files this script
imports (``git archive <commit> vllm/transformers_utils/tokenizers vllm/tokenizers vllm/audio_parser | tar -x``);
when the directory is a git work tree its HEAD is used as the commit.

What runs: the upstream files are imported from the checkout and their functions run unmodified. Their vLLM
imports that this script does not need (``vllm.logger``, the OpenAI request type, the ``AudioParser`` base class,
which only stores the tokenizer and its vocabulary) are replaced by minimal stand-ins registered in
``sys.modules`` before the import; the fixture metadata says so. The tokenizer is upstream's
``StepAudio2Tokenizer`` class over a tiny vocabulary: this project's tiny byte-level BPE (``TINY`` ids) plus
``<audio_0>``..``<audio_63>`` at the TINY audio ids and ``<audio_6561>`` (upstream's hard-coded padding string) at
TINY's padding id, so upstream's hard-coded token strings resolve to the TINY layout.

Fixtures written (each with ``upstream`` = repo, branch, commit, file, function):

- ``ta4_interleave.json``: ``build_tts_interleave_data(text, audio, chunk=4)`` over a grid of lengths;
- ``ta4_parser.json``: ``StepAudio2TTSTA4Parser.extract_audio_content_nonstreaming`` on generated streams;
- ``chat_template.json``: ``apply_chat_template_trans_ta4`` of a multi-turn conversation (system, text, a spoken
  answer, audio placeholders, an open spoken answer).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import types
from pathlib import Path

REPO = "stepfun-ai/vllm"
LENGTHS_TEXT = (0, 1, 3, 4, 5, 14, 20)
LENGTHS_AUDIO = (0, 1, 3, 4, 5, 8, 14, 16, 17)
SEED = 20260303


# ---- loading upstream files ----------------------------------------------------------------------------------------
def _stub(name: str, **attrs) -> types.ModuleType:
    mod = sys.modules.get(name) or types.ModuleType(name)
    mod.__path__ = []  # a package, so submodules can be registered
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod
    return mod


class _AudioParserBase:
    """Stand-in for vLLM's ``AudioParser`` base: keeps the tokenizer and its vocabulary (all the TA4 parser uses)."""

    def __init__(self, tokenizer):
        self.model_tokenizer = tokenizer
        self.vocab = tokenizer.get_vocab()


class _Manager:
    @staticmethod
    def register_module(name):
        return lambda cls: cls


def _install_stubs() -> None:
    _stub("vllm")
    _stub("vllm.logger", init_logger=logging.getLogger)
    _stub("vllm.audio_parser", AudioParser=_AudioParserBase, AudioParserManager=_Manager)
    for name in ("vllm.entrypoints", "vllm.entrypoints.openai", "vllm.entrypoints.openai.chat_completion"):
        _stub(name)
    _stub("vllm.entrypoints.openai.protocol", ChatCompletionRequest=object)
    _stub("vllm.entrypoints.openai.chat_completion.protocol", ChatCompletionRequest=object)


def _load(path: Path, name: str):
    if not path.is_file():
        raise SystemExit(f"upstream file missing: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _commit(root: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"{root} is not a git work tree: give its commit with --*-commit") from None


TOKENIZER_FILES = (
    "vllm/transformers_utils/tokenizers/step_audio_2_tokenizer.py",  # step-audio2-mini branch
    "vllm/tokenizers/step_audio_2.py",  # feat/step-audio-support branch
)
PARSER_FILE = "vllm/audio_parser/step_audio_2_tts_ta4_parser.py"


class Upstream:
    """One upstream checkout: its tokenizer class, TA4 parser class and commit."""

    def __init__(self, root: Path, commit: str, branch: str, tag: str):
        self.root, self.commit, self.branch = root, commit, branch
        self.tok_file = next((f for f in TOKENIZER_FILES if (root / f).is_file()), None)
        if self.tok_file is None:
            raise SystemExit(f"{root}: none of {TOKENIZER_FILES}")
        self.tok_cls = _load(root / self.tok_file, f"_upstream_{tag}_tokenizer").StepAudio2Tokenizer
        self.parser_cls = _load(root / PARSER_FILE, f"_upstream_{tag}_parser").StepAudio2TTSTA4Parser

    def meta(self, file: str, function: str) -> dict:
        return {"repo": REPO, "branch": self.branch, "commit": self.commit, "file": file, "function": function}


# ---- the tiny tokenizer in upstream's class --------------------------------------------------------------------
def tiny_upstream_tokenizer(tok_cls, workdir: Path):
    """Upstream's ``StepAudio2Tokenizer`` over this project's tiny vocabulary + audio token strings."""
    from tokenizers import AddedToken

    from a2llm_rt.models.token_layout import TINY
    from a2llm_rt.models.tokenizer import build_tiny_tokenizer

    ours = build_tiny_tokenizer()
    backend = ours.hf.backend_tokenizer
    names = [f"<audio_{c}>" for c in range(TINY.audio_codes)] + ["<audio_6561>"]
    if backend.get_vocab_size() != TINY.audio_offset:
        raise SystemExit(f"tiny tokenizer has {backend.get_vocab_size()} ids, expected {TINY.audio_offset}")
    backend.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    for c, n in enumerate(names):
        if backend.token_to_id(n) != TINY.audio_offset + c:
            raise SystemExit(f"{n} landed at {backend.token_to_id(n)}")
    d = workdir / "tok"
    d.mkdir(parents=True, exist_ok=True)
    backend.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|EOT|>", "pad_token": "<|endoftext|>"}))
    return tok_cls.from_pretrained(str(d)), ours


# ---- fixtures ---------------------------------------------------------------------------------------------------
def interleave_cases(up: Upstream, tok) -> dict:
    import numpy as np

    from a2llm_rt.models.token_layout import TINY

    rng = np.random.default_rng(SEED)
    cases = []
    for nt in LENGTHS_TEXT:
        for na in LENGTHS_AUDIO:
            text = rng.integers(0, 250, nt).tolist()
            codes = rng.integers(0, TINY.audio_codes, na).tolist()
            audio_ids = [TINY.audio_offset + c for c in codes]
            out = up.tok_cls.build_tts_interleave_data(tok, list(text), list(audio_ids), chunk=4)
            cases.append({"text": text, "audio_codes": codes, "stream": [int(i) for i in out]})
    return {
        "upstream": up.meta(up.tok_file, "StepAudio2Tokenizer.build_tts_interleave_data(text, audio, chunk=4)"),
        "seed": SEED,
        "layout": "tiny",
        "ids": {
            "tts_start": tok.tts_start_token_id,
            "tts_end": tok.tts_end_token_id,
            "tts_pad": tok.tts_pad_token_id,
            "audio_pad": tok.audio_pad_token_id,
        },  # fmt: skip
        "note": "audio passed as ids (audio_offset + code), as upstream's tokenizer does; text ids are arbitrary "
        "text-range ids. Ran unmodified on upstream's StepAudio2Tokenizer class over the tiny vocabulary.",
        "cases": cases,
    }


def parser_cases(up: Upstream, tok, interleave: dict) -> dict:
    parser = up.parser_cls(tok)
    # the method was renamed between the branches (same body): extract_tts_content_nonstreaming(..., is_tts_ta4_output)
    extract = getattr(parser, "extract_audio_content_nonstreaming", None) or parser.extract_tts_content_nonstreaming
    eot = tok.convert_tokens_to_ids("<|EOT|>")
    streams = []
    for c in interleave["cases"]:
        body = c["stream"][1:]  # generated tokens: the prompt ends in <tts_start>
        streams.append(body)
        streams.append(body + [eot])  # with the end-of-turn token the engine stops on
    streams.append(interleave["cases"][5]["stream"][1:-1])  # a stream cut before <tts_end>
    tail = [tok.convert_tokens_to_ids("<tts_end>"), 17, 18]
    streams.append(interleave["cases"][-1]["stream"][1:-1] + tail)  # text after <tts_end> ("other")
    out = []
    for s in streams:
        text, audio, other = extract(s, None, True)
        out.append({"stream": s, "text": list(text), "audio": list(audio), "other": list(other)})
    return {
        "upstream": up.meta(
            PARSER_FILE,
            "StepAudio2TTSTA4Parser.extract_audio_content_nonstreaming (branch "
            "step-audio2-mini: extract_tts_content_nonstreaming)",
        ),
        "layout": "tiny",
        "note": "audio returned as ids (>= <audio_0>); the parser class ran unmodified, its vLLM AudioParser base "
        "(tokenizer + get_vocab) and logger/protocol imports were minimal stand-ins.",
        "cases": out,
    }


def chat_template_case(up: Upstream, tok, interleave: dict) -> dict:
    from a2llm_rt.models.token_layout import TINY

    spoken = next(c for c in interleave["cases"] if len(c["text"]) == 0 and len(c["audio_codes"]) == 0)
    text_answer = "It is sunny and warm."
    codes = [3, 17, 42, 9, 11, 63, 0, 5, 27, 33]
    patches = 7
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Please tell me about the weather in Paris."},
        {"role": "assistant", "content": "",
         "tts_content": {"tts_text": text_answer, "tts_audio": "".join(f"<audio_{c}>" for c in codes)}},
        {"role": "user", "content": "<audio_start>" + "<audio_patch>" * patches + "<audio_end>"},
        {"role": "assistant", "content": "<tts_start>"},
    ]  # fmt: skip
    ids = up.tok_cls.apply_chat_template_trans_ta4(tok, conversation, continue_final_message=True)
    del spoken
    return {
        "upstream": up.meta(
            up.tok_file, "StepAudio2Tokenizer.apply_chat_template_trans_ta4(..., continue_final_message=True)"
        ),
        "layout": "tiny",
        "conversation": conversation,
        "answer_text": text_answer,
        "answer_codes": codes,
        "audio_patches": patches,
        "ids": [int(i) for i in ids],
        "audio_offset": TINY.audio_offset,
        "note": "user audio is written as upstream's processor expands it (<audio_start> <audio_patch>*n "
        "<audio_end>); the last assistant message '<tts_start>' with continue_final_message=True is how a spoken "
        "answer is requested (StepAudio2TTSTA4Parser.is_audio_output checks the prompt ends in <tts_start>).",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-mini", type=Path, required=True, help="stepfun-ai/vllm checkout, branch step-audio2-mini")
    ap.add_argument("--vllm-mini-commit")
    ap.add_argument("--vllm-new", type=Path, help="stepfun-ai/vllm checkout, branch feat/step-audio-support")
    ap.add_argument("--vllm-new-commit")
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/upstream"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _install_stubs()
    args.out.mkdir(parents=True, exist_ok=True)
    sources = [("mini", args.vllm_mini, args.vllm_mini_commit, "step-audio2-mini")]
    if args.vllm_new is not None:
        sources.append(("new", args.vllm_new, args.vllm_new_commit, "feat/step-audio-support"))
    with tempfile.TemporaryDirectory() as tmp:
        for tag, root, commit, branch in sources:
            up = Upstream(root, _commit(root, commit), branch, tag)
            tok, _ = tiny_upstream_tokenizer(up.tok_cls, Path(tmp) / tag)
            inter = interleave_cases(up, tok)
            suffix = "" if tag == "mini" else "_" + tag
            files = {
                f"ta4_interleave{suffix}.json": inter,
                f"ta4_parser{suffix}.json": parser_cases(up, tok, inter),
                f"chat_template{suffix}.json": chat_template_case(up, tok, inter),
            }
            for name, obj in files.items():
                (args.out / name).write_text(json.dumps(obj, indent=1) + "\n")
                print("wrote", args.out / name)


if __name__ == "__main__":
    main()
