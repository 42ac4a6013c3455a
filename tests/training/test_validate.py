"""``python -m training.validate``: reports every bad sample and goes on."""

from __future__ import annotations

import json

import numpy as np

from tests.training.flame_qa_fixtures import make_sample
from training.data.format import ShardWriter, write_shard
from training.validate import main, validate_dataset


def _dataset(tmp_path):
    nan = make_sample("nan_motion", seed=1)
    nan.motion[3, 7] = np.nan
    short = make_sample("short_motion", seed=2)
    short.motion = short.motion[:10]  # 20 frames of audio
    missing = make_sample("no_answer", seed=3)
    missing.answer_audio = None
    codes = make_sample("bad_codes", seed=4)
    codes.motion_codes = np.zeros((7, 6), np.int64)  # 20 frames need 4 tokens
    with ShardWriter(tmp_path, max_samples=3) as w:
        for s in (make_sample("ok1"), nan, short, make_sample("ok2", "asr"), missing, codes, make_sample("ok3", "tts")):
            w.write(s)
    return tmp_path


def test_reports_each_bad_sample_and_goes_on(tmp_path, capsys):
    d = _dataset(tmp_path)
    rep = validate_dataset(d)
    assert rep.total == 7 and rep.good == 3
    bad = {k: " ".join(p) for _, k, p in rep.bad}
    assert set(bad) == {"nan_motion", "short_motion", "no_answer", "bad_codes"}
    assert "NaN" in bad["nan_motion"] and "frame 3" in bad["nan_motion"]
    assert "disagree" in bad["short_motion"]
    assert "missing answer_audio" in bad["no_answer"]
    assert "motion_codes" in bad["bad_codes"]
    assert main([str(d), "--no-progress", "--json", str(tmp_path / "r.json")]) == 1
    out = capsys.readouterr().out
    assert "7 samples: 3 good, 4 bad" in out and "BAD shard-000000.tar:nan_motion" in out
    assert json.loads((tmp_path / "r.json").read_text())["good"] == 3


def test_corrupt_shard_is_reported_and_the_rest_checked(tmp_path, capsys):
    d = tmp_path / "ds"
    with ShardWriter(d, max_samples=1) as w:
        w.write(make_sample("a"))
        w.write(make_sample("b"))
    data = (d / "shard-000000.tar").read_bytes()
    (d / "shard-000000.tar").write_bytes(data[: len(data) // 3])
    rep = validate_dataset(d)
    assert rep.good == 1 and any(k == "*" or k == "a" for _, k, _ in rep.bad)
    assert main([str(d), "--no-progress"]) == 1


def test_clean_dataset_and_not_a_dataset(tmp_path, capsys):
    write_shard(tmp_path / "only.tar", [make_sample("a"), make_sample("b", "repeat")])
    assert main([str(tmp_path), "--no-progress"]) == 0  # no dataset.json: the .tar files are the shards
    assert main([str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "not a FLAME-QA dataset" in capsys.readouterr().err


def _recipe_yaml(tmp_path, train, stage3, val=None):
    from training.train_a2llm import A2LLMRecipe

    d = {"out": str(tmp_path / "run"), "train_data": str(train), "stage3": {"steps": 1}}
    if stage3 is not None:
        d["stage3"]["train_data"] = str(stage3)
    if val is not None:
        d["val_data"] = str(val)
    path = tmp_path / "recipe.yaml"
    A2LLMRecipe.from_dict(d).to_file(path)
    return path


def test_recipe_checks_stage3_has_its_own_affective_dataset(tmp_path, capsys):
    from training.validate import validate_recipe

    train = tmp_path / "train"
    write_shard(train / "a.tar", [make_sample("t1"), make_sample("t2", "tts")])
    aff = tmp_path / "aff"
    unlabelled = make_sample("e2", seed=5)
    unlabelled.emotion = None
    write_shard(aff / "a.tar", [make_sample("e1"), unlabelled])
    rep = validate_recipe(_recipe_yaml(tmp_path, train, aff))
    assert rep.ok and set(rep.datasets) == {"train_data", "stage3.train_data"}
    assert any("no emotion label" in n for n in rep.notes) and any("~1k" in n for n in rep.notes)
    assert main(["--recipe", str(tmp_path / "recipe.yaml"), "--no-progress"]) == 0
    assert "stage3.train_data" in capsys.readouterr().out

    # no affective dataset named: refused
    rep = validate_recipe(_recipe_yaml(tmp_path, train, None))
    assert not rep.ok and any("own affective dataset" in p for p in rep.problems)
    assert main(["--recipe", str(tmp_path / "recipe.yaml"), "--no-progress"]) == 1
    assert "stage3.train_data" in capsys.readouterr().out

    # a filtered copy of the stage-1 data (shared keys): refused
    subset = tmp_path / "subset"
    write_shard(subset / "a.tar", [make_sample("t2", "tts")])
    rep = validate_recipe(_recipe_yaml(tmp_path, train, subset))
    assert not rep.ok and any("shares 1 of its 1 sample keys" in p for p in rep.problems)

    # a missing affective folder and a bad sample in it are reported, and the rest still checked
    rep = validate_recipe(_recipe_yaml(tmp_path, train, tmp_path / "nowhere", val=train))
    assert not rep.ok and any("stage3.train_data" in p for p in rep.problems) and rep.datasets["val_data"].ok
    bad = make_sample("e3", seed=6)
    bad.motion[0, 0] = np.nan
    write_shard(aff / "b.tar", [bad])
    rep = validate_recipe(_recipe_yaml(tmp_path, train, aff))
    assert not rep.ok and not rep.datasets["stage3.train_data"].ok and not rep.problems


def test_recipe_naming_the_stage1_folder_for_stage3_is_refused(tmp_path, capsys):
    train = tmp_path / "train"
    write_shard(train / "a.tar", [make_sample("t1")])
    yaml = tmp_path / "r.yaml"
    yaml.write_text(f"train_data: {train}\nstage3:\n  train_data: {train}/\n")
    assert main(["--recipe", str(yaml), "--no-progress"]) == 2
    assert "own affective dataset" in capsys.readouterr().err


def test_dir_or_recipe_required(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--no-progress"])
