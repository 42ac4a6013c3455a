"""FLAME vertices from FLAME58 frames: blendshapes, pose correctives, linear blend skinning, eyelids (pure torch).

``FlameModel(frames)`` maps ``[..., 58]`` frames (``expression[0:50] | jaw[50:53] | global[53:56] | eyelids[56:58]``,
axis-angle radians, see :mod:`a2llm_rt.face.layouts`) to vertices ``[..., V, 3]`` (metres):

1. ``v_shaped = v_template + shapedirs[..., :S] @ shape + shapedirs[..., 300:350] @ expression``
   (``shape``: fixed identity coefficients, ``S <= 300``, zeros by default);
2. joints ``J = J_regressor @ v_shaped`` (5 joints: global/root, neck, jaw, left eye, right eye);
3. pose ``[global, neck = 0, jaw, left eye = 0, right eye = 0]`` -> rotations (Rodrigues);
   pose correctives ``v_posed = v_shaped + posedirs @ (R_1..4 - I)`` (36 values, the 4 non-root joints);
4. linear blend skinning of ``v_posed`` with ``weights`` over the kinematic tree;
5. eyelids, added after skinning as SMIRK does: ``v += e_left * l_eyelid + e_right * r_eyelid``. They are not rotated
   by the global pose (again as SMIRK). When the ``.npz`` has no eyelid blendshapes, ``frames[..., 56:58]`` are
   ignored (:attr:`FlameModel.has_eyelids` is False).

The model file is the ``.npz`` written by :mod:`a2llm_rt.face_tools.convert_flame`; it is read with
``np.load(allow_pickle=False)``. All arrays are buffers: the model computes on the device it is moved to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from a2llm_rt.errors import InputError
from a2llm_rt.face.flame_regions import (
    FLAME2020_NUM_VERTICES,
    FLAME_NUM_JOINTS,
    FLAME_NUM_POSE_BASIS,
    FLAME_NUM_SHAPE,
    flame_regions_from_template,
)
from a2llm_rt.face.layouts import FLAME58_DIM, FLAME_EXPRESSION, FLAME_EYELIDS, FLAME_GLOBAL, FLAME_JAW
from a2llm_rt.face.regions import FaceRegions

FLAME_EXPRESSION_OFFSET = FLAME_NUM_SHAPE  # expression basis = shapedirs[..., 300:350]
JAW_JOINT = 2


def rodrigues(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``[..., 3]`` -> rotation matrices ``[..., 3, 3]``.

    ``R = I + a K + b K^2`` with ``K`` the cross-product matrix of the (unnormalised) vector, ``a = sin t / t``,
    ``b = (1 - cos t) / t^2``; Taylor series below ``t = 1e-3`` keep it exact at zero (``R = I``) with finite
    gradients.
    """
    theta_sq = (rotvec * rotvec).sum(-1, keepdim=True)  # [..., 1]
    small = theta_sq < 1e-6
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = safe_sq.sqrt()
    a = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(theta)) / safe_sq)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))  # [..., 3, 3]
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def rigid_transforms(rot: torch.Tensor, joints: torch.Tensor, parents: list[int]) -> torch.Tensor:
    """Forward kinematics for LBS.

    Args:
        rot: ``[N, J, 3, 3]`` local joint rotations.
        joints: ``[N, J, 3]`` rest-pose joint positions.
        parents: ``parents[j] < j`` (``-1`` for the root).

    Returns:
        ``[N, J, 3, 4]`` transforms mapping a rest-pose point to its posed position for each joint
        (``G_j [x; 1]`` with the rest joint position removed, as in SMPL/FLAME).
    """
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    world_r: list[torch.Tensor] = []
    world_t: list[torch.Tensor] = []
    for j, p in enumerate(parents):
        if p < 0:
            world_r.append(rot[:, j])
            world_t.append(rel[:, j])
        else:
            world_r.append(world_r[p] @ rot[:, j])
            world_t.append(world_t[p] + (world_r[p] @ rel[:, j, :, None])[..., 0])
    r = torch.stack(world_r, dim=1)  # [N, J, 3, 3]
    t = torch.stack(world_t, dim=1) - (r @ joints[..., None])[..., 0]  # [N, J, 3]
    return torch.cat([r, t[..., None]], dim=-1)


class FlameModel(nn.Module):
    """FLAME layer: FLAME58 frames ``[..., 58]`` -> vertices ``[..., V, 3]`` (metres).

    Build it with :meth:`from_npz` (the converter's output) or from arrays. ``shape`` (identity coefficients,
    ``[S]`` with ``S <= 300``) is fixed at construction. Attributes: :attr:`faces` ``[F, 3]`` (int64 buffer),
    :attr:`num_vertices`, :attr:`has_eyelids`, :attr:`regions` (FLAME 2020 topology only).
    """

    def __init__(
        self,
        v_template: np.ndarray,
        faces: np.ndarray,
        shapedirs: np.ndarray,
        posedirs: np.ndarray,
        j_regressor: np.ndarray,
        weights: np.ndarray,
        parents: np.ndarray | list[int],
        l_eyelid: np.ndarray | None = None,
        r_eyelid: np.ndarray | None = None,
        masks: dict[str, np.ndarray] | None = None,
        shape: np.ndarray | torch.Tensor | None = None,
        num_expression: int = 50,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        f64 = np.float64
        v = np.asarray(v_template, f64)
        nv = v.shape[0]
        sd = np.asarray(shapedirs, f64)
        if sd.shape[2] < FLAME_EXPRESSION_OFFSET + num_expression:
            raise ValueError(f"shapedirs has {sd.shape[2]} bases, need {FLAME_EXPRESSION_OFFSET + num_expression}")
        betas = np.zeros(0) if shape is None else np.asarray(torch.as_tensor(shape).detach().cpu(), f64).reshape(-1)
        if len(betas) > FLAME_NUM_SHAPE:
            raise ValueError(f"shape has {len(betas)} coefficients; FLAME has at most {FLAME_NUM_SHAPE}")
        v_shaped = v + sd[..., : len(betas)] @ betas  # [V, 3]
        exprdirs = sd[..., FLAME_EXPRESSION_OFFSET : FLAME_EXPRESSION_OFFSET + num_expression]  # [V, 3, E]
        jreg = np.asarray(j_regressor, f64)  # [5, V]
        self.parents = [int(p) for p in np.asarray(parents).reshape(-1)]
        self.num_vertices = nv
        self.num_expression = num_expression
        self.has_eyelids = l_eyelid is not None and r_eyelid is not None
        self._masks = masks
        self._regions: FaceRegions | None = None

        def buf(name: str, a: np.ndarray, dt: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(a)).to(dt))

        buf("v_template", v)  # [V, 3] unshaped template (for reference / regions)
        buf("v_shaped", v_shaped)  # [V, 3] template + identity
        buf("exprdirs", exprdirs.reshape(nv * 3, num_expression).T)  # [E, V*3]
        buf("posedirs", np.asarray(posedirs, f64).reshape(nv * 3, FLAME_NUM_POSE_BASIS).T)  # [36, V*3]
        buf("j_shaped", jreg @ v_shaped)  # [5, 3] joints of the expressionless shaped template
        buf("j_exprdirs", np.einsum("jv,vce->ejc", jreg, exprdirs).reshape(num_expression, -1))  # [E, 15]
        buf("lbs_weights", np.asarray(weights, f64))  # [V, 5]
        buf("faces", np.asarray(faces), torch.int64)  # [F, 3]
        if self.has_eyelids:
            buf("eyelids", np.stack([np.asarray(l_eyelid, f64), np.asarray(r_eyelid, f64)]).reshape(2, nv * 3))
        else:
            self.register_buffer("eyelids", None)

    # --- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_npz(
        cls, path: str | Path, shape: np.ndarray | torch.Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> FlameModel:
        """Load the converter's ``.npz`` (``allow_pickle=False``); ``InputError`` naming the file when invalid."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise InputError(
                f"not a readable FLAME .npz (convert the model with a2llm_rt.face_tools.convert_flame): {e}", path
            ) from None
        except Exception as e:  # a corrupt zip member raises zipfile / zlib errors
            raise InputError(f"corrupt FLAME .npz: {type(e).__name__}: {e}", path) from None
        a = validate_flame_arrays(arrays, path)
        masks = {k[5:]: v for k, v in a.items() if k.startswith("mask_")}
        model = cls(
            a["v_template"],
            a["f"],
            a["shapedirs"],
            a["posedirs"],
            a["J_regressor"],
            a["weights"],
            a["parents"],
            a.get("l_eyelid"),
            a.get("r_eyelid"),
            masks or None,
            shape=shape,
            dtype=dtype,
        )
        model.source = path
        model.provenance = _provenance(arrays)
        return model

    # --- regions ------------------------------------------------------------------------------------------------
    @property
    def regions(self) -> FaceRegions:
        """FLAME 2020 :class:`FaceRegions`: the ``.npz``'s masks when present, else the geometric fallback."""
        if self._regions is None:
            if self.num_vertices != FLAME2020_NUM_VERTICES:
                raise ValueError(
                    f"regions are defined for the FLAME 2020 topology ({FLAME2020_NUM_VERTICES} "
                    f"vertices); this model has {self.num_vertices}"
                )
            self._regions = flame_regions_from_template(self.v_template.double().cpu().numpy(), self._masks)
        return self._regions

    # --- forward ------------------------------------------------------------------------------------------------
    def joints(self, expression: torch.Tensor) -> torch.Tensor:
        """Rest-pose joints ``[..., 5, 3]`` for ``expression`` ``[..., E]``."""
        j = self.j_shaped.flatten() + expression.to(self.j_exprdirs.dtype) @ self.j_exprdirs
        return j.unflatten(-1, (FLAME_NUM_JOINTS, 3))

    def lbs(
        self, expression: torch.Tensor, jaw: torch.Tensor, global_pose: torch.Tensor, eyelids: torch.Tensor | None
    ) -> torch.Tensor:
        """Vertices ``[N, V, 3]``.

        Args:
            expression: ``[N, E]``; jaw, global_pose: ``[N, 3]`` axis-angle; eyelids: ``[N, 2]`` or None.
        """
        n = expression.shape[0]
        nv = self.num_vertices
        v = self.v_shaped.flatten() + expression @ self.exprdirs  # [N, V*3]
        joints = self.joints(expression)  # [N, 5, 3]
        pose = torch.zeros(n, FLAME_NUM_JOINTS, 3, dtype=jaw.dtype, device=jaw.device)
        pose[:, 0] = global_pose
        pose[:, JAW_JOINT] = jaw
        rot = rodrigues(pose)  # [N, 5, 3, 3]
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
        pose_feature = (rot[:, 1:] - eye).flatten(1)  # [N, 36]
        v = (v + pose_feature @ self.posedirs).view(n, nv, 3)  # v_posed
        transforms = rigid_transforms(rot, joints, self.parents)  # [N, 5, 3, 4]
        t = (self.lbs_weights @ transforms.flatten(2)).view(n, nv, 3, 4)  # [N, V, 3, 4]
        v = (t[..., :3] @ v[..., None])[..., 0] + t[..., 3]
        if self.eyelids is not None and eyelids is not None:
            v = v + (eyelids @ self.eyelids).view(n, nv, 3)
        return v

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """FLAME58 frames ``[..., 58]`` -> vertices ``[..., V, 3]`` (on the buffers' device and dtype)."""
        if frames.shape[-1] != FLAME58_DIM:
            raise ValueError(f"expected FLAME58 frames [..., {FLAME58_DIM}], got {tuple(frames.shape)}")
        lead = frames.shape[:-1]
        x = frames.reshape(-1, FLAME58_DIM).to(device=self.v_shaped.device, dtype=self.v_shaped.dtype)
        expression = x[:, FLAME_EXPRESSION][:, : self.num_expression]
        v = self.lbs(expression, x[:, FLAME_JAW], x[:, FLAME_GLOBAL], x[:, FLAME_EYELIDS])
        return v.reshape(*lead, self.num_vertices, 3)


def _provenance(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    if "provenance" not in arrays:
        return {}
    try:
        return json.loads(str(arrays["provenance"]))
    except ValueError:
        return {"raw": str(arrays["provenance"])}


def validate_flame_arrays(arrays: dict[str, np.ndarray], path: str | Path) -> dict[str, np.ndarray]:
    """Check the converter's arrays (keys, shapes, dtypes, finiteness); ``InputError`` naming ``path``."""
    required = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights")
    missing = [k for k in required if k not in arrays]
    if "parents" not in arrays and "kintree_table" not in arrays:
        missing.append("parents")
    if missing:
        raise InputError(f"missing arrays {missing} (is this a converted FLAME .npz?)", path)
    v = arrays["v_template"]
    nv = v.shape[0] if v.ndim == 2 else -1
    expect = {
        "v_template": (nv, 3),
        "shapedirs": (nv, 3, None),
        "posedirs": (nv, 3, FLAME_NUM_POSE_BASIS),
        "J_regressor": (FLAME_NUM_JOINTS, nv),
        "weights": (nv, FLAME_NUM_JOINTS),
        "l_eyelid": (nv, 3),
        "r_eyelid": (nv, 3),
    }
    for key, shp in expect.items():
        if key not in arrays:
            continue
        a = arrays[key]
        if nv <= 0 or a.ndim != len(shp) or any(s is not None and s != d for s, d in zip(shp, a.shape, strict=True)):
            want = ", ".join("K" if s is None else str(s) for s in shp)
            raise InputError(f"{key} must have shape [{want}], got {list(a.shape)}", path)
        if a.dtype.kind != "f" or not np.isfinite(a).all():
            raise InputError(f"{key} must be finite floats, got dtype {a.dtype}", path)
    if arrays["shapedirs"].shape[2] < FLAME_EXPRESSION_OFFSET + 50:
        raise InputError(
            f"shapedirs has {arrays['shapedirs'].shape[2]} bases; need 350 (300 identity + 50 expression)", path
        )
    if ("l_eyelid" in arrays) != ("r_eyelid" in arrays):
        raise InputError("has only one of l_eyelid / r_eyelid", path)
    f = arrays["f"]
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu" or (f.size and (f.min() < 0 or f.max() >= nv)):
        raise InputError(f"f must be [F, 3] vertex indices below {nv}, got {f.dtype} {list(f.shape)}", path)
    if "parents" in arrays:
        parents = np.asarray(arrays["parents"]).reshape(-1)
    else:
        kt = arrays["kintree_table"]
        parents = kt[0].copy() if kt.ndim == 2 and kt.shape[0] == 2 else np.zeros(0)
        if len(parents):
            parents[0] = -1
    if (
        parents.shape != (FLAME_NUM_JOINTS,)
        or parents.dtype.kind not in "iu"
        or parents[0] != -1
        or any(not 0 <= parents[j] < j for j in range(1, FLAME_NUM_JOINTS))
    ):
        raise InputError(
            f"parents must be 5 joint indices with parents[0] = -1 and parents[j] < j, got {parents}", path
        )
    out = dict(arrays)
    out["parents"] = parents.astype(np.int64)
    for k, a in arrays.items():
        if k.startswith("mask_") and (
            a.ndim != 1 or a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() >= nv))
        ):
            raise InputError(f"{k} must be 1-d vertex indices below {nv}", path)
    return out
