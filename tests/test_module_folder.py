"""a2llm_rt.utils.module_folder: config.json + model.safetensors written once and read back exactly, training output
folders through latest.json, the legacy connector names, and refusal of damaged or mismatched folders."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save as st_save

from a2llm_rt.engine.builders import TINY_CONNECTOR, TINY_MOTION
from a2llm_rt.errors import InputError
from a2llm_rt.models.connector import ConnectorConfig, MotionConnector
from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig
from a2llm_rt.utils import module_folder as mf


def connector(seed: int = 0) -> MotionConnector:
    torch.manual_seed(seed)
    return MotionConnector(TINY_CONNECTOR).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_then_load_is_exact(tmp_path):
    m = connector()
    mf.save_module(tmp_path / "c", m)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["config.json", "model.safetensors"]
    back = mf.load_module(tmp_path / "c", ConnectorConfig, MotionConnector, "connector")
    assert back.cfg == m.cfg and same_weights(back, m) and not back.training
    assert not same_weights(back, connector(1))  # the comparison can fail
    torch.manual_seed(0)
    tok = MotionTokenizer(TINY_MOTION)
    tok.set_normalization(torch.randn(tok.dim), torch.rand(tok.dim) + 0.5)  # buffers travel too
    mf.save_module(tmp_path / "t", tok)
    assert same_weights(mf.load_module(tmp_path / "t", MotionTokenizerConfig, MotionTokenizer), tok)


def test_latest_json_names_the_checkpoint(tmp_path):
    m = connector()
    mf.save_module(tmp_path / "checkpoints" / "step-00000010", connector(1))
    mf.save_module(tmp_path / "checkpoints" / "step-00000020", m)
    mf.write_latest(tmp_path, tmp_path / "checkpoints" / "step-00000020", 20)
    assert json.loads((tmp_path / "latest.json").read_text()) == {"step": 20, "path": "checkpoints/step-00000020"}
    assert mf.resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000020"
    assert same_weights(mf.load_module(tmp_path, ConnectorConfig, MotionConnector), m)


@pytest.mark.parametrize(
    ("latest", "match"),
    [("{", "malformed"), ('{"step": 1}', "malformed"), ('{"path": "../elsewhere"}', "inside"),
     ('{"path": "/abs"}', "inside"), ('{"path": "missing"}', "does not exist")],
)  # fmt: skip
def test_bad_latest_json_is_refused(tmp_path, latest, match):
    (tmp_path / "latest.json").write_text(latest)
    with pytest.raises(InputError, match=match):
        mf.load_module(tmp_path, ConnectorConfig, MotionConnector)


def test_legacy_connector_names_still_load(tmp_path):
    """Curriculum stage folders of earlier versions: connector.json + connector.safetensors beside the LoRA."""
    m = connector()
    m.cfg.to_file(tmp_path / "connector.json")
    (tmp_path / "connector.safetensors").write_bytes(st_save(mf.cpu_state(m)))
    assert same_weights(mf.load_module(tmp_path, ConnectorConfig, MotionConnector), m)
    from training.train_a2llm import load_connector

    assert same_weights(load_connector(tmp_path), m)
    with pytest.raises(InputError, match="d_llm"):
        load_connector(tmp_path, d_llm=m.cfg.d_llm + 1)


def test_damaged_or_mismatched_folders_are_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        mf.load_module(tmp_path / "nope", ConnectorConfig, MotionConnector)
    with pytest.raises(InputError, match="missing model.safetensors"):
        mf.load_module(tmp_path, ConnectorConfig, MotionConnector)
    mf.save_module(tmp_path / "a", connector())
    (tmp_path / "a" / "config.json").unlink()
    with pytest.raises(InputError, match="missing config.json"):
        mf.load_module(tmp_path / "a", ConnectorConfig, MotionConnector)
    mf.save_module(tmp_path / "b", connector())
    (tmp_path / "b" / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(InputError, match="unreadable safetensors"):
        mf.load_module(tmp_path / "b", ConnectorConfig, MotionConnector)
    mf.save_module(tmp_path / "c", MotionConnector(dataclasses.replace(TINY_CONNECTOR, d_model=16)))
    mf.save_module(tmp_path / "d", connector())
    (tmp_path / "d" / "model.safetensors").write_bytes((tmp_path / "c" / "model.safetensors").read_bytes())
    with pytest.raises(InputError, match="do not match"):
        mf.load_module(tmp_path / "d", ConnectorConfig, MotionConnector)
