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
- ``chat_template_hf.json`` (with ``--step-audio2``): stepfun-ai/Step-Audio2 ``stepaudio2.py``
  ``StepAudio2.apply_chat_template`` of a conversation with audio questions, a spoken answer re-sent as upstream's
  multi-turn example does, and a text + audio turn, tokenized as its ``__call__`` does;
- ``tiny_model/`` (with ``--step-audio2``): a tiny random Step-Audio-2 checkpoint written from upstream modules
  (``AudioEncoder`` and ``Adaptor`` of the vLLM fork's ``mm_step_audio.py``; the text model is transformers'
  ``Qwen2Model`` built from the fork's ``StepAudio2TextConfig``, as upstream's HF model ``StepAudio2ForCausalLM``
  does) and ``tiny_model.npz``: a test waveform, its log-mel (Step-Audio2 ``utils.log_mel_spectrogram`` and the
  fork's ``Step1fProcessor._log_mel_spectrogram``), encoder/adapter outputs with the lengths ``padding_mels`` gives
  (``T - 2``), logits and last hidden states of a prompt whose ``<audio_patch>`` embeddings are replaced by the
  adapter rows in order (the fork's ``merge_multimodal_embeddings`` rule, written here: the fork's vLLM helper is not
  importable without vLLM), and the placeholder counts of both upstreams over a grid of mel lengths.
  ``mm_step_audio.py`` imports most of vLLM; those imports are replaced by inert stand-ins (only the torch modules
  above run). ``--step-audio2`` is a directory holding stepfun-ai/Step-Audio2's ``utils.py`` and ``stepaudio2.py``
  (their ``torchaudio`` / ``device_utils`` imports, used only to read files and pick a device, are replaced by
  stand-ins).
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


# ---- tiny model: mel, audio encoder + adapter, LLM logits ------------------------------------------------------
class _AnyMeta(type):
    def __getattr__(cls, name):
        return lambda *a, **k: lambda obj: obj

    def __getitem__(cls, item):
        return cls


class _Any(metaclass=_AnyMeta):
    """Inert stand-in for any vLLM name ``mm_step_audio.py`` imports: subclassable, subscriptable, decorators are
    identities."""

    def __init__(self, *a, **k):
        pass


class _AnyModule(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = _AnyMeta(name, (_Any,), {})  # one class per name: several may be bases of one class
        setattr(self, name, cls)
        return cls


def load_mm_step_audio(root: Path):
    """The fork's ``mm_step_audio.py`` with every ``vllm`` import served by inert stand-ins."""
    import importlib.abc

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if (fullname == "vllm" or fullname.startswith("vllm.")) and fullname not in sys.modules:
                return importlib.util.spec_from_loader(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            return _AnyModule(spec.name)

        def exec_module(self, module):
            pass

    finder = Finder()
    sys.meta_path.insert(0, finder)
    try:
        for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
            del sys.modules[name]  # the stubs of the TA4 part are not needed any more
        f = root / "vllm/model_executor/models/mm_step_audio.py"
        spec = importlib.util.spec_from_file_location("vllm.model_executor.models.mm_step_audio", f)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        cfg = _load(root / "vllm/transformers_utils/configs/step_audio.py", "_upstream_step_audio_config")
    finally:
        sys.meta_path.remove(finder)
    return mod, cfg


def model_fixture(up: Upstream, step_audio2: Path, out: Path) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from a2llm_rt.models.backbone import TINY_BACKBONE
    from a2llm_rt.models.checkpoint import config_to_hf_dict
    from a2llm_rt.models.token_layout import TINY
    from a2llm_rt.utils.fileio import atomic_write_json

    _stub("torchaudio")
    utils = _load(step_audio2 / "utils.py", "_upstream_step_audio2_utils")
    mm, cfgmod = load_mm_step_audio(up.root)
    c = TINY_BACKBONE
    hf = config_to_hf_dict(c, TINY)
    torch.manual_seed(SEED)
    encoder = mm.AudioEncoder(c.n_mels, c.audio_ctx, c.audio_state, c.audio_heads, c.audio_layers)
    adapter = mm.Adaptor(c.audio_state, c.hidden_size, c.adapter_kernel, c.adapter_stride, c.adapter_hidden)
    text_cfg = cfgmod.StepAudio2TextConfig(**hf["text_config"]).text_config
    text_cfg._attn_implementation = "eager"
    from transformers import Qwen2Model

    llm = Qwen2Model(text_cfg)
    lm_head = torch.nn.Linear(c.hidden_size, c.vocab_size, bias=False)
    modules = {"encoder": encoder, "adapter": adapter, "model": llm, "lm_head": lm_head}
    with torch.no_grad():  # non-trivial random weights, rounded to float16 so the fixture can store them in half
        for m in modules.values():
            for name, p in m.named_parameters():
                if name.endswith("bias") or "norm" in name or "_ln" in name:
                    p.copy_(p + 0.1 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.08)
                p.copy_(p.half().float())
    state = {f"{k}.{n}": t.detach().half().contiguous() for k, m in modules.items() for n, t in m.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    d = out / "tiny_model"
    d.mkdir(parents=True, exist_ok=True)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    atomic_write_json(d / "config.json", hf)

    rng = np.random.default_rng(SEED)
    n = 16000 + 7 * 160 + 37  # 1.07 s, not a whole number of hops
    t = np.arange(n) / 16000
    wave = (0.4 * np.sin(2 * np.pi * (180 + 300 * t) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    mel_hf = utils.log_mel_spectrogram(torch.from_numpy(wave), n_mels=128, padding=479)  # [128, T]
    proc = mm.Step1fProcessor.__new__(mm.Step1fProcessor)
    proc._mel_filters = torch.from_numpy(__import__("librosa").filters.mel(sr=16000, n_fft=400, n_mels=128))
    mel_vllm = proc._log_mel_spectrogram(wave, padding=479).t()
    mels, lens = utils.padding_mels([mel_hf])
    with torch.no_grad():
        enc, enc_lens = encoder(mels, lens.long())
        ada = adapter(enc)
        n_feat = int((enc_lens[0] - 1) // 2 + 1)
        n_patch = utils.compute_token_num(mel_hf.shape[1])
        prompt = [TINY.bot, 40, 41, 42, TINY.audio_start] + [TINY.audio_patch] * n_patch + [TINY.audio_end, TINY.eot,
                  TINY.bot, 43, 44, TINY.tts_start, 10, TINY.audio_offset + 5]  # fmt: skip
        ids = torch.tensor([prompt])
        emb = llm.embed_tokens(ids)
        patch = (ids == TINY.audio_patch)[0].nonzero()[:, 0]
        emb[0, patch] = ada[0, :n_feat].to(emb.dtype)
        hidden = llm(inputs_embeds=emb).last_hidden_state
        logits = lm_head(hidden)
    grid = list(range(3, 2600))
    np.savez_compressed(
        out / "tiny_model.npz",
        wave=wave,
        mel_step_audio2=mel_hf.numpy(),
        mel_vllm=mel_vllm.numpy(),
        encoder_out=enc[0].numpy(),
        encoder_len=enc_lens.numpy(),
        adapter_out=ada[0, :n_feat].numpy(),
        input_ids=ids.numpy(),
        logits=logits[0].numpy(),
        hidden=hidden[0].numpy(),
        mel_grid=np.array(grid),
        patches_step_audio2=np.array([utils.compute_token_num(g) for g in grid]),
        patches_vllm=np.array([proc.get_num_audio_tokens(g) for g in grid]),
    )
    meta = {
        "upstream": [
            up.meta("vllm/model_executor/models/mm_step_audio.py",
                    "AudioEncoder, Adaptor, Step1fProcessor._log_mel_spectrogram / get_num_audio_tokens"),
            up.meta("vllm/transformers_utils/configs/step_audio.py", "StepAudio2TextConfig(...).text_config"),
            {"repo": "stepfun-ai/Step-Audio2", "file": "utils.py",
             "function": "log_mel_spectrogram, padding_mels, compute_token_num",
             "commit": "not recorded by the code index it came from (its stepaudio2.py is at c22bfade1579)"},
        ],
        "seed": SEED,
        "config": "a2llm_rt.models.backbone.TINY_BACKBONE (config.json in tiny_model/)",
        "by_hand": "the text model is transformers' Qwen2Model (what upstream's HF StepAudio2ForCausalLM uses); the "
        "<audio_patch> merge (rows replaced in order) and lm_head are written in the generator after the fork's "
        "merge_multimodal_embeddings / compute_logits, which need vLLM.",
        "weights": "float16 in model.safetensors (upstream names); outputs computed in float32 from the same values",
        "placeholder_counts": "Step-Audio2 compute_token_num uses T - 2 (as padding_mels' lengths); the vLLM fork's "
        "get_num_audio_tokens uses T: they differ for some T (patches_* in tiny_model.npz).",
    }  # fmt: skip
    (out / "tiny_model.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("wrote", d, out / "tiny_model.npz")


def hf_chat_fixture(step_audio2: Path, tok, out: Path) -> None:
    """Step-Audio2 ``stepaudio2.py`` ``StepAudio2.apply_chat_template`` + the tokenization of its ``__call__``."""
    import numpy as np
    import torch

    from a2llm_rt.models.token_layout import TINY

    _stub("torchaudio")
    _stub("device_utils", get_device=lambda: torch.device("cpu"))
    sys.path.insert(0, str(step_audio2))
    try:
        sa2 = _load(step_audio2 / "stepaudio2.py", "_upstream_stepaudio2")
    finally:
        sys.path.remove(str(step_audio2))
    rng = np.random.default_rng(SEED + 1)
    waves = {
        "question.wav": (0.3 * rng.standard_normal(12800 + 333)).astype(np.float32),
        "second.wav": (0.2 * np.sin(np.arange(20000 + 77) * 0.05)).astype(np.float32),
    }
    sa2.load_audio = lambda path: torch.from_numpy(waves[path])  # stand-in for reading the files
    text_answer, codes = "It is sunny and warm.", [3, 17, 42, 9, 11, 63, 0, 5, 27]
    stream = TINY.interleave(tok.encode(text_answer, add_special_tokens=False), codes)
    generated = stream[1:]  # what generate() returned after the prompt's <tts_start>, without the final <|EOT|>
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "human", "content": [{"type": "audio", "audio": "question.wav"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<tts_start>"},
                                          {"type": "token", "token": generated}]},
        {"role": "human", "content": "Now tell me about Paris."},
        {"role": "human", "content": [{"type": "text", "text": "Translate the speech."},
                                      {"type": "audio", "audio": "second.wav"}]},
        {"role": "assistant", "content": "<tts_start>", "eot": False},
    ]  # fmt: skip
    parts, mels = sa2.StepAudio2.apply_chat_template(None, messages)
    ids: list[int] = []
    for msg in parts:  # StepAudio2Base.__call__'s tokenization
        if isinstance(msg, str):
            ids += tok(text=msg, return_tensors="pt", padding=True)["input_ids"][0].tolist()
        else:
            ids += list(msg)
    meta = {
        "upstream": {"repo": "stepfun-ai/Step-Audio2", "commit": "c22bfade1579c55aa6cffbce40094fd5770b5331",
                     "file": "stepaudio2.py", "function": "StepAudio2.apply_chat_template + StepAudio2Base.__call__ "
                     "tokenization (written here: __call__ also generates)"},
        "layout": "tiny",
        "note": "upstream's tokenizer class over the tiny vocabulary; the audio files are seeded waveforms of "
        "audio_samples samples (load_audio stand-in; the ids depend only on their lengths, log-mel values are "
        "compared in tiny_model.npz); utils.py from the directory given with --step-audio2",
        "audio_samples": {k: int(v.shape[0]) for k, v in waves.items()},
        "mel_frames": [int(m.shape[1]) for m in mels],
        "messages": [dict(m) for m in messages],
        "answer_text": text_answer,
        "answer_codes": codes,
        "ids": [int(i) for i in ids],
    }  # fmt: skip
    (out / "chat_template_hf.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("wrote", out / "chat_template_hf.json")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-mini", type=Path, required=True, help="stepfun-ai/vllm checkout, branch step-audio2-mini")
    ap.add_argument("--vllm-mini-commit")
    ap.add_argument("--vllm-new", type=Path, help="stepfun-ai/vllm checkout, branch feat/step-audio-support")
    ap.add_argument("--vllm-new-commit")
    ap.add_argument("--step-audio2", type=Path, help="directory with stepfun-ai/Step-Audio2's utils.py")
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
            if tag == "mini":
                mini = up
                if args.step_audio2 is not None:
                    hf_chat_fixture(args.step_audio2, tok, args.out)
    if args.step_audio2 is not None:
        model_fixture(mini, args.step_audio2, args.out)


if __name__ == "__main__":
    main()
