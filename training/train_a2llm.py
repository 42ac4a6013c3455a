"""The A2-LLM 3-stage LoRA curriculum: ``python -m training.train_a2llm --stage 1|2|3 --config RECIPE.yaml``.

Model (:class:`A2LLM`): the backbone (Step-Audio-2 architecture, frozen) with LoRA adapters on its LLM, and the Motion
Connector reading the tapped hidden states at the answer's audio positions. Loss ``L = L_seq + λ·L_motion``: ``L_seq``
the next-token cross-entropy over the assistant's tokens, ``L_motion`` the sum over the N_q RVQ levels of the motion
token cross-entropy (:func:`~a2llm_rt.models.connector.connector_loss`).

Stages (the paper's curriculum), each writing ``OUT/stage{N}/`` (``lora/`` through peft, ``connector/`` as a module
folder: ``config.json`` + ``model.safetensors``; ``optimizer.safetensors``, ``trainer_state.json``; stage folders of
earlier versions, with ``connector.json`` + ``connector.safetensors``, still load):

1. connector pre-training: fresh LoRA + fresh connector, differential learning rates (LoRA 1e-4, connector 1e-5 by
   default);
2. LoRA reset: the stage-1 LoRA is discarded, the stage-1 connector kept, a fresh LoRA is trained jointly with it
   "using the same differential learning rates" (§5.3; the defaults are stage 1's);
3. affective instruction tuning: LoRA and connector from stage 2, trained on the stage's *own* affective dataset
   (``stage3.train_data``: the paper's separate ~1k-sample emotion-rich FLAME-QA subset, App. A; never a filter of
   the stage-1 data; ``python -m training.validate --recipe RECIPE.yaml`` checks it). ``emotions`` and
   ``subset_fraction`` remain as optional filters of a stage's own data (ours, not the paper's).

A random-initialised preset backbone (``backbone: tiny``) is saved once to ``OUT/base`` so every stage and the
evaluation share it. Resumable: a stage restarts from its last checkpoint (step, optimizer, weights); a finished stage
is skipped. Multi-process: ``torchrun --nproc_per_node N -m training.train_a2llm ...`` (DDP; gloo on CPU, NCCL on
GPU); gradient accumulation; bf16 autocast on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.models.backbone import PRESETS, StepAudio2Backbone
from a2llm_rt.models.checkpoint import from_pretrained_dir, save_pretrained_dir
from a2llm_rt.models.connector import ConnectorConfig, MotionConnector, connector_loss
from a2llm_rt.models.lora import LoraSettings, apply_lora, load_lora, lora_parameters, reset_lora, save_lora
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_directory, atomic_write_json
from a2llm_rt.utils.module_folder import load_module, save_module
from training import ddp
from training.checkpoints import load_optimizer, save_optimizer, warmup_cosine
from training.data.audio_tokenizers import load_audio_tokenizer
from training.data.builders import IGNORE, Batch, BuiltSample, SequenceBuilder, collate
from training.data.format import read_samples

# ---- recipe ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelSection(Config):
    """What to train on."""

    backbone: str = "tiny"
    """Preset name (random weights, seeded; saved to ``OUT/base``) when ``backbone_dir`` is None."""
    backbone_dir: str | None = None
    """Local Step-Audio-2-format directory (weights + tokenizer); wins over ``backbone``."""
    tap_layer: int = -1
    connector: ConnectorConfig = dataclasses.field(default_factory=ConnectorConfig)
    """Connector hyper-parameters (``d_llm`` is set from the backbone)."""
    lora: LoraSettings = dataclasses.field(default_factory=lambda: LoraSettings(module_prefix="model"))
    audio_tokenizer: str = "toy"
    """Answer-audio tokenizer for samples without ``answer_codes``: ``toy`` (tiny test backbones only),
    ``cosyvoice2:PATH/speech_tokenizer_v2_25hz.onnx`` or ``module:attr`` (see ``training.data.audio_tokenizers``)."""
    motion_tokenizer: str | None = None
    """Motion tokenizer checkpoint for samples without ``motion_codes``."""


@dataclasses.dataclass
class StageConfig(Config):
    """One stage of the curriculum."""

    steps: int = 1000
    lr_lora: float = 1.0e-4
    lr_connector: float = 1.0e-5
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ckpt_every: int = 200
    train_data: str | None = None
    """This stage's own FLAME-QA dataset directory (None: the recipe's ``train_data``). Stage 3 must name one: the
    paper's affective set (§5.3, App. A)."""
    emotions: tuple[str, ...] | None = None
    """Train only on samples with these emotion labels (None: all). Ours, not the paper's."""
    subset_fraction: float = 1.0
    """Train on this fraction of the (filtered) samples (a fixed, seeded choice)."""

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be >= 1")
        if not 0 < self.subset_fraction <= 1:
            raise ValueError("subset_fraction must be in (0, 1]")


@dataclasses.dataclass
class A2LLMRecipe(Config):
    """A training recipe (YAML under ``training/recipes``). Relative paths are relative to the working directory."""

    out: str = "runs/a2llm"
    train_data: str = ""
    """FLAME-QA dataset directory."""
    val_data: str | None = None
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    stage1: StageConfig = dataclasses.field(default_factory=StageConfig)
    stage2: StageConfig = dataclasses.field(default_factory=StageConfig)
    """Defaults: stage 1's differential learning rates, as §5.3 says."""
    stage3: StageConfig = dataclasses.field(default_factory=lambda: StageConfig(steps=200))
    """Must name its own ``train_data`` (the affective set)."""
    motion_weight: float = 1.0
    """λ of L_motion."""
    seed: int = 0
    num_threads: int = 0
    """torch threads (0: leave the default)."""

    def validate(self) -> None:
        s3 = self.stage3.train_data
        if s3 and self.train_data and _same_folder(s3, self.train_data):
            raise ValueError(
                "stage3.train_data is the stage-1/2 dataset: stage 3 trains on its own affective dataset (§5.3)"
            )

    def stage(self, n: int) -> StageConfig:
        if n not in (1, 2, 3):
            raise InputError(f"stage must be 1, 2 or 3, got {n}")
        return getattr(self, f"stage{n}")

    def stage_data(self, n: int) -> str:
        """The dataset directory stage ``n`` trains on; InputError when stage 3 names none."""
        sc = self.stage(n)
        if sc.train_data:
            return sc.train_data
        if n == 3:
            raise InputError(
                "stage 3 trains on its own affective dataset (the paper's ~1k emotion-rich FLAME-QA samples, §5.3): "
                "set stage3.train_data in the recipe"
            )
        if not self.train_data:
            raise InputError(f"no train_data for stage {n} in the recipe (or --train-data)")
        return self.train_data


def _same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


# ---- model -----------------------------------------------------------------------------------------------------------


class A2LLM(nn.Module):
    """Backbone (LoRA-adapted in place) + motion connector. ``forward(batch) -> dict of losses``."""

    def __init__(self, backbone: StepAudio2Backbone, peft_model: nn.Module, connector: MotionConnector):
        super().__init__()
        self.backbone = backbone  # LoRA layers live inside it (peft injects in place)
        self.peft = [peft_model]  # not a submodule: same parameters as ``backbone``
        self.connector = connector

    def hidden_and_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        audio = self.backbone.encode_audio(batch.mels) if batch.mels else None
        out = self.backbone(batch.input_ids, audio, attention_mask=batch.attention_mask)
        return out.logits, out.hidden

    def motion_logits(self, batch: Batch, hidden: torch.Tensor) -> torch.Tensor:
        """Teacher-forced connector logits ``[B, T/G, N_q, K]`` at the batch's audio positions (``hidden``
        ``[B, L, d]``); batch padding is masked, so each sample's real tokens get the logits it would get alone."""
        codes = batch.motion_codes
        assert codes is not None
        d = hidden.shape[-1]
        sel = hidden.gather(1, batch.audio_positions[..., None].expand(-1, -1, d))  # [B, T, d]
        real = (codes != IGNORE).all(-1)  # [B, T/G]
        return self.connector(sel, codes.clamp_min(0), real)

    def forward(self, batch: Batch, motion_weight: float = 1.0) -> dict[str, torch.Tensor]:
        logits, hidden = self.hidden_and_logits(batch)
        v = logits.shape[-1]
        l_seq = F.cross_entropy(
            logits[:, :-1].reshape(-1, v).float(), batch.labels[:, 1:].reshape(-1), ignore_index=IGNORE
        )
        out = {"seq": l_seq}
        codes = batch.motion_codes
        if codes is not None and bool((codes != IGNORE).any()):
            m_logits = self.motion_logits(batch, hidden)  # [B, T/G, N_q, K]
            out["motion"] = connector_loss(m_logits.float(), codes, IGNORE)
            with torch.no_grad():
                valid = codes != IGNORE
                out["motion_acc"] = ((m_logits.argmax(-1) == codes) & valid).sum() / valid.sum().clamp_min(1)
        else:  # keep every parameter in the graph (DDP) without changing the loss
            out["motion"] = sum(p.sum() for p in self.connector.parameters()) * 0.0
        out["total"] = l_seq + motion_weight * out["motion"]
        return out


def load_base(recipe: A2LLMRecipe, out: Path, info: ddp.DistInfo | None = None, save: bool = False):
    """(backbone in float32, text tokenizer). A preset backbone is created once (seeded) and kept in ``OUT/base``."""
    from a2llm_rt.models.tokenizer import build_tiny_tokenizer

    mc = recipe.model
    src = Path(mc.backbone_dir) if mc.backbone_dir else out / "base"
    if mc.backbone_dir or (src / "config.json").is_file():
        model, tok = from_pretrained_dir(src, dtype=torch.float32, tap_layer=mc.tap_layer)
        if tok is None:
            tok = build_tiny_tokenizer(model.layout)
        return model, tok
    if mc.backbone not in PRESETS:
        raise InputError(f"unknown backbone preset {mc.backbone!r}; known: {sorted(PRESETS)}")
    torch.manual_seed(recipe.seed)
    cfg = dataclasses.replace(PRESETS[mc.backbone], tap_layer=mc.tap_layer)
    model = StepAudio2Backbone(cfg)
    tok = build_tiny_tokenizer(model.layout)
    if save and (info is None or info.is_main):
        save_pretrained_dir(model, src, tok)
    return model, tok


def build_connector(recipe: A2LLMRecipe, d_llm: int) -> MotionConnector:
    return MotionConnector(dataclasses.replace(recipe.model.connector, d_llm=d_llm))


def make_builder(recipe: A2LLMRecipe, backbone: StepAudio2Backbone, tok) -> SequenceBuilder:
    motion_tok = None
    if recipe.model.motion_tokenizer:
        from training.train_tokenizer import load_tokenizer

        motion_tok = load_tokenizer(recipe.model.motion_tokenizer)
    return SequenceBuilder(
        tok,
        backbone.layout,
        audio_tokenizer=load_audio_tokenizer(recipe.model.audio_tokenizer),
        motion_tokenizer=motion_tok,
        group=recipe.model.connector.group,
        n_mels=backbone.cfg.n_mels,
    )


def load_built(path: str | Path, builder: SequenceBuilder, stage: StageConfig | None = None, seed: int = 0):
    """Built samples of a dataset directory, filtered by the stage's emotions and subset fraction."""
    samples = read_samples(path)
    if stage is not None and stage.emotions is not None:
        samples = [s for s in samples if s.emotion in stage.emotions]
    if stage is not None and stage.subset_fraction < 1:
        rng = np.random.default_rng(seed)
        keep = max(1, round(len(samples) * stage.subset_fraction))
        samples = [samples[i] for i in sorted(rng.permutation(len(samples))[:keep])]
    if not samples:
        raise InputError("no training samples (after the stage's emotion/subset filter)", path)
    return [builder.build(s) for s in samples]


# ---- checkpoints -----------------------------------------------------------------------------------------------------


def save_stage(
    directory: Path, model: A2LLM, opt: torch.optim.Optimizer | None, step: int, done: bool, metrics: dict
) -> None:
    """Write a stage checkpoint into a temporary folder, then swap it in (never half-written)."""
    with atomic_directory(directory) as tmp:
        save_lora(model.peft[0], tmp / "lora")
        save_module(tmp / "connector", model.connector)
        meta = {"step": step, "done": done, "metrics": metrics}
        if opt is not None:
            meta["param_groups"] = save_optimizer(tmp, opt)
        atomic_write_json(tmp / "trainer_state.json", meta)


def read_stage_state(directory: Path) -> dict | None:
    p = directory / "trainer_state.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise InputError(f"malformed trainer state: {e}", p) from None


def load_connector(directory: Path, d_llm: int | None = None) -> MotionConnector:
    """The connector of a stage folder: ``connector/`` (a module folder), or the ``connector.json`` +
    ``connector.safetensors`` that stage folders of earlier versions held."""
    folder = directory / "connector" if (directory / "connector").is_dir() else directory
    conn = load_module(folder, ConnectorConfig, MotionConnector, "connector")
    if d_llm is not None and conn.cfg.d_llm != d_llm:
        raise InputError(f"connector expects d_llm {conn.cfg.d_llm}, backbone has {d_llm}", directory)
    return conn.train()


def load_stage_model(recipe: A2LLMRecipe, out: Path, stage: int, trainable: bool = False) -> tuple[A2LLM, object]:
    """(A2LLM with the LoRA and connector of ``OUT/stage{stage}``, text tokenizer)."""
    backbone, tok = load_base(recipe, out)
    ck = out / f"stage{stage}"
    if read_stage_state(ck) is None:
        raise InputError(f"no stage-{stage} checkpoint", ck)
    peft_model = load_lora(backbone, ck / "lora", is_trainable=trainable)
    return A2LLM(backbone, peft_model, load_connector(ck, backbone.cfg.hidden_size)), tok


# ---- training --------------------------------------------------------------------------------------------------------


def build_stage_model(recipe: A2LLMRecipe, out: Path, stage: int, info: ddp.DistInfo) -> tuple[A2LLM, object]:
    """(the model a stage starts from (before its own resume; see the module docstring), text tokenizer)."""
    backbone, tok = load_base(recipe, out, info)
    lora = dataclasses.replace(recipe.model.lora)
    if stage == 1:
        torch.manual_seed(recipe.seed + 1)
        peft_model = apply_lora(backbone, lora)
        conn = build_connector(recipe, backbone.cfg.hidden_size)
    elif stage == 2:
        prev = out / "stage1"
        if read_stage_state(prev) is None:
            raise InputError("stage 2 needs a finished stage 1", prev)
        peft_model = apply_lora(backbone, lora)  # the LoRA reset: stage 1's adapter is discarded
        reset_lora(peft_model, lora.adapter_name, seed=recipe.seed + 2)
        conn = load_connector(prev, backbone.cfg.hidden_size)
    else:
        prev = out / "stage2"
        if read_stage_state(prev) is None:
            raise InputError("stage 3 needs a finished stage 2", prev)
        peft_model = load_lora(backbone, prev / "lora", is_trainable=True)
        conn = load_connector(prev, backbone.cfg.hidden_size)
    return A2LLM(backbone, peft_model, conn), tok


def train_stage(recipe: A2LLMRecipe, stage: int, device: str = "auto", progress: bool = True) -> dict:
    """Run (or resume) one stage; returns its final metrics."""
    from tqdm import tqdm

    info = ddp.setup(device)
    sc = recipe.stage(stage)
    if recipe.num_threads:
        torch.set_num_threads(recipe.num_threads)
    out = Path(recipe.out)
    ck = out / f"stage{stage}"
    meta = read_stage_state(ck)
    if meta is not None and meta.get("done"):
        if info.is_main:
            print(f"stage {stage} already finished ({ck}); nothing to do", file=sys.stderr)
        ddp.cleanup(info)
        return meta.get("metrics", {})
    if stage == 1 and info.is_main and not recipe.model.backbone_dir:
        load_base(recipe, out, info, save=not (out / "base" / "config.json").is_file())
    ddp.barrier(info)
    model, tok = build_stage_model(recipe, out, stage, info)
    start = 0
    if meta is not None:  # resume this stage
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model.peft[0], load_file(str(ck / "lora" / "adapter_model.safetensors")))
        model.connector.load_state_dict(load_connector(ck).state_dict())
        start = int(meta["step"])
    model.to(info.device).train()
    builder = make_builder(recipe, model.backbone, tok)
    data_dir = recipe.stage_data(stage)
    data = load_built(data_dir, builder, sc, recipe.seed)
    if info.is_main:
        print(f"stage {stage}: {len(data)} samples from {data_dir}", file=sys.stderr)
    lora_p = list(lora_parameters(model.peft[0]).values())
    opt = torch.optim.AdamW(
        [
            {"params": lora_p, "lr": sc.lr_lora, "base_lr": sc.lr_lora},
            {"params": list(model.connector.parameters()), "lr": sc.lr_connector, "base_lr": sc.lr_connector},
        ],
        weight_decay=sc.weight_decay,
    )
    if meta is not None and (ck / "optimizer.safetensors").is_file():
        load_optimizer(ck, opt, meta["param_groups"])
        if info.is_main:
            print(f"resuming stage {stage} at step {start}", file=sys.stderr)
    # linear warm-up, then cosine decay to 10 % of each group's base rate
    sched = warmup_cosine(opt, sc.warmup_steps, sc.steps, 0.1, [sc.lr_lora, sc.lr_connector], start)
    net: nn.Module = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(model)  # the connector always joins the graph (see A2LLM)
    use_amp = info.device.type == "cuda"
    pad_id = builder.layout.pad if builder.layout.pad is not None else 0
    n_q = recipe.model.connector.n_q
    bar = tqdm(total=sc.steps, initial=start, disable=not (progress and info.is_main), desc=f"stage {stage}")
    metrics: dict = {}
    t0 = time.time()
    ema: dict[str, float] = {}
    for step in range(start, sc.steps):
        rng = np.random.default_rng([recipe.seed, stage, step])
        order = rng.permutation(len(data))
        opt.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for micro in range(sc.grad_accum):
            first = (micro * info.world + info.rank) * sc.batch_size
            idx = [order[(first + i) % len(data)] for i in range(sc.batch_size)]
            batch = collate([data[i] for i in idx], pad_id, recipe.model.connector.group, n_q).to(info.device)
            sync = micro == sc.grad_accum - 1 or not info.distributed
            ctx = contextlib.nullcontext() if sync else net.no_sync()
            with ctx, torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                losses = net(batch, recipe.motion_weight)
                (losses["total"] / sc.grad_accum).backward()
            for k, v in losses.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / sc.grad_accum
        if sc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], sc.grad_clip)
        opt.step()
        sched.step()
        for k, v in logs.items():
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        done = step + 1
        if info.is_main:
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items() if k != "total"})
        if done % sc.ckpt_every == 0 or done == sc.steps:
            if done == sc.steps:
                metrics = {f"train_{k}": v for k, v in ema.items()}
                metrics["train_seconds"] = time.time() - t0
                metrics["samples"] = len(data)
                metrics["train_data"] = str(data_dir)
                if recipe.val_data and info.is_main:
                    metrics.update(evaluate_losses(model, recipe, builder, info.device))
            if info.is_main:
                save_stage(ck, model, opt, done, done == sc.steps, metrics)
            ddp.barrier(info)
    bar.close()
    if info.is_main and metrics:
        print(f"stage {stage}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    ddp.cleanup(info)
    return metrics


@torch.no_grad()
def evaluate_losses(model: A2LLM, recipe: A2LLMRecipe, builder: SequenceBuilder, device) -> dict:
    """Teacher-forced losses and motion-token accuracy on ``recipe.val_data``."""
    was = model.training
    model.eval()
    data: list[BuiltSample] = load_built(recipe.val_data, builder)
    pad_id = builder.layout.pad if builder.layout.pad is not None else 0
    tot: dict[str, float] = {}
    bs = 8
    for i in range(0, len(data), bs):
        batch = collate(data[i : i + bs], pad_id, recipe.model.connector.group, recipe.model.connector.n_q)
        for k, v in model(batch.to(device), recipe.motion_weight).items():
            tot[k] = tot.get(k, 0.0) + float(v) * len(data[i : i + bs])
    model.train(was)
    return {f"val_{k}": v / len(data) for k, v in tot.items()}


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train_a2llm", description=__doc__.splitlines()[0])
    ap.add_argument("--stage", type=int, required=True, choices=(1, 2, 3))
    ap.add_argument("--config", type=Path, required=True, help="recipe YAML (training/recipes/*.yaml)")
    ap.add_argument("--out", default=None, help="override the recipe's output folder")
    ap.add_argument("--train-data", default=None, help="override this stage's dataset (stage 3: its affective set)")
    ap.add_argument("--val-data", default=None, help="override the recipe's val_data")
    ap.add_argument("--steps", type=int, default=None, help="override this stage's steps")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    recipe = A2LLMRecipe.from_file(args.config)
    over = {k: v for k, v in (("out", args.out), ("val_data", args.val_data)) if v is not None}
    stage_over: dict = {}
    if args.steps is not None:
        stage_over["steps"] = args.steps
    if args.train_data is not None:  # this stage's dataset (stage 3: its affective set)
        stage_over["train_data"] = args.train_data
    if stage_over:
        over[f"stage{args.stage}"] = dataclasses.replace(recipe.stage(args.stage), **stage_over)
    try:
        recipe = dataclasses.replace(recipe, **over)
    except ValueError as e:
        raise InputError(str(e), args.config) from None
    recipe.stage_data(args.stage)  # InputError when the stage has no dataset
    train_stage(recipe, args.stage, args.device, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
