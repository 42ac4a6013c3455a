"""Export the motion stack's two step graphs to ONNX (``torch.onnx.export(..., dynamo=True)``).

Graphs (every cache is an explicit input/output; ARCHITECTURE principle 6):

``connector_step`` (one window, fixed W, dynamic batch ``batch``)::

    hidden     [B, W, d_llm]  float (fp32/fp16/bf16)  window of backbone hidden states (zero-padded past n_valid*G)
    prev_codes [B, W/G, N_q]  int64                   previous window's motion codes (ignored where has_prev=False)
    has_prev   [B]            bool                    False: the turn's first window -> learned start memory
    n_valid    [B]            int64                   valid motion tokens of the window (1..W/G; < W/G: last window)
    -> logits  [B, W/G, N_q, K] float, codes [B, W/G, N_q] int64 (greedy = argmax of logits)

This reproduces :meth:`MotionConnector.step`: ``prev_codes=None`` is ``has_prev=False`` (the ``first`` mask of a
mixed batch is ``has_prev = ~first``); a short window ``W' < W`` is padded to W and masked like ``forward`` masks it.
Every graph's float inputs and outputs are float32 whatever the precision (fp16/bf16 graphs cast inside), so the
runtimes feed the same buffers to every variant.

``decoder_step`` (RVQ decode + streaming decoder step + de-normalisation; dynamic batch ``batch`` and tokens ``n``)::

    codes          [B, n, N_q]                        int64  motion codes
    code_mask      [B, n]                             float  1: decode the code, 0: a zero latent (``flush``'s padding)
    state_tokens   [B, latent, ctx + lookahead]       float  } the :class:`DecoderState` of each session (a fresh
    state_frames   [B, width, sum of frame contexts]  float  } row is all zeros; ``filled``: look-ahead tokens
    state_filled   [B]                                int64  } received so far, 0..lookahead)
    -> frames [B, n*G, D] float32 (original units; each row's frames left-aligned, zeros past them),
       frame_lengths [B] int64 (frames of each row), new_state_tokens, new_state_frames, new_state_filled

The graph is :meth:`MotionDecoder.step_padded`: the look-ahead hold-back of every row (the first ``lookahead`` tokens
of a row's stream give no frames) happens inside it, so rows at different points of their streams (one reset while
the others go on) share one call, and a runtime only trims the padding (``a2llm_rt/engine/motion_backend.py``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from a2llm_rt.engine.artifacts import weights_sha256
from a2llm_rt.errors import InputError
from a2llm_rt.models.connector import MotionConnector
from a2llm_rt.models.motion_tokenizer import DecoderState, MotionTokenizer
from a2llm_rt.utils.fileio import atomic_write

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CONNECTOR_INPUTS = ("hidden", "prev_codes", "has_prev", "n_valid")
CONNECTOR_OUTPUTS = ("logits", "codes")
STATE_FIELDS = ("tokens", "frames", "filled")
"""The decoder graph's state inputs ``state_<name>`` and outputs ``new_state_<name>`` (:class:`DecoderState`)."""
DECODER_OUTPUTS = ("frames", "frame_lengths", *(f"new_state_{s}" for s in STATE_FIELDS))
OPSET = 18


# ---- graph wrappers -----------------------------------------------------------------------------------------------
class ConnectorStepGraph(nn.Module):
    """:meth:`MotionConnector.step` with explicit ``has_prev`` / ``n_valid`` inputs (see the module docstring)."""

    def __init__(self, connector: MotionConnector, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.connector = connector
        self.dtype = dtype
        # Conv1d(k=G, s=G) as one MatMul over G stacked frames: same math, and a MatMul is what int8 dynamic
        # quantization and TensorRT handle best. weight [d, d_llm, G] -> [G * d_llm, d] (frame-major rows).
        w = connector.down.weight.detach()
        self.register_buffer("down_w", w.permute(2, 1, 0).reshape(-1, w.shape[0]).contiguous(), persistent=False)

    def forward(
        self, hidden: torch.Tensor, prev_codes: torch.Tensor, has_prev: torch.Tensor, n_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.connector
        n = c.cfg.tokens_per_window
        b = hidden.shape[0]
        x = hidden.to(self.dtype).reshape(b, n, -1)  # [B, n, G * d_llm]
        q = c.proj(torch.nn.functional.gelu(x @ self.down_w + c.down.bias))  # == c.queries(hidden): [B, n, d]
        mem = torch.where(has_prev.view(-1, 1, 1), c.embed_codes(prev_codes), c.start.expand(b, n, -1).to(q.dtype))
        mem = mem + c.mem_pos[:n]
        query_mask = torch.arange(n, device=hidden.device).view(1, n) < n_valid.view(-1, 1)  # [B, n]
        logits = c._run(q, mem, query_mask).float()  # [B, n, N_q, K]
        return logits, logits.argmax(-1)


class DecoderStepGraph(nn.Module):
    """codes + decoder state -> frames (original units), per-row frame counts, new state: exactly
    :meth:`MotionDecoder.step_padded` (each row's look-ahead hold-back included) after the RVQ decode."""

    def __init__(self, tokenizer: MotionTokenizer, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tokenizer = tokenizer
        self.dtype = dtype
        names = decoder_state_names(tokenizer)
        if names != list(STATE_FIELDS):
            raise ValueError(f"DecoderStepGraph expects DecoderState tensors {list(STATE_FIELDS)}, got {names}")

    def forward(
        self,
        codes: torch.Tensor,
        code_mask: torch.Tensor,
        state_tokens: torch.Tensor,
        state_frames: torch.Tensor,
        state_filled: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.tokenizer
        z = t.quantizer.vq.decode(codes) * code_mask.unsqueeze(-1).to(self.dtype)  # [B, n, latent]
        state = DecoderState(state_tokens.to(self.dtype), state_frames.to(self.dtype), state_filled)
        y, lengths, st = t.decoder.step_padded(z, state)
        keep = torch.arange(y.shape[1], device=y.device).view(1, -1, 1) < lengths.view(-1, 1, 1)
        frames = t.to_frames(y) * keep.to(y.dtype)  # [B, n*G, D], zero past each row's frames
        return frames.float(), lengths, st.tokens.float(), st.frames.float(), st.filled


def decoder_state_names(tokenizer: MotionTokenizer) -> list[str]:
    return list(tokenizer.init_decode_state(1).tensors())


# ---- metadata -----------------------------------------------------------------------------------------------------
def a2llm_version() -> str:
    try:
        import importlib.metadata

        return importlib.metadata.version("a2llm")
    except Exception:
        pass
    try:
        import tomllib

        py = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return str(tomllib.loads(py.read_text())["project"]["version"])
    except Exception:
        return "unknown"


def versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "a2llm": a2llm_version()}  # fmt: skip


def set_metadata(path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``meta`` into the ONNX file's ``metadata_props`` (non-string values as JSON), atomically."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()})
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    with atomic_write(path, "wb") as f:
        f.write(model.SerializeToString())


def read_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict of strings (weights are not loaded)."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# ---- export -------------------------------------------------------------------------------------------------------
def _export(module: nn.Module, args: tuple, path: Path, names_in: list[str], names_out: list[str], dyn: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=names_in,
            output_names=names_out,
            dynamic_shapes=dyn,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    tmp = path.with_name(f".{path.name}.export.tmp")
    try:
        prog.save(str(tmp))
        model = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(model.SerializeToString())


def connector_example(connector: MotionConnector, batch: int = 2) -> tuple:
    """Random example inputs of the connector graph (batch 2 so the batch axis stays dynamic)."""
    cfg = connector.cfg
    n = cfg.tokens_per_window
    return (
        torch.randn(batch, cfg.window, cfg.d_llm),
        torch.randint(0, cfg.codebook_size, (batch, n, cfg.n_q)),
        torch.tensor([True, False] * batch)[:batch],
        torch.full((batch,), n, dtype=torch.long),
    )


def decoder_example(tokenizer: MotionTokenizer, batch: int = 2, n: int = 3) -> tuple:
    """Random example inputs of the decoder graph (batch 2, n 3: neither axis may be 0/1 or equal while tracing)."""
    st = tokenizer.init_decode_state(batch)
    codes = torch.randint(0, tokenizer.cfg.codebook_size, (batch, n, tokenizer.cfg.num_quantizers))
    state = [torch.randn_like(t) if t.is_floating_point() else torch.zeros_like(t) for t in st.tensors().values()]
    return (codes, torch.ones(batch, n), *state)


def export_connector(connector: MotionConnector, path: str | Path, precision: str = "fp32") -> dict:
    """Export the connector step graph; returns its metadata (also written into the file)."""
    path = Path(path)
    dtype = DTYPES[precision]
    graph = ConnectorStepGraph(_copy_to(connector, dtype), dtype).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    dyn = {"hidden": {0: batch}, "prev_codes": {0: batch}, "has_prev": {0: batch}, "n_valid": {0: batch}}
    _export(graph, connector_example(connector, 2), path, list(CONNECTOR_INPUTS), list(CONNECTOR_OUTPUTS), dyn)
    meta = {
        "a2llm.graph": "connector_step",
        "a2llm.config": connector.cfg.to_dict(),
        "a2llm.versions": versions(),
        "a2llm.weights_sha256": weights_sha256(connector),
        "a2llm.precision": precision,
        "a2llm.window": str(connector.cfg.window),
        "a2llm.inputs": list(CONNECTOR_INPUTS),
        "a2llm.outputs": list(CONNECTOR_OUTPUTS),
    }
    set_metadata(path, meta)
    return meta


def export_decoder(tokenizer: MotionTokenizer, path: str | Path, precision: str = "fp32", window: int = 10) -> dict:
    """Export the RVQ decoder step graph; returns its metadata (also written into the file)."""
    path = Path(path)
    dtype = DTYPES[precision]
    graph = DecoderStepGraph(_copy_to(tokenizer, dtype), dtype).eval()
    state = decoder_state_names(tokenizer)
    names_in = ["codes", "code_mask", *(f"state_{s}" for s in state)]
    names_out = list(DECODER_OUTPUTS)
    batch, n = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("n", min=1, max=4096)
    dyn = {"codes": {0: batch, 1: n}, "code_mask": {0: batch, 1: n}, **{f"state_{s}": {0: batch} for s in state}}
    _export(graph, decoder_example(tokenizer, 2, 3), path, names_in, names_out, dyn)
    meta = {
        "a2llm.graph": "decoder_step",
        "a2llm.config": tokenizer.cfg.to_dict(),
        "a2llm.versions": versions(),
        "a2llm.weights_sha256": weights_sha256(tokenizer),
        "a2llm.precision": precision,
        "a2llm.window": str(window),
        "a2llm.inputs": names_in,
        "a2llm.outputs": names_out,
        "a2llm.state": state,
        "a2llm.lookahead": str(tokenizer.lookahead),
        "a2llm.frame_dim": str(tokenizer.dim),
        "a2llm.layout": tokenizer.cfg.layout,
    }
    set_metadata(path, meta)
    return meta


def _copy_to(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The module itself for fp32; a converted deep copy for fp16/bf16 (code tables and buffers follow)."""
    if dtype == torch.float32:
        return module.eval()
    import copy

    return copy.deepcopy(module).to(dtype).eval()


def check_precision(precision: str) -> torch.dtype:
    if precision not in DTYPES:
        raise InputError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    return DTYPES[precision]
