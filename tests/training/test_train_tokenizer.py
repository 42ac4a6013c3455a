"""Tokenizer training: data windows, a tiny run, resume after SIGKILL, 2-process torchrun (gloo), the eval CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.io import save_clip
from a2llm_rt.face.layouts import ARKIT52_MIRROR, ARKIT_INDEX
from training import eval_tokenizer, train_tokenizer
from training.motion_data import MotionDataConfig, MotionDataset, load_motion

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "recipes" / "tokenizer_tiny.yaml"


def _arkit_values(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 25.0
    freq = rng.uniform(0.3, 2.0, (1, 52))
    phase = rng.uniform(0, 6.28, (1, 52))
    return (0.5 + 0.4 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


@pytest.fixture
def clip_npz(tmp_path) -> Path:
    p = tmp_path / "clip.npz"
    save_clip(MotionClip(_arkit_values(150), 25.0, "arkit52"), p)
    return p


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, **kw)


def test_dataset_windows_mirror_holdout_and_resampling(tmp_path):
    values = _arkit_values(300)
    csv = tmp_path / "take.csv"
    save_clip(MotionClip(values, 30.0, "arkit52"), csv)  # written as livelink61 at 30 fps
    loaded = load_motion(csv, "arkit52", 25.0)
    assert loaded.shape == (250, 52)  # 10 s at 25 fps, rotations dropped
    cfg = MotionDataConfig(window=20, holdout=0.2)
    train = MotionDataset.from_files([csv], "arkit52", 25.0, cfg, "train")
    val = MotionDataset.from_files([csv], "arkit52", 25.0, cfg, "val")
    assert train.num_frames == 200 and val.num_frames == 50
    np.testing.assert_allclose(val.clips[0][0], loaded[200])
    batch = train.sample(64, np.random.default_rng(0))
    assert batch.shape == (64, 20, 52)
    # every window is a crop of the training head, some of them mirrored
    head = train.clips[0]
    kinds = set()
    for w in batch:
        for kind, src in (("plain", head), ("mirror", head[:, list(ARKIT52_MIRROR)])):
            starts = np.where(np.all(np.isclose(src[:, :], w[0]), axis=1))[0]
            if any(np.allclose(src[s : s + 20], w) for s in starts if s + 20 <= len(src)):
                kinds.add(kind)
    assert kinds == {"plain", "mirror"}
    assert ARKIT52_MIRROR[ARKIT_INDEX["eyeBlinkLeft"]] == ARKIT_INDEX["eyeBlinkRight"]
    with pytest.raises(Exception, match="at least 400 frames"):
        MotionDataset.from_files([csv], "arkit52", 25.0, MotionDataConfig(window=400), "train")


def test_tiny_training_run_writes_checkpoints(tmp_path, clip_npz):
    out = tmp_path / "run"
    assert (
        train_tokenizer.main(["--config", str(TINY), "--data", str(clip_npz), "--out", str(out), "--no-progress"]) == 0
    )
    latest = json.loads((out / "latest.json").read_text())
    assert latest["step"] == 30
    ck = out / latest["path"]
    for f in ("model.safetensors", "config.json", "recipe.json", "optimizer.safetensors", "trainer_state.json"):
        assert (ck / f).is_file()
    assert len(list((out / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints default
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["val_mae"] < 1
    model = train_tokenizer.load_tokenizer(out)
    codes = model.encode(torch.as_tensor(_arkit_values(20))[None])
    assert codes.shape == (1, 4, 2)
    # rerunning a finished run does nothing and keeps the result
    assert (
        train_tokenizer.main(["--config", str(TINY), "--data", str(clip_npz), "--out", str(out), "--no-progress"]) == 0
    )
    assert json.loads((out / "latest.json").read_text())["step"] == 30


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(tmp_path, clip_npz):
    args = ["--config", str(TINY), "--data", str(clip_npz), "--no-progress"]
    # reference: one uninterrupted run
    ref = tmp_path / "ref"
    assert train_tokenizer.main([*args, "--out", str(ref)]) == 0
    # killed run: SIGKILL once the first checkpoint is on disk
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "training.train_tokenizer", *args, "--out", str(out), "--step-delay", "0.2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (out / "latest.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((out / "latest.json").read_text())["step"]
    assert 10 <= killed_at < 30
    res = _run(["-m", "training.train_tokenizer", *args, "--out", str(out)], timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"(step {killed_at})" in res.stderr
    assert json.loads((out / "latest.json").read_text())["step"] == 30
    a = load_file(ref / "checkpoints" / "step-00000030" / "model.safetensors")
    b = load_file(out / "checkpoints" / "step-00000030" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, clip_npz):
    out = tmp_path / "ddp"
    res = _run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training.train_tokenizer",
            "--config",
            str(TINY),
            "--data",
            str(clip_npz),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--steps",
            "12",
            "--no-progress",
        ],  # fmt: skip
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    latest = json.loads((out / "latest.json").read_text())
    state = json.loads((out / latest["path"] / "trainer_state.json").read_text())
    assert latest["step"] == 12 and state["world_size"] == 2
    model = train_tokenizer.load_tokenizer(out)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert model.quantizer.vq.layers[0].inited.item() == 1


def test_eval_cli_on_tiny_checkpoint(tmp_path, clip_npz, capsys):
    out = tmp_path / "run"
    assert train_tokenizer.main(["--config", str(TINY), "--data", str(clip_npz), "--out", str(out), "--no-progress",
                                 "--steps", "10"]) == 0  # fmt: skip
    report = tmp_path / "eval.json"
    rc = eval_tokenizer.main(["--ckpt", str(out), "--data", str(clip_npz), "--json", str(report), "--holdout", "0.2"])
    assert rc == 0
    rep = json.loads(report.read_text())
    assert rep["frames"] == 30 and len(rep["per_curve_mae"]) == 52
    assert rep["mean_mae"] == pytest.approx(np.mean(list(rep["per_curve_mae"].values())))
    assert rep["max_error"]["value"] >= max(rep["per_curve_mae"].values())
    assert len(rep["codebook_usage"]) == 2 and all(1 <= p <= 16 for p in rep["codebook_perplexity"])
    assert Path(rep["plot"]).is_file() and "mean MAE" in capsys.readouterr().out

    # bad input: NaN frames, too short, a layout the checkpoint cannot take, not a checkpoint
    nan = _arkit_values(20)
    nan[4, 3] = np.nan
    np.savez(tmp_path / "nan.npz", values=nan, fps=np.float32(25), layout=np.array("arkit52"))
    short = tmp_path / "short.npz"
    save_clip(MotionClip(_arkit_values(3), 25.0, "arkit52"), short)
    flame = tmp_path / "flame.npz"
    save_clip(MotionClip(np.zeros((20, 58), np.float32), 25.0, "flame58"), flame)
    for data, msg in ((tmp_path / "nan.npz", "non-finite"), (short, "too short"), (flame, "flame58")):
        assert eval_tokenizer.main(["--ckpt", str(out), "--data", str(data)]) == 2
        assert msg in capsys.readouterr().err
    assert eval_tokenizer.main(["--ckpt", str(tmp_path), "--data", str(clip_npz)]) == 2
    assert "not a tokenizer checkpoint" in capsys.readouterr().err


def test_eval_vertex_metrics_with_arkit_mesh(tmp_path, clip_npz, arkit_mesh_dir):
    out = tmp_path / "run"
    assert train_tokenizer.main(["--config", str(TINY), "--data", str(clip_npz), "--out", str(out), "--no-progress",
                                 "--steps", "5"]) == 0  # fmt: skip
    rep = eval_tokenizer.evaluate(out, [clip_npz], face_model=arkit_mesh_dir)
    vm = rep["vertex_metrics"]
    assert vm["space"] == "arkit52" and vm["mod_mm"] >= 0 and vm["lve_mm"] > 0
    assert vm["ufd_ref"] > 0 and vm["ufd"] >= 0  # eq. 12 of both, against the mesh's neutral face


def test_train_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "short.npz"
    save_clip(MotionClip(_arkit_values(8), 25.0, "arkit52"), bad)
    assert train_tokenizer.main(["--config", str(TINY), "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "at least 20 frames" in capsys.readouterr().err
    assert train_tokenizer.main(["--config", str(tmp_path / "nope.yaml"), "--data", str(bad), "--out", "x"]) == 2


def test_mix_and_scale_augmentation():
    a = np.zeros((40, 52), np.float32)
    b = np.full((40, 52), 0.8, np.float32)
    ds = MotionDataset([a, b], "arkit52", 10, mirror=False, mix_prob=1.0, scale_range=(0.5, 0.5))
    batch = ds.sample(32, np.random.default_rng(0))
    # every window is constant in time: a mix of the two clips, scaled by 0.5, never outside [0, 0.4]
    assert np.allclose(batch, batch[:, :1])
    assert batch.min() >= 0 and batch.max() <= 0.4 + 1e-6
    assert len(np.unique(batch[:, 0, 0].round(4))) > 10
    with pytest.raises(ValueError):
        MotionDataConfig(scale_range=(1.2, 1.0))


def test_region_mix_composes_regions_from_different_windows():
    from training.motion_data import face_region_groups

    eyes, brows, rest = face_region_groups("arkit52")
    assert ARKIT_INDEX["eyeBlinkLeft"] in eyes and ARKIT_INDEX["browInnerUp"] in brows
    assert ARKIT_INDEX["jawOpen"] in rest and len(eyes) + len(brows) + len(rest) == 52
    clips = [np.full((10, 52), v, np.float32) for v in (0.1, 0.5, 0.9)]
    ds = MotionDataset(clips, "arkit52", 10, mirror=False, region_mix_prob=1.0)
    batch = ds.sample(64, np.random.default_rng(0))
    # each region is constant (taken from one clip), and some windows take regions from different clips
    for idx in (eyes, brows, rest):
        assert np.allclose(batch[:, :, idx], batch[:, :1, idx[:1]])
    per_region = np.stack([batch[:, 0, eyes[0]], batch[:, 0, brows[0]], batch[:, 0, rest[0]]], 1)
    assert (np.ptp(per_region, 1) > 0.1).sum() > 20
    plain = MotionDataset(clips, "arkit52", 10, mirror=False).sample(64, np.random.default_rng(0))
    assert np.ptp(plain[:, 0], 1).max() == 0
    with pytest.raises(InputError, match="arkit52"):
        MotionDataset([np.zeros((10, 58), np.float32)], "flame58", 10, region_mix_prob=0.5)
    with pytest.raises(ValueError):
        MotionDataConfig(region_mix_prob=1.5)


# --- the paper's FLAME58 recipe (App. B) ------------------------------------------------------------------------------

FLAME58 = REPO / "training" / "recipes" / "tokenizer_flame58.yaml"


def test_flame58_recipe_has_the_papers_settings():
    r = train_tokenizer.TokenizerRecipe.from_file(FLAME58)
    m, t, loss = r.model, r.train, r.loss
    assert (m.layout, m.fps, m.group, m.width, m.num_res_blocks, m.latent_dim) == ("flame58", 25.0, 5, 128, 3, 256)
    assert (m.num_quantizers, m.codebook_size, m.dropout, m.commitment) == (6, 256, 0.05, 0.25)
    assert not m.linear_skip and m.encode_beam == 1 and m.quantizer_dropout == 0 and not m.clamp_output
    assert (t.epochs, t.batch_size * 8, t.lr, t.warmup_steps, t.min_lr_ratio) == (6, 512, 1e-4, 0, 1.0)
    assert t.kmeans_init_windows == 0
    assert (loss.param_weight, loss.lips_weight, loss.face_weight, loss.vel_weight, loss.acc_weight) == (
        1.0, 1e5, 1e5, 1e2, 1e2)  # fmt: skip
    assert loss.vertex_terms and loss.vel_acc_space == "vertices" and loss.commit_weight == 1.0  # lambda_vq
    # the A2-LLM recipe points at it
    from training.train_a2llm import A2LLMRecipe

    a2 = A2LLMRecipe.from_file(REPO / "training" / "recipes" / "a2llm_step_audio2_mini.yaml")
    assert a2.model.motion_tokenizer == "runs/tokenizer_flame58" and "runs/tokenizer_flame58" in FLAME58.read_text()


def test_epochs_set_the_step_count():
    tc = train_tokenizer.TrainConfig(epochs=6, batch_size=64)
    # 6 epochs over 100 windows' worth of frames at a global batch of 512 -> ceil(600 / 512) = 2 steps
    assert train_tokenizer.steps_for_epochs(tc, 100 * 50, 50, world=8) == 2
    assert train_tokenizer.steps_for_epochs(tc, 100_000 * 50, 50, world=8) == 1172
    with pytest.raises(ValueError, match="epochs"):
        train_tokenizer.TrainConfig(epochs=0)


def _flame_clips(tmp_path: Path, n: int = 2, frames: int = 60) -> Path:
    d = tmp_path / "flame_clips"
    rng = np.random.default_rng(0)
    t = np.arange(frames)[:, None] / 25.0
    for i in range(n):
        v = np.zeros((frames, 58), np.float32)
        v[:, :10] = 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 2, (1, 10)) * t + rng.uniform(0, 6, (1, 10)))
        v[:, 50] = 0.1 + 0.1 * np.sin(2 * np.pi * 1.3 * t[:, 0])  # jaw
        v[:, 54] = 0.2 * np.sin(2 * np.pi * 0.4 * t[:, 0])  # head yaw: costs L_param only (zero-pose vertex terms)
        save_clip(MotionClip(v, 25.0, "flame58"), d / f"c{i}.npz")
    return d


def test_flame58_recipe_trains_with_a_face_model_and_refuses_without(tmp_path, capsys):
    from tests.face.synthetic_flame import synthetic_flame_npz

    clips = _flame_clips(tmp_path)
    # the paper's L_vel / L_acc are on vertices: without a face model the run stops with a clear message
    rc = train_tokenizer.main(["--config", str(FLAME58), "--data", str(clips), "--out", str(tmp_path / "o"),
                               "--steps", "1", "--no-progress"])  # fmt: skip
    assert rc == 2 and "eq. 10" in capsys.readouterr().err
    # with the (synthetic) FLAME model: a short run with the recipe's settings at a small batch; epochs -> steps
    d = train_tokenizer.TokenizerRecipe.from_file(FLAME58).to_dict()
    d["face_model"] = str(synthetic_flame_npz(tmp_path))  # synthetic FLAME-format model: no licensed data
    d["train"].update(batch_size=2, epochs=0.5, num_threads=1)
    recipe = train_tokenizer.TokenizerRecipe.from_dict(d)
    torch.manual_seed(0)
    out = tmp_path / "run"
    train_tokenizer.train(recipe, [str(clips)], out, device="cpu", progress=False)
    # 0.5 epoch of 120 frames in windows of 50 at batch 2: ceil(0.5 * 2.4 / 2) = 1 step
    assert json.loads((out / "latest.json").read_text())["step"] == 1
    model = train_tokenizer.load_tokenizer(out)
    assert model.cfg.layout == "flame58" and model.encode(torch.zeros(1, 10, 58)).shape == (1, 2, 6)
