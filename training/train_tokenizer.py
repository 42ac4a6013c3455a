"""Train the motion tokenizer (RVQ-VAE) on face-motion clips.

    python -m training.train_tokenizer --config training/recipes/tokenizer_arkit_rom.yaml \
        --data ../shared/data/arkit_capture/livelinkface_rom_3.csv --out runs/tok_arkit
    torchrun --nproc_per_node 2 -m training.train_tokenizer --config ... --data ... --out ...

AdamW, linear warm-up then cosine decay, a checkpoint every ``ckpt_every`` steps (``OUT/checkpoints/step-N/``:
``model.safetensors``, ``config.json`` (the tokenizer config), ``recipe.json``, ``optimizer.safetensors``,
``trainer_state.json``; written into a temporary folder and renamed, then ``OUT/latest.json`` is replaced
atomically). Rerunning the same command resumes from the latest checkpoint. Every step's randomness (batch,
dropout, k-means, code restarts) is seeded from (seed, step, rank), so a resumed run continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.models.motion_losses import MotionLoss, MotionLossConfig, build_face_model
from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig
from a2llm_rt.utils import module_folder
from a2llm_rt.utils.cli import cli_main
from a2llm_rt.utils.fileio import atomic_directory, atomic_write_json
from a2llm_rt.utils.module_folder import load_module, save_module, write_latest
from training import ddp
from training.checkpoints import load_optimizer, rotate, save_optimizer, warmup_cosine
from training.motion_data import MotionDataConfig, MotionDataset


@dataclass
class TrainConfig(Config):
    """Optimisation schedule."""

    steps: int = 3000
    """Total optimizer steps (ignored when ``epochs`` is set)."""
    epochs: float | None = None
    """Train this many epochs instead of ``steps`` (App. B: 6). One epoch = as many windows as the training data holds
    frames / ``data.window`` (random windows: each frame once on average), at ``batch_size`` x processes per step."""
    batch_size: int = 16
    """Windows per step (per process under DDP)."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at ``lr * min_lr_ratio``."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0: off)."""
    ckpt_every: int = 500
    """Checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep."""
    eval_every: int = 500
    """Validation MAE every this many steps (0: only at the end)."""
    seed: int = 0
    """Seed of all randomness."""
    pca_init: bool = True
    """With ``model.linear_skip``: start from the PCA autoencoder of the training windows (see
    :meth:`MotionTokenizer.init_linear_skip_pca`)."""
    kmeans_init_windows: int = 0
    """> 0: initialise the codebooks by residual k-means on the latents of this many (augmented) training windows
    before training, instead of k-means on the first batch (0: the paper's first-batch init)."""
    num_threads: int = 2
    """torch CPU threads per process."""

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.ckpt_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("steps, batch_size, ckpt_every and keep_checkpoints must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")


@dataclass
class TokenizerRecipe(Config):
    """A training recipe (YAML): model, loss, data and schedule."""

    model: MotionTokenizerConfig = field(default_factory=MotionTokenizerConfig)
    loss: MotionLossConfig = field(default_factory=MotionLossConfig)
    data: MotionDataConfig = field(default_factory=MotionDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    face_model: str | None = None
    """ARKit mesh folder (arkit52) or converted FLAME .npz (flame58) for the vertex terms; relative paths are taken
    from the recipe's folder. None: vertex terms off."""

    def validate(self) -> None:
        if self.data.window % self.model.group:
            raise ValueError(f"data.window {self.data.window} must be a multiple of model.group {self.model.group}")


def steps_for_epochs(tc: TrainConfig, num_frames: int, window: int, world: int = 1) -> int:
    """Optimizer steps of ``tc.epochs`` epochs over ``num_frames`` training frames (see :attr:`TrainConfig.epochs`)."""
    assert tc.epochs is not None
    windows = num_frames / window
    return max(1, math.ceil(tc.epochs * windows / (tc.batch_size * world)))


# --- checkpoints --------------------------------------------------------------------------------------------------
def save_checkpoint(
    out: Path, step: int, model: MotionTokenizer, opt: torch.optim.Optimizer, recipe: TokenizerRecipe, extra: dict
) -> Path:
    """Write ``out/checkpoints/step-N`` (temp folder + rename), point ``out/latest.json`` at it and keep the last
    ``keep_checkpoints``."""
    ck_root = out / "checkpoints"
    final = ck_root / f"step-{step:08d}"
    with atomic_directory(final) as tmp:
        save_module(tmp, model)
        recipe.to_file(tmp / "recipe.json")
        groups = save_optimizer(tmp, opt)
        atomic_write_json(tmp / "trainer_state.json", {"step": step, "param_groups": groups, **extra})
    write_latest(out, final, step)
    rotate(ck_root, recipe.train.keep_checkpoints)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder: ``path`` when it holds ``model.safetensors``, else the one its ``latest.json`` names."""
    return module_folder.resolve_checkpoint(path, "tokenizer checkpoint")


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> MotionTokenizer:
    """The tokenizer of a checkpoint folder (or a training output folder), in eval mode."""
    ck = resolve_checkpoint(path)
    return load_module(ck, MotionTokenizerConfig, MotionTokenizer, "motion tokenizer", device)


# --- training -----------------------------------------------------------------------------------------------------
@torch.no_grad()
def validate_mae(model: MotionTokenizer, windows: np.ndarray, device: torch.device) -> tuple[float, np.ndarray]:
    """Mean absolute error over validation windows ``[N, T, D]``: (mean, per-curve ``[D]``)."""
    was = model.training
    model.eval()
    x = torch.as_tensor(windows, device=device)
    err = torch.zeros(x.shape[-1], device=device)
    for i in range(0, len(x), 64):
        b = x[i : i + 64]
        err += (model.decode(model.encode(b)) - b).abs().sum((0, 1))
    model.train(was)
    per = (err / (x.shape[0] * x.shape[1])).cpu().numpy()
    return float(per.mean()), per


def train(
    recipe: TokenizerRecipe,
    data: list[str],
    out: Path,
    *,
    device: str = "auto",
    recipe_dir: Path | None = None,
    step_delay: float = 0.0,
    progress: bool = True,
) -> dict:
    """Run (or resume) training; returns the final metrics (also in ``out/metrics.json``)."""
    info = ddp.setup(device)
    tc = recipe.train
    torch.set_num_threads(tc.num_threads)
    mc = recipe.model
    train_ds = MotionDataset.from_files(data, mc.layout, mc.fps, recipe.data, "train")
    if tc.epochs is not None:
        tc = dataclasses.replace(tc, steps=steps_for_epochs(tc, train_ds.num_frames, recipe.data.window, info.world))
        if info.is_main:
            print(f"{tc.epochs:g} epochs of {train_ds.num_frames} frames = {tc.steps} steps of "
                  f"{tc.batch_size} x {info.world} windows", file=sys.stderr)  # fmt: skip
    val_windows = None
    if recipe.data.holdout > 0:
        try:
            val_windows = MotionDataset.from_files(data, mc.layout, mc.fps, recipe.data, "val").windows()
        except InputError:
            val_windows = None  # held-out tails shorter than one window
    torch.manual_seed(tc.seed)
    model = MotionTokenizer(mc)
    model.set_normalization(*map(torch.as_tensor, train_ds.stats()))
    if mc.linear_skip and tc.pca_init:
        windows = train_ds.sample(max(256, 4096 // (recipe.data.window // mc.group)), np.random.default_rng(tc.seed))
        model.init_linear_skip_pca(torch.as_tensor(windows))
    if tc.kmeans_init_windows > 0:
        windows = train_ds.sample(tc.kmeans_init_windows, np.random.default_rng([tc.seed, 1]))
        model.init_codebooks(torch.as_tensor(windows))
    model.to(info.device).train()
    vertex_fn = regions = None
    if recipe.face_model and (recipe.loss.vertex_terms or recipe.loss.vel_acc_space == "vertices"):
        fm = Path(recipe.face_model)
        if not fm.is_absolute() and recipe_dir is not None:
            fm = (recipe_dir / fm).resolve()
        vertex_fn, regions = build_face_model(mc.layout, fm)
    try:
        loss_fn = MotionLoss(recipe.loss, vertex_fn, regions).to(info.device)
    except ValueError as e:  # e.g. the paper's vertex-space L_vel / L_acc without a face model
        raise InputError(str(e)) from None
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start = 0
    if (out / "latest.json").is_file():
        ck = resolve_checkpoint(out)
        model.load_state_dict(load_tokenizer(ck).state_dict())
        meta = json.loads((ck / "trainer_state.json").read_text())
        load_optimizer(ck, opt, meta["param_groups"])
        start = int(meta["step"])
        if info.is_main:
            print(f"resuming from {ck} (step {start})", file=sys.stderr)
    elif info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    sched = warmup_cosine(opt, tc.warmup_steps, tc.steps, tc.min_lr_ratio, [tc.lr] * len(opt.param_groups), start)
    net: torch.nn.Module = model
    if info.distributed:
        # Codebook buffers are kept identical by the quantizer's own all-reduce/broadcast, so no buffer broadcast.
        net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    bar = tqdm(
        total=tc.steps, initial=start, disable=not (progress and info.is_main), desc="tokenizer", dynamic_ncols=True
    )
    metrics: dict = {}
    t0 = time.time()
    for step in range(start, tc.steps):
        torch.manual_seed(tc.seed * 1_000_003 + step * 101 + info.rank)
        rng = np.random.default_rng([tc.seed, step, info.rank])
        batch = torch.as_tensor(train_ds.sample(tc.batch_size, rng), device=info.device)
        res = net(batch)
        terms = loss_fn(res.recon, batch, res.quant.commit_loss)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        sched.step()
        done = step + 1
        if info.is_main:
            bar.update(1)
            bar.set_postfix(
                loss=f"{terms['total'].item():.4f}",
                mae=f"{(res.recon - batch).abs().mean().item():.4f}",
                usage=f"{res.quant.usage.mean().item():.2f}",
                ppl=f"{res.quant.perplexity.mean().item():.0f}",
            )
        periodic_eval = tc.eval_every and done % tc.eval_every == 0 and done < tc.steps
        if val_windows is not None and periodic_eval and info.is_main:
            metrics["val_mae"], _ = validate_mae(model, val_windows, info.device)
            bar.write(f"step {done}: val MAE {metrics['val_mae']:.4f}")
            sys.stdout.flush()
        if done % tc.ckpt_every == 0 or done == tc.steps:
            if done == tc.steps:
                metrics.update(_final_metrics(model, val_windows, info.device, terms, res))
                metrics["train_seconds"] = time.time() - t0
            if info.is_main:
                save_checkpoint(out, done, model, opt, recipe, {"metrics": metrics, "world_size": info.world})
            ddp.barrier(info)
        if step_delay:
            time.sleep(step_delay)
    bar.close()
    if start >= tc.steps and info.is_main:
        print(f"already trained to step {start}", file=sys.stderr)
    if info.is_main and metrics:
        atomic_write_json(out / "metrics.json", metrics)
        if "val_mae" in metrics:
            print(f"validation (held-out tail) MAE {metrics['val_mae']:.4f}, worst curve {metrics['val_worst_curve']}"
                  f" {metrics['val_worst_mae']:.4f}")  # fmt: skip
    ddp.cleanup(info)
    return metrics


def _final_metrics(model, val_windows, device, terms, res) -> dict:
    from a2llm_rt.face.layouts import get_layout

    m = {"train_loss": float(terms["total"].item()), "train_usage": res.quant.usage.tolist()}
    if val_windows is not None:
        mae, per = validate_mae(model, val_windows, device)
        names = get_layout(model.cfg.layout).names
        worst = int(per.argmax())
        m.update(val_mae=mae, val_worst_curve=names[worst], val_worst_mae=float(per[worst]))
    return m


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train_tokenizer", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="recipe YAML (training/recipes/*.yaml)")
    p.add_argument("--data", nargs="+", required=True, help="clip files (.npz, .csv, .json) or folders of them")
    p.add_argument("--out", required=True, help="output folder (checkpoints; rerun to resume)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="override the recipe's train.steps (and epochs)")
    p.add_argument("--threads", type=int, default=None, help="override the recipe's train.num_threads")
    p.add_argument("--face-model", default=None, help="ARKit mesh folder / FLAME .npz for the vertex loss terms")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # tests of kill/resume
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recipe = TokenizerRecipe.from_file(args.config)
    if args.steps is not None or args.threads is not None or args.face_model is not None:
        d = recipe.to_dict()
        if args.face_model is not None:
            d["face_model"] = str(Path(args.face_model).resolve())
        if args.steps is not None:
            d["train"]["steps"] = args.steps
            d["train"]["epochs"] = None  # an explicit step count wins over the recipe's epochs
        if args.threads is not None:
            d["train"]["num_threads"] = args.threads
        recipe = TokenizerRecipe.from_dict(d, source=args.config)
    train(
        recipe,
        args.data,
        Path(args.out),
        device=args.device,
        recipe_dir=Path(args.config).resolve().parent,
        step_delay=args.step_delay,
        progress=not args.no_progress,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
