"""Build the model stack the engine runs: backbone + tokenizer + token layout, connector, motion tokenizer, vocoder.

- :func:`build_tiny_stack` (``tiny``): every model built from configs in code with seeded random weights (the
  test backbone, the tiny connector and motion tokenizer of :func:`tiny_motion_models`, the
  :class:`~a2llm_rt.engine.vocoder.ToneVocoder` test vocoder). Runs on a CPU in seconds; the answers are noise, the
  plumbing is real. :func:`tiny_motion_models` is the one builder of tiny motion weights (``python -m
  export.build_engines --motion tiny`` uses it too, so exported and PyTorch tiny stacks hold the same weights).
- :func:`load_stack` from directories:

  - backbone dir: a Step-Audio-2-format directory (``config.json``, safetensors, tokenizer files), loaded by
    :func:`a2llm_rt.models.checkpoint.from_pretrained_dir`;
  - motion dir::

        motion/
          tokenizer/config.json        MotionTokenizerConfig        (a training checkpoint folder also works, or
          tokenizer/model.safetensors  RVQ-VAE weights               a training output folder with latest.json)
          connector/config.json        ConnectorConfig
          connector/model.safetensors  MotionConnector weights
          arkit_map.npz                optional FLAME -> ARKit map (a2llm_rt.face.flame_to_arkit.ArkitMap)

    written by :func:`save_motion_dir`;
  - vocoder: ``tone`` (the test vocoder) or a Step-Audio-2 ``token2wav`` directory (the native implementation,
    :mod:`a2llm_rt.speech`) plus voices (prompt wavs or voice files); a backbone folder's own ``token2wav/`` is used
    when a voice is given.

No file is unpickled and no code from a model directory runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from a2llm_rt.engine.vocoder import ToneVocoder, Vocoder
from a2llm_rt.errors import InputError
from a2llm_rt.face.flame_to_arkit import ArkitMap
from a2llm_rt.models.backbone import TINY_BACKBONE, BackboneConfig, StepAudio2Backbone
from a2llm_rt.models.checkpoint import from_pretrained_dir
from a2llm_rt.models.connector import ConnectorConfig, MotionConnector
from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig
from a2llm_rt.models.token_layout import TokenLayout
from a2llm_rt.models.tokenizer import build_tiny_tokenizer
from a2llm_rt.utils.module_folder import load_module, save_module


@dataclasses.dataclass
class Stack:
    """The shared weights of an engine (all in eval mode on one device)."""

    backbone: StepAudio2Backbone
    tokenizer: object
    """``encode(str) -> list[int]``, ``decode(ids) -> str``, ``token_to_id`` (``a2llm_rt.models.tokenizer``)."""
    connector: MotionConnector
    motion: MotionTokenizer
    vocoder: Vocoder
    arkit_map: ArkitMap | None = None

    @property
    def layout(self) -> TokenLayout:
        return self.backbone.layout

    @property
    def device(self) -> torch.device:
        return self.backbone.lm_head.weight.device

    def check(self) -> None:
        """Raise :class:`InputError` when the parts do not fit together."""
        c, m, b = self.connector.cfg, self.motion.cfg, self.backbone.cfg
        problems = []
        if c.d_llm != b.hidden_size:
            problems.append(f"connector d_llm {c.d_llm} != backbone hidden size {b.hidden_size}")
        if (c.n_q, c.codebook_size, c.group) != (m.num_quantizers, m.codebook_size, m.group):
            problems.append(
                f"connector (N_q {c.n_q}, K {c.codebook_size}, G {c.group}) != motion tokenizer "
                f"(N_q {m.num_quantizers}, K {m.codebook_size}, G {m.group})"
            )
        if self.vocoder.n_codes < self.layout.audio_codes:
            problems.append(f"vocoder knows {self.vocoder.n_codes} codes, layout has {self.layout.audio_codes}")
        for f in ("eot", "tts_start", "tts_pad", "audio_patch"):
            if getattr(self.layout, f) is None:
                problems.append(f"token layout {self.layout.name!r} lacks the id of {f}")
        if problems:
            raise InputError("model stack does not fit together: " + "; ".join(problems))


#: Tiny motion models (test-sized, FLAME58 by default), built by :func:`tiny_motion_models` only.
TINY_CONNECTOR = ConnectorConfig(
    d_llm=TINY_BACKBONE.hidden_size, d_model=32, n_layers=2, n_heads=4, dropout=0.0, group=5, window=10, n_q=6,
    codebook_size=64,
)  # fmt: skip
TINY_MOTION = MotionTokenizerConfig(
    layout="flame58", width=32, num_res_blocks=1, latent_dim=16, num_quantizers=6, codebook_size=64, dropout=0.0,
    kmeans_init=False, lookahead=1,
)  # fmt: skip


def tiny_motion_models(
    seed: int = 0,
    d_llm: int = TINY_BACKBONE.hidden_size,
    window: int = TINY_CONNECTOR.window,
    motion_layout: str = "flame58",
) -> tuple[MotionConnector, MotionTokenizer]:
    """THE tiny motion stack: a seeded random connector (sized to a backbone of width ``d_llm``) and motion
    tokenizer, in eval mode on the CPU; the same arguments give the same weights (the global RNG is left untouched).

    Every ``tiny`` motion stack comes from here: :func:`build_tiny_stack`, :func:`load_stack` with ``motion="tiny"``
    and ``python -m export.build_engines --motion tiny``, so an engines folder exported from ``tiny`` runs the
    weights the torch backend runs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        connector = MotionConnector(dataclasses.replace(TINY_CONNECTOR, d_llm=d_llm, window=window))
        motion = MotionTokenizer(dataclasses.replace(TINY_MOTION, layout=motion_layout))
        d = motion.dim
        std = torch.full((d,), 0.3)
        if motion_layout == "flame58":
            std[50:] = 0.05  # jaw, global pose and eyelids move less than the expression coefficients
        motion.set_normalization(torch.zeros(d) if motion_layout == "flame58" else torch.full((d,), 0.2), std)
    return connector.eval(), motion.eval()


def build_tiny_stack(
    seed: int = 0,
    motion_layout: str = "flame58",
    window: int = 10,
    device: torch.device | str = "cpu",
    backbone_cfg: BackboneConfig = TINY_BACKBONE,
) -> Stack:
    """The whole stack at test size with seeded random weights (same seed -> same weights; the global RNG is left
    untouched). The motion models are :func:`tiny_motion_models` ``(seed, backbone width, window, motion_layout)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = StepAudio2Backbone(backbone_cfg)
    connector, motion = tiny_motion_models(seed, backbone_cfg.hidden_size, window, motion_layout)
    stack = Stack(
        backbone=backbone.to(device).eval(),
        tokenizer=build_tiny_tokenizer(backbone.layout),
        connector=connector.to(device).eval(),
        motion=motion.to(device).eval(),
        vocoder=ToneVocoder(n_codes=backbone.layout.audio_codes),
    )
    stack.check()
    return stack


# ---- directories --------------------------------------------------------------------------------------------------
def load_motion_dir(path: str | Path, device: torch.device | str = "cpu"):
    """(connector, motion tokenizer, arkit map | None) from a motion directory (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("motion directory not found", path)
    motion = load_module(path / "tokenizer", MotionTokenizerConfig, MotionTokenizer, "motion tokenizer", device)
    connector = load_module(path / "connector", ConnectorConfig, MotionConnector, "connector", device)
    amap = ArkitMap.load(path / "arkit_map.npz") if (path / "arkit_map.npz").is_file() else None
    return connector, motion, amap


def save_motion_dir(
    path: str | Path, connector: MotionConnector, motion: MotionTokenizer, arkit_map: ArkitMap | None = None
) -> None:
    """Write a motion directory that :func:`load_motion_dir` reads (every file atomically)."""
    path = Path(path)
    for name, model in (("tokenizer", motion), ("connector", connector)):
        save_module(path / name, model)
    if arkit_map is not None:
        arkit_map.save(path / "arkit_map.npz")


def load_vocoder(spec: str, n_codes: int, prompt_wav: str | Path | None = None, device: torch.device | str = "cpu",
                 voices: dict[str, str | Path] | None = None, engines: str | Path | None = None,
                 backend: str = "auto") -> Vocoder:
    """``tone`` -> the test vocoder; a ``token2wav/`` directory -> the native token2wav (:mod:`a2llm_rt.speech`),
    with ``voices`` (name -> voice file or prompt WAV; the first is the default) and/or ``prompt_wav``, its heavy
    graphs run by ``backend`` from the speech ``engines`` folder (:func:`a2llm_rt.speech.backend.use_backend`)."""
    if spec == "tone":
        if engines is not None or backend not in ("auto", "torch"):
            what = f"--speech-engines {engines}" if engines is not None else f"--speech-backend {backend}"
            raise InputError(f"{what} is for the token2wav vocoder, but this stack speaks with the test tone vocoder "
                             "(give --vocoder TOKEN2WAV_DIR and a --voice)")
        return ToneVocoder(n_codes=n_codes)
    from a2llm_rt.speech.vocoder import NativeToken2WavVocoder

    voices = dict(voices or {})
    if prompt_wav is not None:
        voices = {"default": prompt_wav, **voices}
    if not voices:
        raise InputError("the token2wav vocoder needs a voice (a prompt wav or a voice file)", spec)
    voc = NativeToken2WavVocoder.from_directory(spec, voices, device=device, engines=engines, backend=backend)
    if voc.n_codes != n_codes:
        raise InputError(f"token2wav has {voc.n_codes} codes but the backbone emits {n_codes}", spec)
    return voc


def load_stack(
    backbone: str | Path,
    motion: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    vocoder: str = "tone",
    prompt_wav: str | Path | None = None,
    seed: int = 0,
    voices: dict[str, str | Path] | None = None,
    speech_engines: str | Path | None = None,
    speech_backend: str = "auto",
) -> Stack:
    """A stack from ``backbone`` (a directory or ``tiny``) and ``motion`` (a directory or ``tiny``).

    ``tiny`` parts get seeded random weights; a ``tiny`` motion stack with a real backbone is sized to its hidden
    width. ``dtype`` defaults to bfloat16 on CUDA and float32 on the CPU. ``vocoder``, ``prompt_wav``, ``voices``,
    ``speech_engines``, ``speech_backend``: see :func:`load_vocoder` (a ``tiny`` backbone speaks through a token2wav
    folder too, when its vocabulary is the tiny backbone's audio codes).
    """
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    if str(backbone) == "tiny":
        tiny = build_tiny_stack(seed, device=device)
        if vocoder != "tone" or speech_engines is not None or speech_backend not in ("auto", "torch"):
            voc = load_vocoder(vocoder, tiny.layout.audio_codes, prompt_wav, device, voices, speech_engines,
                               speech_backend)  # fmt: skip
            tiny = dataclasses.replace(tiny, vocoder=voc)
        if str(motion) == "tiny":
            return tiny
        connector, mot, amap = load_motion_dir(motion, device)
        stack = dataclasses.replace(tiny, connector=connector, motion=mot, arkit_map=amap)
        stack.check()
        return stack
    bb, tok = from_pretrained_dir(backbone, dtype=dtype, device=device)
    if tok is None:
        raise InputError("the backbone directory has no tokenizer files (tokenizer.json)", backbone)
    if str(motion) == "tiny":
        connector, mot = tiny_motion_models(seed, bb.cfg.hidden_size)
        connector, mot, amap = connector.to(device).eval(), mot.to(device).eval(), None
    else:
        connector, mot, amap = load_motion_dir(motion, device)
    connector = connector.to(dtype)  # the hidden states come in the backbone's dtype
    if vocoder == "tone" and (Path(backbone) / "token2wav").is_dir():
        if prompt_wav is not None or voices:
            vocoder = str(Path(backbone) / "token2wav")  # the backbone's own token2wav, when a voice is given
        else:
            import logging

            logging.getLogger(__name__).warning(
                "%s has token2wav/ but no voice was given (--voice NAME=wav): speaking with the test tone vocoder",
                backbone)
    voc = load_vocoder(vocoder, bb.layout.audio_codes, prompt_wav, device, voices, speech_engines, speech_backend)
    stack = Stack(bb, tok, connector, mot, voc, amap)
    stack.check()
    return stack
