"""FLAME58 -> ARKIT52 / LIVELINK61: an analytic part (jaw, eyelids, head) plus a learned linear map (expression).

Axis conventions
----------------
FLAME (and the ARKit mesh in ``../shared/data/arkit_mesh``): right-handed, metres, **y up**, **z toward the viewer**
(the camera; the face looks along +z), **x toward the subject's left** (the subject's left eye has x > 0). Poses are
axis-angle vectors in radians (rotation angle = norm, right-hand rule).

Unreal: left-handed, z up, x forward, y right. An ``FRotator`` (yaw, pitch, roll) applies roll about the forward axis,
then pitch about the right axis, then yaw about the up axis (intrinsic yaw -> pitch -> roll); positive yaw turns from
forward toward right, positive pitch raises the nose, positive roll lowers the right side.

What this module implements for Live Link's ``HeadYaw``, ``HeadPitch``, ``HeadRoll`` (radians, LIVELINK61[52:55]):
the head's rotation as an Unreal rotator in the subject's own frame (forward = out of the face, right = the subject's
right, up = up):

- ``HeadYaw``   rotation about the up axis; **positive = the head turns toward the subject's right**.
- ``HeadPitch`` rotation about the subject's left-right axis; **positive = the chin goes up (looking up)**.
- ``HeadRoll``  rotation about the forward axis; **positive = the head tilts toward the subject's right shoulder**
  (right ear down).

The FLAME global rotation ``R`` (axis-angle -> matrix) is decomposed intrinsically as ``R = Ry(a) @ Rx(b) @ Rz(c)``
in FLAME axes (yaw about y, then pitch about the rotated x, then roll about the rotated z), which is the same order as
an Unreal rotator; FLAME's right-hand signs then give ``HeadYaw = -a`` (+a turns the face toward +x, the subject's
left), ``HeadPitch = -b`` (+b tips the face down) and ``HeadRoll = +c`` (+c moves the top of the head toward -x, the
subject's right). A rig whose Live Link blueprint reads the curves with other signs negates them at the engine boundary.
The recorded capture in ``../shared/data`` has zero head curves, so the signs follow the definitions above, not data.

Analytic curves (from FLAME's jaw pose ``[50:53]`` and eyelids ``[56:58]``; the jaw rotation is decomposed the same
way as the head, ``R_jaw = Ry(yaw) @ Rx(pitch) @ Rz(roll)``):

- ``jawOpen = clip(pitch / JAW_OPEN_MAX_RAD, 0, 1)`` (FLAME opens the jaw with a positive rotation about x;
  ``JAW_OPEN_MAX_RAD = 0.35`` rad, about 20 degrees, a wide-open mouth in FLAME fits).
- ``jawLeft = clip(yaw / JAW_SIDE_MAX_RAD, 0, 1)``, ``jawRight = clip(-yaw / JAW_SIDE_MAX_RAD, 0, 1)``: a positive
  FLAME jaw yaw moves the chin toward +x, the subject's left, as ``jawLeft`` does on the ARKit mesh
  (``JAW_SIDE_MAX_RAD = 0.1`` rad). Jaw roll has no ARKit curve and is dropped.
- ``jawForward = 0``: the FLAME jaw is a pure rotation about its joint and has no forward (translation) component.
- ``eyeBlinkLeft/Right = clip(EYELID_SCALE * eyelid_left/right, 0, 1)``: FLAME58[56] is the subject's left eyelid,
  ``EYELID_SCALE = 1`` (SMIRK-style eyelid blendshape weights are 0 open .. ~1 closed).

Learned curves: every other ARKit curve comes from :class:`ArkitMap`, a linear map ``clip(expr @ weight + bias, 0,
1)`` from the 50 expression coefficients (fitted by :mod:`a2llm_rt.face_tools.fit_arkit_map`). Without a map those
curves are 0. Live Link's eye rotations (LIVELINK61[55:61]) are 0: FLAME58 carries no eye gaze.

Inputs may be numpy arrays or torch tensors (``[..., 58]``); the math runs in numpy (float64) and a torch input gets a
torch output on its device and dtype. The mapping is not differentiable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import (
    ARKIT52_DIM,
    ARKIT52_NAMES,
    ARKIT_INDEX,
    FLAME58_DIM,
    FLAME_EXPRESSION,
    FLAME_EYELIDS,
    FLAME_GLOBAL,
    FLAME_JAW,
    FLAME_N_EXPRESSION,
    LIVELINK61_DIM,
    LIVELINK_HEAD,
)
from a2llm_rt.utils.fileio import atomic_save_npz

JAW_OPEN_MAX_RAD = 0.35  # FLAME jaw pitch (rad) that maps to jawOpen = 1
JAW_SIDE_MAX_RAD = 0.1  # FLAME jaw yaw (rad) that maps to jawLeft/jawRight = 1
EYELID_SCALE = 1.0  # eyeBlink = EYELID_SCALE * FLAME eyelid parameter

# Curves the analytic part writes; a learned map may not target them.
ANALYTIC_CURVES: tuple[str, ...] = ("jawForward", "jawLeft", "jawRight", "jawOpen", "eyeBlinkLeft", "eyeBlinkRight")
# Curves a learned map fits by default: every other ARKit curve, in ARKIT52 order.
LEARNED_CURVES: tuple[str, ...] = tuple(n for n in ARKIT52_NAMES if n not in ANALYTIC_CURVES)


# --- rotations -----------------------------------------------------------------------------------------------------
def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle ``[..., 3]`` (radians) -> rotation matrices ``[..., 3, 3]`` (float64)."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1)[..., None, None]  # [..., 1, 1]
    x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)  # [K]_x * theta
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    # sin(t)/t and (1-cos(t))/t^2, with their Taylor limits near 0
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * k + b * (k @ k)


def matrix_to_axis_angle(r: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> axis-angle ``[..., 3]`` (angle in [0, pi])."""
    r = np.asarray(r, dtype=np.float64)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)  # [...]
    v = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], axis=-1)
    sin = np.sin(theta)[..., None]
    small = sin < 1e-6
    out = np.where(small, v / 2.0, v * theta[..., None] / (2.0 * np.where(small, 1.0, sin)))
    # near pi: axis from the diagonal of (R + I) / 2
    near_pi = (theta > np.pi - 1e-3)[..., None]
    if near_pi.any():
        sym = (r + np.eye(3)) / 2.0
        col = np.argmax(np.diagonal(sym, axis1=-2, axis2=-1), axis=-1)
        axis = np.take_along_axis(sym, col[..., None, None].repeat(3, axis=-1), axis=-2)[..., 0, :]
        axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-12)
        sign = np.where(np.sum(axis * v, axis=-1, keepdims=True) < 0, -1.0, 1.0)
        out = np.where(near_pi, axis * sign * theta[..., None], out)
    return out


def matrix_to_ypr(r: np.ndarray) -> np.ndarray:
    """Intrinsic FLAME-axis angles ``[..., 3]`` = (a about y, b about x', c about z'') with ``R = Ry(a) Rx(b) Rz(c)``.

    ``b`` lies in [-pi/2, pi/2]; at gimbal lock (``|b| = pi/2``) the split between ``a`` and ``c`` is arbitrary.
    """
    r = np.asarray(r, dtype=np.float64)
    b = np.arcsin(np.clip(-r[..., 1, 2], -1.0, 1.0))
    a = np.arctan2(r[..., 0, 2], r[..., 2, 2])
    c = np.arctan2(r[..., 1, 0], r[..., 1, 1])
    return np.stack([a, b, c], axis=-1)


def ypr_to_matrix(ypr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`matrix_to_ypr`: ``[..., 3]`` (a, b, c) -> ``Ry(a) @ Rx(b) @ Rz(c)`` ``[..., 3, 3]``."""
    ypr = np.asarray(ypr, dtype=np.float64)
    a, b, c = ypr[..., 0], ypr[..., 1], ypr[..., 2]
    ry = axis_angle_to_matrix(np.stack([np.zeros_like(a), a, np.zeros_like(a)], axis=-1))
    rx = axis_angle_to_matrix(np.stack([b, np.zeros_like(b), np.zeros_like(b)], axis=-1))
    rz = axis_angle_to_matrix(np.stack([np.zeros_like(c), np.zeros_like(c), c], axis=-1))
    return ry @ rx @ rz


def flame_global_to_head(global_pose: np.ndarray) -> np.ndarray:
    """FLAME global pose axis-angle ``[..., 3]`` -> Live Link (HeadYaw, HeadPitch, HeadRoll) ``[..., 3]``, radians."""
    a, b, c = np.moveaxis(matrix_to_ypr(axis_angle_to_matrix(global_pose)), -1, 0)
    return np.stack([-a, -b, c], axis=-1)


def head_to_flame_global(head: np.ndarray) -> np.ndarray:
    """Inverse of :func:`flame_global_to_head`: ``(HeadYaw, HeadPitch, HeadRoll)`` ``[..., 3]`` -> axis-angle."""
    head = np.asarray(head, dtype=np.float64)
    ypr = np.stack([-head[..., 0], -head[..., 1], head[..., 2]], axis=-1)
    return matrix_to_axis_angle(ypr_to_matrix(ypr))


# --- the learned map -----------------------------------------------------------------------------------------------
@dataclass
class ArkitMap:
    """Linear map from FLAME's 50 expression coefficients to some ARKit curves: ``clip(e @ weight + bias, 0, 1)``.

    Attributes:
        weight: ``[50, K]`` float32.
        bias: ``[K]`` float32.
        curves: the K target ARKit curve names (camelCase; none of :data:`ANALYTIC_CURVES`).
        provenance: JSON-serialisable facts (data source, date, method, fit error, ...).
    """

    weight: np.ndarray
    bias: np.ndarray
    curves: tuple[str, ...] = LEARNED_CURVES
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32).reshape(-1)
        self.curves = tuple(str(c) for c in self.curves)
        self.validate()

    def validate(self, path: str | Path | None = None) -> None:
        k = len(self.curves)
        if self.weight.shape != (FLAME_N_EXPRESSION, k):
            want = f"[{FLAME_N_EXPRESSION}, {k}]"
            raise InputError(f"ArkitMap weight must have shape {want}, got {list(self.weight.shape)}", path)
        if self.bias.shape != (k,):
            raise InputError(f"ArkitMap bias must have shape [{k}], got {self.bias.shape}", path)
        unknown = [c for c in self.curves if c not in ARKIT_INDEX]
        if unknown:
            raise InputError(f"ArkitMap targets unknown ARKit curves {unknown}", path)
        analytic = [c for c in self.curves if c in ANALYTIC_CURVES]
        if analytic:
            raise InputError(f"ArkitMap may not target the analytic curves {analytic}", path)
        if len(set(self.curves)) != k:
            raise InputError("ArkitMap targets a curve twice", path)
        if not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise InputError("ArkitMap has non-finite weights", path)

    @property
    def indices(self) -> np.ndarray:
        """``[K]`` ARKIT52 indices of the target curves."""
        return np.array([ARKIT_INDEX[c] for c in self.curves], dtype=np.int64)

    def apply(self, expression: np.ndarray) -> np.ndarray:
        """Expression coefficients ``[..., 50]`` -> target curves ``[..., K]`` in [0, 1]."""
        e = np.asarray(expression, dtype=np.float64)
        return np.clip(e @ self.weight.astype(np.float64) + self.bias, 0.0, 1.0)

    def save(self, path: str | Path) -> None:
        """Write a small ``.npz`` (weight, bias, curves, provenance as a JSON string); readable without pickle."""
        atomic_save_npz(
            path,
            weight=self.weight,
            bias=self.bias,
            curves=np.array(self.curves, dtype=np.str_),
            provenance=np.array(json.dumps(self.provenance, sort_keys=True)),
        )

    @classmethod
    def load(cls, path: str | Path) -> ArkitMap:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"weight", "bias", "curves", "provenance"} - set(z.files)
                if missing:
                    raise InputError(f"not an ArkitMap file: missing arrays {sorted(missing)}", path)
                weight, bias, curves = z["weight"], z["bias"], tuple(z["curves"].tolist())
                provenance = json.loads(str(z["provenance"]))
        except (OSError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"cannot read ArkitMap: {e}", path) from None
        try:
            return cls(weight, bias, curves, provenance)
        except InputError as e:
            raise InputError(e.problem, path) from None


# --- the mapping ---------------------------------------------------------------------------------------------------
def _to_numpy(frames: np.ndarray | torch.Tensor, dim: int) -> np.ndarray:
    if torch.is_tensor(frames):
        frames = frames.detach().cpu().double().numpy()
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise InputError(f"FLAME58 frames must have shape [..., {dim}], got {list(x.shape)}")
    if not np.isfinite(x).all():
        raise InputError("FLAME58 frames contain NaN or inf")
    return x


def _like(out: np.ndarray, ref: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    if torch.is_tensor(ref):
        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float32
        return torch.as_tensor(out, dtype=dtype, device=ref.device)
    return out.astype(np.float32)


def _flame_to_arkit_np(x: np.ndarray, arkit_map: ArkitMap | None) -> np.ndarray:
    out = np.zeros((*x.shape[:-1], ARKIT52_DIM), dtype=np.float64)
    yaw, pitch, _roll = np.moveaxis(matrix_to_ypr(axis_angle_to_matrix(x[..., FLAME_JAW])), -1, 0)
    out[..., ARKIT_INDEX["jawOpen"]] = np.clip(pitch / JAW_OPEN_MAX_RAD, 0.0, 1.0)
    out[..., ARKIT_INDEX["jawLeft"]] = np.clip(yaw / JAW_SIDE_MAX_RAD, 0.0, 1.0)
    out[..., ARKIT_INDEX["jawRight"]] = np.clip(-yaw / JAW_SIDE_MAX_RAD, 0.0, 1.0)
    # jawForward stays 0: FLAME's jaw has no translation
    eyelids = x[..., FLAME_EYELIDS]
    out[..., ARKIT_INDEX["eyeBlinkLeft"]] = np.clip(EYELID_SCALE * eyelids[..., 0], 0.0, 1.0)
    out[..., ARKIT_INDEX["eyeBlinkRight"]] = np.clip(EYELID_SCALE * eyelids[..., 1], 0.0, 1.0)
    if arkit_map is not None:
        out[..., arkit_map.indices] = arkit_map.apply(x[..., FLAME_EXPRESSION])
    return out


def flame_to_arkit(frames: np.ndarray | torch.Tensor, arkit_map: ArkitMap | None = None) -> np.ndarray | torch.Tensor:
    """FLAME58 frames ``[..., 58]`` -> ARKIT52 weights ``[..., 52]`` in [0, 1] (numpy float32, or torch like input).

    Jaw and eyelid curves are analytic; the others come from ``arkit_map`` (0 without one).
    """
    x = _to_numpy(frames, FLAME58_DIM)
    return _like(_flame_to_arkit_np(x, arkit_map), frames)


def flame_to_livelink(
    frames: np.ndarray | torch.Tensor, arkit_map: ArkitMap | None = None
) -> np.ndarray | torch.Tensor:
    """FLAME58 frames ``[..., 58]`` -> LIVELINK61 ``[..., 61]``: ARKIT52, head yaw/pitch/roll (rad), eye rotations 0."""
    x = _to_numpy(frames, FLAME58_DIM)
    out = np.zeros((*x.shape[:-1], LIVELINK61_DIM), dtype=np.float64)
    out[..., :ARKIT52_DIM] = _flame_to_arkit_np(x, arkit_map)
    out[..., LIVELINK_HEAD] = flame_global_to_head(x[..., FLAME_GLOBAL])
    return _like(out, frames)
