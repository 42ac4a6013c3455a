"""training.checkpoints: the warm-up + cosine schedule through torch's LambdaLR (also when resumed mid-run), the
optimizer state round trip, checkpoint rotation."""

from __future__ import annotations

import json

import pytest
import torch

from training.checkpoints import load_optimizer, rotate, save_optimizer, warmup_cosine


def two_group_optimizer(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW([{"params": net[0].parameters(), "lr": 1.0}, {"params": net[1].parameters(), "lr": 1.0}])
    return net, opt


def train_steps(net, opt, sched, steps: int) -> list[list[float]]:
    """Run ``steps`` optimizer steps; the rates each step ran with."""
    lrs = []
    for i in range(steps):
        lrs.append([g["lr"] for g in opt.param_groups])
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        sched.step()
    return lrs


def test_warmup_then_cosine_to_the_floor():
    net, opt = two_group_optimizer()
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=14, min_ratio=0.1, base_lrs=[2e-3, 1e-4])
    lrs = train_steps(net, opt, sched, 16)
    first = [lr[0] for lr in lrs]
    assert first[:4] == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3])  # (step + 1) / warm-up
    assert first[4] == pytest.approx(2e-3)  # cosine starts at the base rate
    assert first[9] == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5))  # half way: the mean of base and floor
    assert first[14:] == pytest.approx([2e-4, 2e-4])  # held at the floor after the last step
    assert all(a >= b for a, b in zip(first[4:], first[5:], strict=False))
    assert [lr[1] / lr[0] for lr in lrs] == pytest.approx([0.05] * 16)  # each group scales its own base


def test_resumed_schedule_continues_the_same_rates():
    """A run resumed at step 6 (optimizer restored, decayed rates in its groups) continues the same rates."""
    net, opt = two_group_optimizer()
    whole = train_steps(net, opt, warmup_cosine(opt, 3, 12, 0.2, [1e-3, 5e-4]), 12)
    net, opt = two_group_optimizer()
    head = train_steps(net, opt, warmup_cosine(opt, 3, 12, 0.2, [1e-3, 5e-4]), 6)
    net2, opt2 = two_group_optimizer(seed=1)
    net2.load_state_dict(net.state_dict())
    opt2.load_state_dict(opt.state_dict())  # its groups' "lr" are step 5's decayed rates
    tail = train_steps(net2, opt2, warmup_cosine(opt2, 3, 12, 0.2, [1e-3, 5e-4], start_step=6), 6)
    assert sum(head + tail, []) == pytest.approx(sum(whole, []), rel=1e-12)
    with pytest.raises(ValueError, match="param groups"):
        warmup_cosine(opt2, 3, 12, 0.2, [1e-3])


def test_optimizer_state_round_trip(tmp_path):
    net, opt = two_group_optimizer()
    sched = warmup_cosine(opt, 2, 10, 0.1, [1e-2, 1e-2])
    train_steps(net, opt, sched, 3)
    groups = save_optimizer(tmp_path, opt)
    json.dumps(groups)  # goes into trainer_state.json
    net2, opt2 = two_group_optimizer(seed=1)
    net2.load_state_dict(net.state_dict())
    load_optimizer(tmp_path, opt2, json.loads(json.dumps(groups)))
    train_steps(net, opt, sched, 2)
    train_steps(net2, opt2, warmup_cosine(opt2, 2, 10, 0.1, [1e-2, 1e-2], start_step=3), 2)
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)  # Adam moments restored: the same updates
    net3, opt3 = two_group_optimizer(seed=1)
    net3.load_state_dict(net2.state_dict())
    (tmp_path / "optimizer.safetensors").write_bytes(b"garbage")
    from a2llm_rt.errors import InputError

    with pytest.raises(InputError, match="optimizer state"):
        load_optimizer(tmp_path, opt3, groups)


def test_rotation_keeps_the_last_steps(tmp_path):
    for step in (5, 40, 100, 1000):
        (tmp_path / f"step-{step:08d}").mkdir()
    (tmp_path / "step-notes.txt").write_text("a file, not a checkpoint")
    gone = rotate(tmp_path, keep=2)
    assert [p.name for p in gone] == ["step-00000005", "step-00000040"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000100", "step-00001000", "step-notes.txt"]
    assert rotate(tmp_path, keep=2) == []
    with pytest.raises(ValueError):
        rotate(tmp_path, keep=0)
