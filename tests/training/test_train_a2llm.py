"""The 3-stage curriculum on tiny synthetic data: stages, LoRA reset, subset, checkpoints, resume, DDP, eval."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.models.lora import lora_parameters
from tests.process_utils import run_group
from training import ddp
from training.data.format import ShardWriter
from training.eval_a2llm import evaluate_free, evaluate_teacher_forced
from training.synthetic_qa import JAW, jaw_from_codes, make_samples
from training.train_a2llm import A2LLMRecipe, build_stage_model, load_connector, main, read_stage_state, train_stage

REPO = Path(__file__).resolve().parents[2]


def _codes_of(motion: np.ndarray) -> np.ndarray:
    """Stand-in motion tokenizer: level 0 = mean jaw of the group in 16 steps, level 1 = smiling."""
    t = len(motion) // 5
    jaw = motion[: t * 5, JAW].reshape(t, 5).mean(1)
    smile = motion[: t * 5, 23].reshape(t, 5).mean(1) > 0.25
    return np.stack([np.clip(np.round(jaw * 16), 0, 15), smile.astype(np.float32)], 1).astype(np.int64)


def _dataset(path: Path, n: int, seed: int, happy_fraction: float = 0.25, prefix: str = "s") -> Path:
    samples = make_samples(n, seed, prefix, min_frames=20, max_frames=30, happy_fraction=happy_fraction)
    with ShardWriter(path) as w:
        for s in samples:
            s.motion_codes = _codes_of(s.motion)
            w.write(s)
    return path


def _tiny_tokenizer(tmp: Path) -> str:
    from safetensors.torch import save_file

    from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig

    torch.manual_seed(0)
    cfg = MotionTokenizerConfig(layout="arkit52", width=8, num_res_blocks=1, latent_dim=4, num_quantizers=2,
                                codebook_size=16, kmeans_init=False)  # fmt: skip
    d = tmp / "mtok"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in MotionTokenizer(cfg).state_dict().items()}, str(d / "model.safetensors"))
    cfg.to_file(d / "config.json")
    return str(d)


def _recipe(tmp: Path, steps: int = 2, **kw) -> A2LLMRecipe:
    stage = {"steps": steps, "batch_size": 4, "warmup_steps": 1, "ckpt_every": 100, "lr_lora": 3e-3,
             "lr_connector": 3e-3}  # fmt: skip
    d = {
        "out": str(tmp / "run"),
        "train_data": str(_dataset(tmp / "train", 12, 0)) if not (tmp / "train").exists() else str(tmp / "train"),
        "num_threads": 1,
        "model": {
            "connector": {
                "d_llm": 64,
                "d_model": 32,
                "n_layers": 1,
                "n_heads": 2,
                "dropout": 0.0,
                "window": 10,
                "n_q": 2,
                "codebook_size": 16,
            },  # fmt: skip
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "module_prefix": "model"},
        },
        "stage1": stage,
        "stage2": stage,
        "stage3": {
            **stage,
            "train_data": str(tmp / "affective")
            if (tmp / "affective").exists()
            else str(_dataset(tmp / "affective", 5, 7, happy_fraction=1.0, prefix="af")),
        },  # fmt: skip
        **kw,
    }
    return A2LLMRecipe.from_dict(d)


def test_three_stages_reset_and_subset(tmp_path):
    torch.set_num_threads(1)
    r = _recipe(tmp_path)
    out = Path(r.out)
    m1 = train_stage(r, 1, "cpu", progress=False)
    assert read_stage_state(out / "stage1")["done"] and (out / "base" / "config.json").is_file()
    assert (out / "stage1" / "lora" / "adapter_model.safetensors").is_file() and m1["samples"] == 12
    # stage 2 starts from stage 1's connector and a fresh LoRA (B = 0: the model equals its base again)
    m2, _ = build_stage_model(r, out, 2, ddp.DistInfo())
    c1 = load_connector(out / "stage1")
    for (k, a), b in zip(m2.connector.state_dict().items(), c1.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    lora_b = [p for n, p in lora_parameters(m2.peft[0]).items() if "lora_B" in n]
    assert lora_b and all(float(p.detach().abs().max()) == 0 for p in lora_b)
    from safetensors.torch import load_file

    s1 = load_file(str(out / "stage1" / "lora" / "adapter_model.safetensors"))
    assert any(float(v.abs().max()) > 0 for k, v in s1.items() if "lora_B" in k)
    train_stage(r, 2, "cpu", progress=False)
    m3 = train_stage(r, 3, "cpu", progress=False)
    # stage 3 trained on its own affective dataset, not on (a subset of) the stage-1 data
    assert m3["samples"] == 5 and m3["train_data"] == r.stage3.train_data != r.train_data
    # stage 3 continued from stage 2's adapter
    s2 = load_file(str(out / "stage2" / "lora" / "adapter_model.safetensors"))
    s3 = load_file(str(out / "stage3" / "lora" / "adapter_model.safetensors"))
    assert s2.keys() == s3.keys() and any(not torch.equal(s2[k], s3[k]) for k in s2)
    # teacher-forced diagnostic: free-running connector + a (random, tiny) motion tokenizer + proxy-mesh metrics
    r_eval = dataclasses.replace(r, model=dataclasses.replace(r.model, motion_tokenizer=_tiny_tokenizer(tmp_path)))
    res = evaluate_teacher_forced(r_eval, 3, r.train_data, limit=3)
    assert res["samples"] == 3 and 0 <= res["token_acc_free_running"] <= 1 and res["chance_uniform"] == 1 / 16
    assert np.isfinite(res["tokenizer_ceiling"]["temporal_corr"]) and res["mesh"] == "proxy"
    # a finished stage is not trained again
    before = (out / "stage3" / "trainer_state.json").read_text()
    train_stage(r, 3, "cpu", progress=False)
    assert (out / "stage3" / "trainer_state.json").read_text() == before


def test_stage_order_and_resume(tmp_path, capsys):
    r = _recipe(tmp_path)
    cfg = tmp_path / "r.yaml"
    r.to_file(cfg)
    assert main(["--stage", "2", "--config", str(cfg), "--no-progress"]) == 2
    assert "needs a finished stage 1" in capsys.readouterr().err
    assert main(["--stage", "1", "--config", str(cfg), "--no-progress"]) == 0
    st = Path(r.out) / "stage1" / "trainer_state.json"
    meta = json.loads(st.read_text())
    assert meta["step"] == 2 and (st.parent / "optimizer.safetensors").is_file()
    meta["done"] = False  # as if it had stopped at a periodic checkpoint
    st.write_text(json.dumps(meta))
    assert main(["--stage", "1", "--config", str(cfg), "--no-progress", "--steps", "4"]) == 0
    assert "resuming stage 1 at step 2" in capsys.readouterr().err
    assert json.loads(st.read_text())["step"] == 4


@pytest.mark.slow
def test_learns_motion_tokens_with_grad_accum(tmp_path):
    torch.set_num_threads(1)
    base = _recipe(tmp_path)
    stage = dataclasses.replace(base.stage1, steps=40, grad_accum=2, lr_lora=5e-3, lr_connector=5e-3, warmup_steps=3)
    r = dataclasses.replace(base, stage1=stage, val_data=base.train_data)
    m = train_stage(r, 1, "cpu", progress=False)
    chance = 1 / 16
    assert m["val_motion_acc"] > 4 * chance and m["val_motion"] < 2 * np.log(16) * 0.6


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    r = _recipe(tmp_path)
    cfg = tmp_path / "r.yaml"
    r.to_file(cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train_a2llm", "--stage", "1", "--config", str(cfg), "--device", "cpu",
           "--no-progress"]  # fmt: skip
    p = run_group(cmd, cwd=REPO, env=env, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    meta = read_stage_state(Path(r.out) / "stage1")
    assert meta["done"] and meta["step"] == 2


def test_jaw_relation_is_lagged():
    codes = np.array([0] * 10 + [63] * 10)
    jaw = jaw_from_codes(codes, lag=2)
    assert jaw[11] == 0 and jaw[12] > 0.5 and jaw[-1] > 0.89


def test_stage3_needs_its_own_affective_dataset(tmp_path, capsys):
    r = _recipe(tmp_path)
    no_aff = dataclasses.replace(r, stage3=dataclasses.replace(r.stage3, train_data=None))
    with pytest.raises(InputError, match="own affective dataset"):
        no_aff.stage_data(3)
    assert no_aff.stage_data(1) == r.train_data == no_aff.stage_data(2)
    with pytest.raises(ValueError, match="own affective dataset"):
        dataclasses.replace(r, stage3=dataclasses.replace(r.stage3, train_data=r.train_data + "/"))
    cfg = tmp_path / "r.yaml"
    no_aff.to_file(cfg)
    assert main(["--stage", "3", "--config", str(cfg), "--no-progress"]) == 2
    assert "stage3.train_data" in capsys.readouterr().err


def test_stage2_keeps_the_differential_learning_rates(tmp_path):
    from training.train_a2llm import StageConfig

    assert (StageConfig().lr_lora, StageConfig().lr_connector) == (1e-4, 1e-5)
    default = A2LLMRecipe()
    assert (default.stage2.lr_lora, default.stage2.lr_connector) == (1e-4, 1e-5)
    paper = A2LLMRecipe.from_file(REPO / "training" / "recipes" / "a2llm_step_audio2_mini.yaml")
    for sc in (paper.stage1, paper.stage2):
        assert (sc.lr_lora, sc.lr_connector) == (1e-4, 1e-5)
    assert paper.stage3.train_data and paper.stage3.train_data != paper.train_data and paper.stage3.emotions is None
    # a trained stage 2 ran with the recipe's two rates after the LoRA reset
    torch.set_num_threads(1)
    r = _recipe(tmp_path)
    stage = dataclasses.replace(r.stage2, lr_lora=2e-3, lr_connector=2e-4)
    r = dataclasses.replace(r, stage2=stage)
    train_stage(r, 1, "cpu", progress=False)
    train_stage(r, 2, "cpu", progress=False)
    groups = read_stage_state(Path(r.out) / "stage2")["param_groups"]
    assert [g["base_lr"] for g in groups] == [2e-3, 2e-4]


def test_padded_batch_motion_logits_equal_each_sample_alone(tmp_path):
    """Through the whole model: a sample's motion logits do not depend on the other samples of its batch."""
    from training.data.builders import collate
    from training.train_a2llm import load_built, make_builder

    torch.set_num_threads(1)
    r = _recipe(tmp_path)
    r = dataclasses.replace(r, model=dataclasses.replace(r.model, connector=dataclasses.replace(
        r.model.connector, window=20)))  # fmt: skip
    model, tok = build_stage_model(r, Path(r.out), 1, ddp.DistInfo())
    model.eval()
    built = load_built(r.train_data, make_builder(r, model.backbone, tok))[:4]
    lengths = [b.motion_codes.shape[0] for b in built]
    assert len(set(lengths)) > 1  # different lengths: the batch is padded
    with torch.no_grad():
        batch = collate(built, 0, 5, 2)
        _, hidden = model.hidden_and_logits(batch)
        together = model.motion_logits(batch, hidden)
        for i, b in enumerate(built):
            one = collate([b], 0, 5, 2)
            alone = model.motion_logits(one, model.hidden_and_logits(one)[1])
            n = lengths[i]
            torch.testing.assert_close(together[i, :n], alone[0, :n], rtol=1e-4, atol=1e-4)


def _spoken_questions(path: Path, n: int = 2) -> Path:
    """Held-out AQAA samples (a spoken question each), for the free-generation protocol."""
    rng = np.random.default_rng(5)
    samples = make_samples(n, 11, "q", min_frames=20, max_frames=30)
    with ShardWriter(path) as w:
        for s in samples:
            s.task = "aqaa"
            s.question_audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
            s.motion_codes = _codes_of(s.motion)
            w.write(s)
    return path


def test_free_generation_protocol_with_a_precomputed_pseudo_oracle(tmp_path):
    """§6.3: the model answers held-out questions freely; its face is scored reference-free (UFD) and against a
    pseudo-oracle computed from its own speech (here: files we write, as a user would from DiffPoseTalk)."""
    from a2llm_rt.engine.engine import EngineConfig
    from a2llm_rt.face.clip import MotionClip
    from a2llm_rt.face.io import load_clip, save_clip
    from a2llm_rt.face.motion_metrics import reference_free_ufd
    from training.eval_a2llm import main as eval_main
    from training.eval_a2llm import metric_mesh_for
    from training.pseudo_oracle import PrecomputedOracle, load_oracle

    torch.set_num_threads(1)
    r = _recipe(tmp_path)
    r = dataclasses.replace(r, model=dataclasses.replace(r.model, motion_tokenizer=_tiny_tokenizer(tmp_path)))
    train_stage(r, 1, "cpu", progress=False)
    held_out = _spoken_questions(tmp_path / "heldout")
    ecfg = EngineConfig(max_sessions=1, min_seconds=1.2, max_seconds=1.6)  # a random model must still say something
    gen = tmp_path / "gen"
    res = evaluate_free(r, 1, str(held_out), gen_dir=gen, engine_config=ecfg)
    assert res["samples"] == 2 and res["pseudo_oracle"] is None and "vs_pseudo_oracle" not in res
    keys = sorted(p.stem for p in gen.glob("*.wav"))
    assert keys == ["q00000", "q00001"] and all((gen / f"{k}.npz").is_file() for k in keys)
    # UFD is the model's own face, no reference: recompute it from the saved motion
    mesh = metric_mesh_for("arkit52")
    clip = load_clip(gen / "q00000.npz")
    ufd0 = reference_free_ufd(mesh.vertices(clip), mesh.regions, mesh.template)
    assert res["per_sample_ufd"][0]["ufd"] == pytest.approx(ufd0)

    # the user's audio-driven model ran on the wavs; as a stand-in, its output is the model's own face (one answer)
    # and that face with the jaw 0.2 more open (the other: 6 mm wider on the proxy mesh, whose lip drops 30 mm/jaw)
    oracle_dir = tmp_path / "oracle"
    save_clip(clip, oracle_dir / "q00000.npz")
    c1 = load_clip(gen / "q00001.npz")
    v = c1.values.copy()
    v[:, JAW] += 0.2
    save_clip(MotionClip(v, c1.fps, c1.layout), oracle_dir / "q00001.npz")
    oracle = PrecomputedOracle(oracle_dir, "stand-in")
    res2 = evaluate_free(r, 1, str(held_out), oracle=oracle, engine_config=ecfg)
    per = {row["key"]: row for row in res2["vs_pseudo_oracle"]["per_sample"]}
    assert per["q00000"]["mod_mm"] == 0.0 and per["q00000"]["lve_mm"] == 0.0
    assert per["q00001"]["mod_mm"] == pytest.approx(6.0, rel=1e-4)  # eq. 11 against the oracle, not the recording
    assert res2["pseudo_oracle"] == "stand-in" and res2["vs_pseudo_oracle"]["paper_metrics"]["mod_mm"]["n"] == 2
    assert res2["ufd_reference_free"] == res["ufd_reference_free"]  # reference-free: the oracle changes nothing

    # an oracle computed from other audio (wrong length) is refused; a missing file is noted
    save_clip(MotionClip(np.repeat(v, 3, 0), c1.fps, c1.layout), oracle_dir / "q00001.npz")
    with pytest.raises(InputError, match="not computed from this answer"):
        evaluate_free(r, 1, str(held_out), oracle=oracle, engine_config=ecfg)
    (oracle_dir / "q00001.npz").unlink()
    res3 = evaluate_free(r, 1, str(held_out), oracle=load_oracle(f"precomputed:{oracle_dir}"), engine_config=ecfg)
    assert res3["vs_pseudo_oracle"]["samples"] == 1 and any("no motion for 1" in n for n in res3["notes"])
    with pytest.raises(InputError):
        load_oracle("no_such_module_xyz:Oracle")
    with pytest.raises(InputError, match="cannot name a file"):
        oracle.motion("../etc", np.zeros(10, np.float32), 24000)

    # the CLI: both protocols, named apart in the JSON
    cfg = tmp_path / "r.yaml"
    r.to_file(cfg)
    out = tmp_path / "eval.json"
    rc = eval_main(["--config", str(cfg), "--stage", "1", "--data", str(held_out), "--protocol", "both",
                    "--json", str(out), "--limit", "1", "--max-seconds", "1.6", "--min-seconds", "1.2"])  # fmt: skip
    assert rc == 0
    d = json.loads(out.read_text())
    assert set(d) == {"free_generation", "teacher_forced_diagnostic"}
    assert d["teacher_forced_diagnostic"]["protocol"].startswith("teacher-forced diagnostic")
