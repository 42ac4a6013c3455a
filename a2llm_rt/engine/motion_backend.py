"""Runtime backends of the motion stack: one interface, three implementations (torch, onnxruntime, TensorRT).

The interface (:class:`MotionBackend`, typed methods, no module views) is the motion path of the engine
(ARCHITECTURE §1)::

    window of W hidden states [B, W', d_llm] (in backend.input_dtype)
        --connector_step--> logits [B, W'/G, N_q, K] float32 --greedy/sample--> codes [B, W'/G, N_q]
    codes [B, m, N_q] --decode_step(codes, DecoderState)--> DecodedFrames (frames [B, M, D] original units, lengths
        [B]) + new DecoderState
    decode_flush(state) at the end of the streams: the frames each row holds back (``lookahead``)

How the engine uses it: ``EngineConfig.motion_backend`` (a :class:`MotionBackendConfig`) names the backend; the
:class:`~a2llm_rt.engine.engine.Engine` holds the :class:`MotionBackend` that :func:`stack_motion_backend` gives
(torch by default: :class:`TorchBackend` over the stack's own modules) and drives every session's motion through it,
the same way for every backend. Inputs are torch tensors on any device; outputs are float32 torch tensors on the
input's device (TensorRT: CUDA). Decoder states are :class:`DecoderState` of torch tensors, every field per session
(``[B, ...]``, the look-ahead counter ``filled`` too), and the exported decoder graph takes and returns all of them,
so sessions at different points of their streams (one just reset) decode in one call on every backend, and
``select``/``cat``/``reset`` work for every backend (weights shared, state per session).

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


@dataclasses.dataclass
class DecodedFrames:
    """Frames of one decoder call for a batch of sessions.

    Attributes:
        frames: ``[B, M, D]`` float32 (original units); row b's frames are ``frames[b, :lengths[b]]`` (left-aligned,
            zero past them). ``M`` is the call's static size (``m G`` for ``m`` codes), not trimmed to the longest
            row, so a backend never reads a count back to the host.
        lengths: ``[B]`` int64 frames of each row (on ``frames``' device; rows differ while a row fills its
            look-ahead after a reset).
    """

    frames: torch.Tensor
    lengths: torch.Tensor

    def row(self, i: int) -> torch.Tensor:
        """Row ``i``'s frames ``[lengths[i], D]``."""
        return self.frames[i, : int(self.lengths[i])]


class MotionBackend(ABC):
    """The motion stack behind one interface (see the module docstring). Weights shared, state per session."""

    kind: str = ""
    connector_cfg: ConnectorConfig
    tokenizer_cfg: MotionTokenizerConfig

    # -- connector ----------------------------------------------------------------------------------------------------
    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype :meth:`connector_step` takes hidden states in (the engine casts its windows to it)."""
        return torch.float32

    @abstractmethod
    def connector_step(
        self, hidden: torch.Tensor, prev_codes: torch.Tensor | None = None, first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, W'/G, N_q, K]`` float32 for a window ``hidden`` ``[B, W', d_llm]`` (W' <= W, multiple of G);
        ``prev_codes`` ``[B, W/G, N_q]`` int64 or None (first window), ``first`` ``[B]`` bool (rows starting a turn).
        Same contract as :meth:`MotionConnector.step`."""

    def greedy_codes(
        self, hidden: torch.Tensor, prev_codes: torch.Tensor | None = None, first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Greedy codes ``[B, W'/G, N_q]`` int64 of a window."""
        return self.connector_step(hidden, prev_codes, first).argmax(-1)

    # -- decoder ------------------------------------------------------------------------------------------------------
    @abstractmethod
    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> DecoderState:
        """A fresh decoder state for ``batch_size`` streams (every field ``[B, ...]``; ``reset``/``select``/``cat``
        regroup sessions)."""

    @abstractmethod
    def decode_step(self, codes: torch.Tensor, state: DecoderState) -> tuple[DecodedFrames, DecoderState]:
        """codes ``[B, m, N_q]`` int64 -> each row's frames (``m G`` once its look-ahead is filled, fewer while it
        fills) and the new state. Same contract as :meth:`MotionTokenizer.decode_step`."""

    @abstractmethod
    def decode_flush(self, state: DecoderState) -> tuple[DecodedFrames, DecoderState]:
        """The frames each row still holds back (look-ahead) at the end of its stream."""

    # -- derived ------------------------------------------------------------------------------------------------------
    @property
    def lookahead(self) -> int:
        return self.tokenizer_cfg.lookahead

    @property
    def frame_dim(self) -> int:
        return self.tokenizer_cfg.motion_dim

    @property
    def window(self) -> int:
        """W: hidden states per connector window."""
        return self.connector_cfg.window

    @property
    def group(self) -> int:
        """G: frames per motion token."""
        return self.connector_cfg.group

    @property
    def fps(self) -> float:
        return float(self.tokenizer_cfg.fps)


# ---- torch ----------------------------------------------------------------------------------------------------------
class TorchBackend(MotionBackend):
    """The PyTorch modules themselves (eager); :attr:`connector` and :attr:`motion` are those modules."""

    kind = "torch"

    def __init__(self, connector: MotionConnector, motion: MotionTokenizer):
        self.connector = connector.eval()
        self.motion = motion.eval()
        self.connector_cfg = connector.cfg
        self.tokenizer_cfg = motion.cfg

    @property
    def input_dtype(self) -> torch.dtype:
        return self.connector.down.weight.dtype

    @torch.no_grad()
    def connector_step(self, hidden, prev_codes=None, first=None):
        return self.connector.step(hidden, prev_codes, first).float()

    def init_decode_state(self, batch_size, device=None):
        return self.motion.init_decode_state(batch_size, device)

    def decode_step(self, codes, state):
        frames, lengths, state = self.motion.decode_step_padded(codes, state)
        return DecodedFrames(frames.float(), lengths), state

    def decode_flush(self, state):
        frames, lengths, state = self.motion.decode_flush_padded(state)
        return DecodedFrames(frames.float(), lengths), state


# ---- exported graphs: shared logic ---------------------------------------------------------------------------------
class _GraphBackend(MotionBackend):
    """Common part of the exported backends: input checks, window padding, state feeds.

    Subclasses provide ``_run_connector(feeds) -> (logits, codes)`` and ``_run_decoder(feeds) -> [frames,
    frame_lengths, *new state]`` on torch tensors. The look-ahead hold-back is inside the decoder graph.
    """

    def _load_configs(self, folder: Path, manifest: dict[str, Any]) -> None:
        try:
            self.connector_cfg = ConnectorConfig.from_dict(manifest["connector"], source=folder / "manifest.json")
            self.tokenizer_cfg = MotionTokenizerConfig.from_dict(manifest["tokenizer"], source=folder / "manifest.json")
            self.state_names = list(manifest["decoder_state"])
            self._state_shapes = {k: tuple(manifest["decoder_state_shapes"][k]) for k in self.state_names}
            dtypes = manifest.get("decoder_state_dtypes", {})
            self._state_dtypes = {k: getattr(torch, dtypes.get(k, "float32")) for k in self.state_names}
        except KeyError as e:
            raise InputError(f"manifest lacks {e.args[0]!r}", folder / "manifest.json") from None
        fields = [f.name for f in dataclasses.fields(DecoderState)]
        if self.state_names != fields:
            raise InputError(f"the decoder graph carries the state {self.state_names}, this runtime needs {fields} "
                             "(exported by another version): re-export it with python -m export.build_engines",
                             folder / "manifest.json")  # fmt: skip

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
        return DecoderState(**{
            k: torch.zeros(batch_size, *self._state_shapes[k], dtype=self._state_dtypes[k], device=dev)
            for k in self.state_names
        })  # fmt: skip

    def decode_step(self, codes, state):
        cfg = self.tokenizer_cfg
        if codes.dim() != 3 or codes.shape[-1] != cfg.num_quantizers:
            raise InputError(f"codes must be [B, m, {cfg.num_quantizers}], got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= cfg.codebook_size):
            raise InputError(f"codes must lie in 0..{cfg.codebook_size - 1}")
        return self._decode(codes, torch.ones(codes.shape[:2]), state)

    def decode_flush(self, state):
        b, n = state.tokens.shape[0], self.lookahead
        codes = torch.zeros(b, n, self.tokenizer_cfg.num_quantizers, dtype=torch.long)
        return self._decode(codes, torch.zeros(b, n), state)

    def _decode(self, codes, mask, state):
        """One call of the decoder graph for every row (each row's hold-back happens inside the graph)."""
        b, m = codes.shape[:2]
        out_dev = state.tokens.device
        if m == 0:
            empty = torch.zeros(b, 0, self.frame_dim, device=out_dev)
            return DecodedFrames(empty, torch.zeros(b, dtype=torch.long, device=out_dev)), state
        dev = self.device
        feeds = {"codes": codes.to(dev, torch.long).contiguous(), "code_mask": mask.to(dev, torch.float32).contiguous()}
        for k in self.state_names:
            feeds[f"state_{k}"] = getattr(state, k).to(dev, self._state_dtypes[k]).contiguous()
        out = self._run_decoder(feeds)
        lengths = out[1].to(out_dev, torch.long)
        frames = out[0].to(out_dev)
        new = {k: t.to(out_dev, self._state_dtypes[k]) for k, t in zip(self.state_names, out[2:], strict=True)}
        return DecodedFrames(frames, lengths), DecoderState(**new)


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
        return [out[k] for k in ["frames", "frame_lengths", *(f"new_state_{s}" for s in self.state_names)]]


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


def stack_motion_backend(stack: Stack, cfg: MotionBackendConfig) -> MotionBackend:
    """The motion backend ``cfg`` names for ``stack`` (torch: the stack's own connector and motion tokenizer).

    The stack is not changed. For an exported backend the
    engines folder is what runs: its manifest's connector and tokenizer configs must equal the stack's (else
    :class:`InputError`: the folder was exported from another motion stack); when the weights hashes recorded at
    export differ from the stack's PyTorch weights a warning is logged (the exported weights are used).
    """
    dev = stack.device
    backend = load_motion_backend(cfg, stack.connector, stack.motion, dev if dev.type == "cuda" else None)
    if cfg.kind == "torch":
        return backend
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
    return backend


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
