"""Write golden fixtures of Step-Audio-2's token2wav (flow + HiFT) from an upstream checkout, on tiny random configs.

Usage::

    python tools/make_token2wav_fixtures.py --upstream /path/to/Step-Audio2 [--out tests/fixtures/token2wav]

``--upstream`` is a checkout of a Step-Audio2 tree that has the streaming flow (``cosyvoice2/flow/flow.py``,
``flow_matching.py``, ``decoder_dit.py``, ``cosyvoice2/transformer/*``) and ``flashcosyvoice/modules/hifigan.py``
(github.com/stepfun-ai/Step-Audio2 or the fork github.com/yuekaizhang/Step-Audio2 whose ``token2wav.py`` has
``set_stream_cache`` / ``stream``). It needs ``einops`` and ``scipy``; nothing from the checkout is copied.

What runs upstream code: the flow model's construction, ``inference`` (whole sequence), ``setup_cache`` and
``inference_chunk`` (streaming); HiFT's construction and ``forward`` (with and without a source cache); the
``fade_in_out`` helper. What is restated here (about 20 lines): ``Token2wav.set_stream_cache`` / ``stream``'s cache
bookkeeping (upstream's method hard-codes CUDA tensors and returns int16 bytes), and the 25 + 3 code chunking of the
streaming example (``examples-vllm-stream.py``). Upstream's scratch buffers sized for the real model
(``cnn_cache_buffer`` / ``att_cache_buffer``) are resized to the tiny config; its ``rand_noise`` buffer is replaced by
a seeded one, which the fixture stores. All parameters are re-drawn at random (upstream zero-initialises the DiT's
modulation and output layers, which would make the estimator output zero).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

CHUNK = 25
SEED = 1234
N_CODES = 110
PROMPT_CODES = 12
NOISE_FRAMES = 400
FLOW = dict(vocab_size=256, input_size=32, output_size=16, spk_embed_dim=12, encoder_heads=2, encoder_blocks=2,
            encoder_up_blocks=1, encoder_linear_units=48, pre_lookahead_len=3, up_stride=2, dit_depth=2,
            dit_hidden=32, dit_heads=2, dit_head_dim=16, dit_mlp_ratio=4.0, cfg_rate=0.7)
HIFT = dict(in_channels=16, base_channels=16, nb_harmonics=2, resblock_kernel_sizes=[3, 5],
            resblock_dilation_sizes=[[1, 3], [1, 3]], source_resblock_kernel_sizes=[3, 5, 5],
            source_resblock_dilation_sizes=[[1, 3], [1, 3], [1, 3]], f0_cond_channels=16)
MEL_CACHE = 8
SOURCE_CACHE = MEL_CACHE * 480


def build_upstream(root: Path):
    sys.path.insert(0, str(root))
    from cosyvoice2.flow.decoder_dit import DiT
    from cosyvoice2.flow.flow import CausalMaskedDiffWithXvec
    from cosyvoice2.flow.flow_matching import CausalConditionalCFM
    from cosyvoice2.transformer.upsample_encoder_v2 import UpsampleConformerEncoderV2
    from flashcosyvoice.modules.hifigan import ConvRNNF0Predictor, HiFTGenerator

    f = FLOW
    enc = UpsampleConformerEncoderV2(
        input_size=f["input_size"], output_size=f["input_size"], input_layer="linear",
        pre_lookahead_len=f["pre_lookahead_len"], num_blocks=f["encoder_blocks"], num_up_blocks=f["encoder_up_blocks"],
        up_stride=f["up_stride"], up_scale_factor=f["up_stride"], attention_heads=f["encoder_heads"],
        linear_units=f["encoder_linear_units"], dropout_rate=0.0, positional_dropout_rate=0.0,
        attention_dropout_rate=0.0)
    est = DiT(in_channels=4 * f["output_size"], out_channels=f["output_size"], mlp_ratio=f["dit_mlp_ratio"],
              depth=f["dit_depth"], num_heads=f["dit_heads"], head_dim=f["dit_head_dim"], hidden_size=f["dit_hidden"])
    dec = CausalConditionalCFM(est, inference_cfg_rate=f["cfg_rate"])
    flow = CausalMaskedDiffWithXvec(input_size=f["input_size"], output_size=f["output_size"],
                                    spk_embed_dim=f["spk_embed_dim"], vocab_size=f["vocab_size"], encoder=enc,
                                    decoder=dec)
    d, hd, heads, hid = f["dit_depth"], f["dit_head_dim"], f["dit_heads"], f["dit_hidden"]
    est.cnn_cache_buffer = torch.zeros(d, 2, 2 * hid, 2)
    est.att_cache_buffer = torch.zeros(d, 2, heads, 1000, 2 * hd)
    dec.cnn_cache_buffer = torch.zeros(10, d, 2, 2 * hid, 2)
    dec.att_cache_buffer = torch.zeros(10, d, 2, heads, 1000, 2 * hd)
    h = HIFT
    hift = HiFTGenerator(in_channels=h["in_channels"], base_channels=h["base_channels"], nb_harmonics=h["nb_harmonics"],
                         resblock_kernel_sizes=h["resblock_kernel_sizes"],
                         resblock_dilation_sizes=h["resblock_dilation_sizes"],
                         source_resblock_kernel_sizes=h["source_resblock_kernel_sizes"],
                         source_resblock_dilation_sizes=h["source_resblock_dilation_sizes"],
                         f0_predictor=ConvRNNF0Predictor(in_channels=h["in_channels"],
                                                         cond_channels=h["f0_cond_channels"]))
    return flow, hift


def randomise(module: torch.nn.Module, gen: torch.Generator, scale: float) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("alpha"):          # Snake's alpha: keep it away from 0
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith("original0"):     # weight-norm gains
                p.copy_(0.2 + 0.3 * torch.rand(p.shape, generator=gen))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=gen))


def fade_in_out(root: Path):
    """Upstream's ``fade_in_out`` (token2wav.py), imported with its heavy imports stubbed out."""
    import types

    for name in ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi", "s3tokenizer", "hyperpyyaml",
                 "flashcosyvoice.utils.audio"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["hyperpyyaml"].load_hyperpyyaml = None
    sys.modules["flashcosyvoice.utils.audio"].mel_spectrogram = None
    import token2wav

    return token2wav.fade_in_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, type=Path)
    ap.add_argument("--repo", default="yuekaizhang/Step-Audio2",
                    help="GitHub owner/name of the checkout (recorded in the fixture)")
    ap.add_argument("--commit", default=None, help="upstream commit, when --upstream is not a git checkout")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/token2wav")
    a = ap.parse_args()
    root = a.upstream.resolve()
    git = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else ""
    commit = commit or a.commit or "unknown"
    torch.set_grad_enabled(False)
    flow, hift = build_upstream(root)
    gen = torch.Generator().manual_seed(SEED)
    randomise(flow, gen, 0.3)
    randomise(hift, gen, 0.3)
    with torch.no_grad():  # F0 around 150 Hz, so that the harmonic (voiced) source path is exercised
        hift.f0_predictor.classifier.bias.fill_(150.0)
    flow.eval()
    hift.eval()
    noise = torch.randn(1, FLOW["output_size"], NOISE_FRAMES, generator=gen)
    flow.decoder.rand_noise = noise.clone()
    fade = fade_in_out(root)

    prompt_tokens = torch.randint(0, FLOW["vocab_size"], (1, PROMPT_CODES), generator=gen)
    prompt_mel = torch.randn(1, 2 * PROMPT_CODES, FLOW["output_size"], generator=gen) - 4.0
    spk = torch.randn(1, FLOW["spk_embed_dim"], generator=gen)
    codes = torch.randint(0, FLOW["vocab_size"], (1, N_CODES), generator=gen)
    out: dict[str, torch.Tensor] = {"prompt_tokens": prompt_tokens, "prompt_mel": prompt_mel, "spk": spk,
                                    "codes": codes, "noise": noise}

    # whole sequence: upstream's flow.inference (prompt + answer, returns the answer's mel), then HiFT
    mel = flow.inference(codes, torch.tensor([N_CODES]), prompt_tokens, torch.tensor([PROMPT_CODES]), prompt_mel,
                         torch.tensor([prompt_mel.shape[1]]), spk, 10)
    out["whole_mel"] = mel
    torch.manual_seed(SEED + 1)
    wav, src = hift(speech_feat=mel)
    out["whole_wav"] = wav
    # HiFT alone with a source cache (the streaming path's second call)
    torch.manual_seed(SEED + 2)
    wav_c, _ = hift(speech_feat=mel[:, :, :30], cache_source=src[:, :, :SOURCE_CACHE])
    out["hift_cached_wav"] = wav_c

    # streaming: Token2wav.set_stream_cache + stream (bookkeeping restated), 25 + 3 chunking
    cache = flow.setup_cache(torch.cat([prompt_tokens, prompt_tokens[:, :3]], 1), prompt_mel, spk, n_timesteps=10)
    cache = {k: v.clone() for k, v in cache.items()}
    hc = dict(mel=torch.zeros(1, FLOW["output_size"], 0), source=torch.zeros(1, 1, 0), speech=torch.zeros(1, 0))
    window = torch.from_numpy(np.hamming(2 * SOURCE_CACHE))
    buf = codes[0].tolist()
    chunks: list[tuple[list[int], bool]] = []
    while len(buf) >= CHUNK + FLOW["pre_lookahead_len"]:
        chunks.append((buf[: CHUNK + FLOW["pre_lookahead_len"]], False))
        buf = buf[CHUNK:]
    chunks.append((buf, True))
    for i, (c, last) in enumerate(chunks):
        chunk_mel, cache = flow.inference_chunk(token=torch.tensor([c]), spk=spk, cache=cache, last_chunk=last,
                                                n_timesteps=10)
        cache = {k: v.clone() for k, v in cache.items()}
        if cache["estimator_att_cache"].shape[4] > prompt_mel.shape[1] + 100:
            att = cache["estimator_att_cache"]
            cache["estimator_att_cache"] = torch.cat([att[:, :, :, :, : prompt_mel.shape[1]], att[:, :, :, :, -100:]],
                                                     dim=4)
        m = torch.cat([hc["mel"], chunk_mel], dim=2)
        torch.manual_seed(SEED + 10 + i)
        speech, source = hift(m, hc["source"])
        if hc["speech"].shape[-1] > 0:
            speech = fade(speech, hc["speech"], window)
        hc = dict(mel=m[..., -MEL_CACHE:].clone(), source=source[:, :, -SOURCE_CACHE:].clone(),
                  speech=speech[:, -SOURCE_CACHE:].clone())
        if not last:
            speech = speech[:, :-SOURCE_CACHE]
        out[f"stream_mel_{i}"] = chunk_mel
        out[f"stream_wav_{i}"] = speech

    a.out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().float() if v.is_floating_point() else v.contiguous() for k, v in out.items()}
    tensors.update({f"flow.{k}": v.contiguous() for k, v in flow.state_dict().items()})
    tensors.update({f"hift.{k}": v.contiguous() for k, v in hift.state_dict().items()})
    save_file(tensors, str(a.out / "golden.safetensors"))
    meta = {
        "upstream": f"github.com/{a.repo} (Step-Audio2 tree with the streaming token2wav)",
        "upstream_path_name": root.name, "upstream_commit": commit, "torch": torch.__version__,
        "flow": FLOW, "hift": HIFT, "seed": SEED, "hift_seeds": {"whole": SEED + 1, "cached": SEED + 2,
                                                                  "stream_first": SEED + 10},
        "chunk_codes": CHUNK, "n_chunks": len(chunks), "chunks": [[len(c), last] for c, last in chunks],
        "mel_cache_frames": MEL_CACHE, "source_cache_samples": SOURCE_CACHE, "estimator_trim": [2 * PROMPT_CODES, 100],
        "restated": "Token2wav.set_stream_cache/stream cache bookkeeping and the 25+3 chunking; see script docstring",
    }
    (a.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {a.out} ({sum(v.numel() * v.element_size() for v in tensors.values()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
