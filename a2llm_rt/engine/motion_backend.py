"""Runtime backends of the motion stack: one interface, three implementations (torch, onnxruntime, TensorRT).

The interface (:class:`MotionBackend`) is the motion path of the engine (ARCHITECTURE §1)::

    window of W hidden states [B, W', d_llm] --connector_step--> logits [B, W'/G, N_q, K] --greedy/sample--> codes
    codes [B, m, N_q] --decode_step(codes, DecoderState)--> frames [B, m*G, D] (original units) + new DecoderState
    decode_flush(state) at the end of a stream (frames held back by ``lookahead``)

How the engine uses it: ``EngineConfig.motion_backend`` (a :class:`MotionBackendConfig`) names the backend; the
:class:`~a2llm_rt.engine.engine.Engine` calls :func:`apply_motion_backend`, which loads it with
:func:`load_motion_backend` and puts ``backend.connector`` / ``backend.motion`` in the stack where the PyTorch
modules were, so the engine calls ``connector.step(hidden, prev_codes, first)`` and ``motion.init_decode_state /
decode_step / decode_flush`` the same way for every backend: ``backend.connector`` and ``backend.motion`` are drop-in
views with the same signatures (and ``cfg``, ``dim``,
``lookahead``), so engine code does not change with the backend. Inputs are torch tensors on any device; outputs are
float32 torch tensors on the input's device (TensorRT: CUDA). Decoder states are :class:`DecoderState` of torch
tensors, per session, so ``select``/``cat``/``reset`` work for every backend (weights shared, state per session).

Exported backends read only an engines folder (``manifest.json`` + artifacts written by ``python -m
export.build_engines``); every artifact's sha256 is checked against the manifest before it is loaded, and a mismatch
is refused with an :class:`~a2llm_rt.errors.InputError` naming the file. A short *previous* window (fewer than W/G
codes, possible only right after a turn's partial last window) is not supported by the exported connector graph.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from a2llm_rt.config import Config
from a2llm_rt.engine.artifacts import read_manifest, verify_artifact, weights_sha256
from a2llm_rt.errors import InputError
from a2llm_rt.models.connector import ConnectorConfig, MotionConnector
from a2llm_rt.models.motion_tokenizer import DecoderState, MotionTokenizer, MotionTokenizerConfig

if TYPE_CHECKING:
    from a2llm_rt.engine.builders import Stack

log = logging.getLogger(__name__)

KINDS = ("torch", "onnxruntime", "tensorrt")


@dataclasses.dataclass
class MotionBackendConfig(Config):
    """Which runtime runs the motion stack (connector + RVQ decoder)."""

    kind: str = "torch"
    """``torch`` (the PyTorch modules), ``onnxruntime`` or ``tensorrt`` (an engines folder)."""
    engines: str | None = None
    """Engines folder written by ``python -m export.build_engines`` (needed by onnxruntime and tensorrt)."""
    provider: str = "cpu"
    """onnxruntime execution provider: ``cpu`` or ``cuda``."""
    int8: bool = False
    """onnxruntime: use the int8 weight-quantized connector graph (CPU)."""
    threads: int = 0
    """onnxruntime intra-op threads (0: onnxruntime's default)."""

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.provider not in ("cpu", "cuda"):
            raise ValueError(f"provider must be 'cpu' or 'cuda', got {self.provider!r}")
        if self.kind != "torch" and not self.engines:
            raise ValueError(f"the {self.kind} backend needs an engines folder")
        if self.int8 and self.kind != "onnxruntime":
            raise ValueError("int8 is an onnxruntime (CPU) option")
        if self.threads < 0:
            raise ValueError("threads must be >= 0")


class MotionBackend(ABC):
    """The motion stack behind one interface (see the module docstring)."""

    kind: str = ""
    connector_cfg: ConnectorConfig
    tokenizer_cfg: MotionTokenizerConfig

    # -- connector ----------------------------------------------------------------------------------------------------
    @abstractmethod
    def connector_step(
        self, hidden: torch.Tensor, prev_codes: torch.Tensor | None = None, first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, W'/G, N_q, K]`` float32 for a window ``hidden`` ``[B, W', d_llm]`` (W' <= W, multiple of G);
        ``prev_codes`` ``[B, W/G, N_q]`` int64 or None (first window), ``first`` ``[B]`` bool (rows starting a turn).
        Same contract as :meth:`MotionConnector.step`."""

    # -- decoder ------------------------------------------------------------------------------------------------------
    @abstractmethod
    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> DecoderState:
        """A fresh decoder state for ``batch_size`` streams."""

    @abstractmethod
    def decode_step(self, codes: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """codes ``[B, m, N_q]`` -> frames ``[B, m' G, D]`` float32 (original units), new state (m' = m once
        ``lookahead`` tokens are in). Same contract as :meth:`MotionTokenizer.decode_step`."""

    @abstractmethod
    def decode_flush(self, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """The frames held back by ``lookahead`` at the end of a stream."""

    # -- derived ------------------------------------------------------------------------------------------------------
    @property
    def lookahead(self) -> int:
        return self.tokenizer_cfg.lookahead

    @property
    def frame_dim(self) -> int:
        return self.tokenizer_cfg.motion_dim

    def greedy_codes(
        self, hidden: torch.Tensor, prev_codes: torch.Tensor | None = None, first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Greedy codes ``[B, W'/G, N_q]`` int64 of a window."""
        return self.connector_step(hidden, prev_codes, first).argmax(-1)

    @property
    def connector(self) -> _ConnectorView:
        """Drop-in for :class:`MotionConnector` at inference (``cfg``, ``step``)."""
        return _ConnectorView(self)

    @property
    def motion(self) -> _MotionView:
        """Drop-in for :class:`MotionTokenizer` at inference (``cfg``, ``dim``, ``lookahead``, decode methods)."""
        return _MotionView(self)


class _ConnectorView:
    def __init__(self, backend: MotionBackend):
        self.backend = backend
        self.cfg = backend.connector_cfg

    def step(self, window_hidden, prev_codes=None, first=None):
        return self.backend.connector_step(window_hidden, prev_codes, first)

    def parameters(self):
        """One float32 placeholder, for engine code that reads the connector's input dtype from its parameters."""
        return iter([torch.zeros(0)])


class _MotionView:
    def __init__(self, backend: MotionBackend):
        self.backend = backend
        self.cfg = backend.tokenizer_cfg
        self.dim = backend.frame_dim
        self.group = self.cfg.group
        self.lookahead = backend.lookahead

    def init_decode_state(self, batch_size, device=None):
        return self.backend.init_decode_state(batch_size, device)

    def decode_step(self, codes, state):
        return self.backend.decode_step(codes, state)

    def decode_flush(self, state):
        return self.backend.decode_flush(state)


# ---- torch ----------------------------------------------------------------------------------------------------------
class TorchBackend(MotionBackend):
    """The PyTorch modules themselves (eager)."""

    kind = "torch"

    def __init__(self, connector: MotionConnector, motion: MotionTokenizer):
        self._connector = connector.eval()
        self._motion = motion.eval()
        self.connector_cfg = connector.cfg
        self.tokenizer_cfg = motion.cfg

    @torch.no_grad()
    def connector_step(self, hidden, prev_codes=None, first=None):
        return self._connector.step(hidden, prev_codes, first).float()

    def init_decode_state(self, batch_size, device=None):
        return self._motion.init_decode_state(batch_size, device)

    def decode_step(self, codes, state):
        return self._motion.decode_step(codes, state)

    def decode_flush(self, state):
        return self._motion.decode_flush(state)

    @property
    def connector(self):
        return self._connector

    @property
    def motion(self):
        return self._motion


# ---- exported graphs: shared logic ---------------------------------------------------------------------------------
class _GraphBackend(MotionBackend):
    """Common part of the exported backends: input checks, window padding, and the decoder's ``skip`` handling.

    Subclasses provide ``_run_connector(feeds) -> (logits, codes)`` and ``_run_decoder(feeds) -> (frames, *state)``
    on torch tensors.
    """

    def _load_configs(self, folder: Path, manifest: dict[str, Any]) -> None:
        try:
            self.connector_cfg = ConnectorConfig.from_dict(manifest["connector"], source=folder / "manifest.json")
            self.tokenizer_cfg = MotionTokenizerConfig.from_dict(manifest["tokenizer"], source=folder / "manifest.json")
        except KeyError as e:
            raise InputError(f"manifest lacks {e.args[0]!r}", folder / "manifest.json") from None
        self.state_names = list(manifest.get("decoder_state", ["tokens", "frames"]))
        self._state_shapes = {k: tuple(v) for k, v in manifest["decoder_state_shapes"].items()}

    @abstractmethod
    def _run_connector(self, feeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def _run_decoder(self, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]: ...

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # connector
    def connector_step(self, hidden, prev_codes=None, first=None):
        return self._connector_call(hidden, prev_codes, first)[0]

    def greedy_codes(self, hidden, prev_codes=None, first=None):
        return self._connector_call(hidden, prev_codes, first)[1]

    def _connector_call(self, hidden, prev_codes, first):
        cfg = self.connector_cfg
        if hidden.dim() != 3 or hidden.shape[-1] != cfg.d_llm:
            raise InputError(f"hidden must be [B, W', {cfg.d_llm}], got {tuple(hidden.shape)}")
        b, w = hidden.shape[:2]
        if w == 0 or w % cfg.group or w > cfg.window:
            raise InputError(f"window length {w} must be a positive multiple of G={cfg.group} and <= W={cfg.window}")
        n, nv = cfg.tokens_per_window, w // cfg.group
        out_dev = hidden.device
        dev = self.device
        x = hidden.to(dev, torch.float32)
        if w < cfg.window:
            x = torch.cat([x, x.new_zeros(b, cfg.window - w, cfg.d_llm)], 1)
        if prev_codes is None:
            prev = torch.zeros(b, n, cfg.n_q, dtype=torch.long, device=dev)
            has_prev = torch.zeros(b, dtype=torch.bool, device=dev)
        else:
            if tuple(prev_codes.shape) != (b, n, cfg.n_q):
                raise InputError(f"prev_codes must be [{b}, {n}, {cfg.n_q}] for the {self.kind} backend (a short "
                                 f"previous window is not supported by the exported graph), got "
                                 f"{tuple(prev_codes.shape)}")  # fmt: skip
            prev = prev_codes.to(dev, torch.long)
            has_prev = (
                torch.ones(b, dtype=torch.bool, device=dev) if first is None else ~first.to(dev, torch.bool).view(b)
            )
        n_valid = torch.full((b,), nv, dtype=torch.long, device=dev)
        logits, codes = self._run_connector({"hidden": x, "prev_codes": prev, "has_prev": has_prev, "n_valid": n_valid})
        return logits[:, :nv].to(out_dev), codes[:, :nv].to(out_dev, torch.long)

    # decoder
    def init_decode_state(self, batch_size, device=None):
        dev = device if device is not None else self.device
        kw = {k: torch.zeros(batch_size, *self._state_shapes[k], device=dev) for k in self.state_names}
        return DecoderState(**kw, skip=self.lookahead)

    def decode_step(self, codes, state):
        cfg = self.tokenizer_cfg
        if codes.dim() != 3 or codes.shape[-1] != cfg.num_quantizers:
            raise InputError(f"codes must be [B, m, {cfg.num_quantizers}], got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cfg.codebook_size):
            raise InputError(f"codes must lie in 0..{cfg.codebook_size - 1}")
        mask = torch.ones(codes.shape[:2], device=codes.device)
        return self._decode(codes, mask, state)

    def decode_flush(self, state):
        n = self.lookahead - state.skip
        b = state.tokens.shape[0]
        codes = torch.zeros(b, n, self.tokenizer_cfg.num_quantizers, dtype=torch.long, device=state.tokens.device)
        return self._decode(codes, torch.zeros(b, n, device=state.tokens.device), state)

    def _decode(self, codes, mask, state):
        """Exactly :meth:`MotionDecoder.step`: the first ``skip`` tokens of a stream only update the token window."""
        b, m = codes.shape[:2]
        out_dev = state.tokens.device
        empty = torch.zeros(b, 0, self.frame_dim, device=out_dev)
        if m == 0:
            return empty, state
        s = min(state.skip, m)
        st = [getattr(state, k) for k in self.state_names]
        if s:
            new = self._decoder_call(codes[:, :s], mask[:, :s], st)
            ti = self.state_names.index("tokens")  # keep the token window; the frame path never sees these tokens
            st[ti] = new[1 + ti].to(out_dev)
        if s == m:
            return empty, DecoderState(**dict(zip(self.state_names, st, strict=True)), skip=state.skip - s)
        out = self._decoder_call(codes[:, s:], mask[:, s:], st)
        new_state = {k: t.to(out_dev) for k, t in zip(self.state_names, out[1:], strict=True)}
        return out[0].to(out_dev), DecoderState(**new_state, skip=state.skip - s)

    def _decoder_call(self, codes, mask, st):
        dev = self.device
        feeds = {"codes": codes.to(dev, torch.long).contiguous(), "code_mask": mask.to(dev, torch.float32).contiguous()}
        for k, t in zip(self.state_names, st, strict=True):
            feeds[f"state_{k}"] = t.to(dev, torch.float32).contiguous()
        return self._run_decoder(feeds)


# ---- onnxruntime --------------------------------------------------------------------------------------------------
def ort_session(path: str | Path, provider: str = "cpu", threads: int = 0):
    """An ``onnxruntime.InferenceSession`` (all graph optimizations; ``threads`` intra-op threads, 0 = default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if provider == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InputError("onnxruntime's CUDA provider is not available (install onnxruntime-gpu)", path)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OnnxRuntimeBackend(_GraphBackend):
    """The exported graphs on onnxruntime (CPU or CUDA provider; optional int8 connector)."""

    kind = "onnxruntime"

    def __init__(self, engines: str | Path, provider: str = "cpu", int8: bool = False, threads: int = 0):
        folder = Path(engines)
        manifest = read_manifest(folder)
        self._load_configs(folder, manifest)
        self.manifest = manifest
        name = "connector_int8_onnx" if int8 else "connector_onnx"
        self.connector_path = verify_artifact(folder, manifest, name)
        self.decoder_path = verify_artifact(folder, manifest, "decoder_onnx")
        self.int8 = int8
        #: the int8 connector's quantization scheme from the manifest ("weight_only", "dynamic"; None: fp32 graph)
        self.int8_scheme = manifest["artifacts"][name].get("int8_scheme", "dynamic") if int8 else None
        self._conn = ort_session(self.connector_path, provider, threads)
        self._dec = ort_session(self.decoder_path, provider, threads)

    def _run_connector(self, feeds):
        out = self._conn.run(None, {k: v.numpy() for k, v in feeds.items()})
        return torch.from_numpy(out[0]), torch.from_numpy(out[1])

    def _run_decoder(self, feeds):
        out = self._dec.run(None, {k: v.numpy() for k, v in feeds.items()})
        return [torch.from_numpy(np.ascontiguousarray(o)) for o in out]


# ---- TensorRT -----------------------------------------------------------------------------------------------------
class TensorRTBackend(_GraphBackend):
    """TensorRT engines (TensorRT 10+): ``execute_async_v3`` on each runner's own CUDA stream, torch-owned buffers,
    on ``device`` (default: the current CUDA device; the engine passes the model's). Batches above an engine's
    ``max_batch`` run in slices (:func:`~a2llm_rt.engine.trt_runner.run_in_batches`)."""

    kind = "tensorrt"

    def __init__(self, engines: str | Path, device: torch.device | str | None = None):
        from a2llm_rt.engine.trt_runner import TrtRunner

        folder = Path(engines)
        manifest = read_manifest(folder)
        self._load_configs(folder, manifest)
        self.manifest = manifest
        self._conn = TrtRunner(verify_artifact(folder, manifest, "connector_trt"), device)
        self._dec = TrtRunner(verify_artifact(folder, manifest, "decoder_trt"), device)
        self._device = self._conn.device

    @property
    def device(self) -> torch.device:
        return self._device

    def _run_connector(self, feeds):
        out = self._conn(feeds)
        return out["logits"], out["codes"]

    def _run_decoder(self, feeds):
        out = self._dec(feeds)
        return [out[k] for k in ["frames", *(f"new_state_{s}" for s in self.state_names)]]


# ---- factory --------------------------------------------------------------------------------------------------------
def load_motion_backend(
    cfg: MotionBackendConfig,
    connector: MotionConnector | None = None,
    motion: MotionTokenizer | None = None,
    device: torch.device | str | None = None,
) -> MotionBackend:
    """The backend ``cfg`` names (torch needs the modules; the others read ``cfg.engines``). ``device``: the CUDA
    device TensorRT runs on (default: the current one)."""
    if cfg.kind == "torch":
        if connector is None or motion is None:
            raise InputError("the torch motion backend needs the connector and motion tokenizer modules")
        return TorchBackend(connector, motion)
    if cfg.kind == "onnxruntime":
        return OnnxRuntimeBackend(cfg.engines, cfg.provider, cfg.int8, cfg.threads)
    return TensorRTBackend(cfg.engines, device)


def apply_motion_backend(stack: Stack, cfg: MotionBackendConfig) -> tuple[Stack, MotionBackend]:
    """(the stack with ``cfg``'s backend in place of its connector and motion tokenizer, the backend).

    The stack passed in is not changed (a copy with the backend's views is returned). For an exported backend the
    engines folder is what runs: its manifest's connector and tokenizer configs must equal the stack's (else
    :class:`InputError`: the folder was exported from another motion stack); when the weights hashes recorded at
    export differ from the stack's PyTorch weights a warning is logged (the exported weights are used).
    """
    dev = stack.device
    backend = load_motion_backend(cfg, stack.connector, stack.motion, dev if dev.type == "cuda" else None)
    if cfg.kind == "torch":
        return stack, backend
    manifest_path = Path(cfg.engines) / "manifest.json"
    diffs = [
        f"{what}.{f.name}: engines {getattr(b, f.name)!r} != stack {getattr(a, f.name)!r}"
        for what, a, b in (
            ("connector", stack.connector.cfg, backend.connector_cfg),
            ("tokenizer", stack.motion.cfg, backend.tokenizer_cfg),
        )
        for f in dataclasses.fields(a)
        if getattr(a, f.name) != getattr(b, f.name, None)
    ]
    if diffs:
        raise InputError(
            "the engines folder was exported from a different motion stack (" + "; ".join(diffs[:6]) + "): re-export "
            "it from this motion directory with python -m export.build_engines, or pass the matching --motion",
            manifest_path,
        )
    arts = backend.manifest["artifacts"]
    for name, module in (("connector_onnx", stack.connector), ("decoder_onnx", stack.motion)):
        recorded = arts.get(name, {}).get("weights_sha256")
        floats = {p.dtype for p in module.parameters()} <= {torch.float32}
        if recorded and floats and recorded != weights_sha256(module):
            log.warning("%s: the %s graph was exported from other weights than the loaded motion stack's; the engine "
                        "runs the exported weights", manifest_path, name.split("_")[0])  # fmt: skip
    new = dataclasses.replace(stack, connector=backend.connector, motion=backend.motion)
    new.check()
    return new, backend


# ---- command lines --------------------------------------------------------------------------------------------------
def add_motion_backend_args(ap) -> None:
    """``--motion-backend torch|onnxruntime|tensorrt``, ``--engines DIR``, ``--int8`` on an argparse parser."""
    ap.add_argument("--motion-backend", default="torch", choices=KINDS,
                    help="runtime of the motion stack (connector + RVQ decoder); default torch")  # fmt: skip
    ap.add_argument("--engines", default=None,
                    help="engines folder of python -m export.build_engines (onnxruntime / tensorrt)")  # fmt: skip
    ap.add_argument("--int8", action="store_true", help="onnxruntime: the int8 weight-quantized connector (CPU)")


def motion_backend_from_args(args, threads: int = 0) -> MotionBackendConfig:
    """The :class:`MotionBackendConfig` of :func:`add_motion_backend_args`'s options (:class:`InputError` when they
    do not fit together, e.g. onnxruntime without ``--engines``)."""
    data: dict[str, Any] = {"kind": args.motion_backend, "engines": args.engines, "int8": bool(args.int8)}
    if args.motion_backend == "onnxruntime":
        data["threads"] = threads
    return MotionBackendConfig.from_dict(data, source=args.engines)
