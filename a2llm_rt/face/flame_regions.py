"""FaceRegions for the FLAME 2020 topology (5023 vertices).

Fixed facts (see FLAME.md; the same indices hold for FLAME 2023, which keeps the 2020 topology):

- Mouth-opening pairs used by ARTalk's metrics: :data:`MOUTH_UPPER_ARTALK` ``[2851, ..., 1736]`` and
  :data:`MOUTH_LOWER_ARTALK` ``[1775, ..., 2882]`` are mirror-ordered (``upper[i]`` faces ``lower[8 - i]``).
  :data:`MOUTH_UPPER` / :data:`MOUTH_LOWER` are paired index to index, as :class:`FaceRegions` requires, and start with
  the inner-lip midline pair 3531 / 3504 (MediaPipe 13 / 14), so they hold 10 pairs.
- Lip corners ``[2819, 1702]``: 2819 has x < 0 (MediaPipe 61), 1702 has x > 0 (MediaPipe 291); in this order.
- ``lips`` / ``face`` / ``upper_face`` come from the user's ``FLAME_masks.pkl`` (``lips``, ``face``,
  ``forehead`` + ``eye_region``, as ARTalk's UFD). Without masks:
  * :func:`flame_regions_from_template` derives APPROXIMATE regions geometrically from the template around the
    landmark vertices (documented in the function);
  * :func:`flame_regions` alone (no template either) gives a coarse landmark-only fallback: ``lips`` = the 20 mouth
    landmarks + 2 corners, ``face`` = ``upper_face`` = every vertex. Use it only when nothing better is available.

FLAME is in metres: ``unit_to_mm = 1000``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from a2llm_rt.face.regions import FaceRegions

FLAME2020_NUM_VERTICES = 5023
FLAME_NUM_JOINTS = 5
FLAME_NUM_POSE_BASIS = 9 * (FLAME_NUM_JOINTS - 1)  # 36: (R - I) of the 4 non-root joints
FLAME_NUM_SHAPE = 300  # identity coefficients in shapedirs[..., :300]; expression follows
MOUTH_UPPER_ARTALK = np.array([2851, 2849, 2865, 2866, 3546, 1751, 1750, 1734, 1736], dtype=np.int64)
MOUTH_LOWER_ARTALK = np.array([1775, 1794, 1803, 1850, 3506, 2939, 2906, 2897, 2882], dtype=np.int64)
INNER_LIP_UPPER = 3531
INNER_LIP_LOWER = 3504
LIP_CORNERS = np.array([2819, 1702], dtype=np.int64)  # x < 0, x > 0

# index-to-index pairs: inner-lip midline first, then ARTalk's upper[i] with lower[8 - i]
MOUTH_UPPER = np.concatenate([[INNER_LIP_UPPER], MOUTH_UPPER_ARTALK]).astype(np.int64)
MOUTH_LOWER = np.concatenate([[INNER_LIP_LOWER], MOUTH_LOWER_ARTALK[::-1]]).astype(np.int64)
LIP_LANDMARKS = np.unique(np.concatenate([MOUTH_UPPER, MOUTH_LOWER, LIP_CORNERS]))

UNIT_TO_MM = 1000.0

# geometric fallback, in multiples of the mouth width (distance between the two lip corners, ~5 cm on FLAME)
LIPS_RADIUS = 0.25  # a vertex is "lips" within this distance of the lip line (landmarks + segments between them)
FACE_HALF_WIDTH = 1.6  # |x - mouth_x| <= this
FACE_BELOW = 1.3  # y >= mouth_y - this (chin)
FACE_ABOVE = 2.8  # y <= mouth_y + this (forehead top)
FACE_DEPTH = 1.0  # z >= mouth_z - this (in front of the ears)
UPPER_FACE_ABOVE = 1.1  # upper face: face vertices with y > mouth_y + this (eyes and forehead)


def _mask(masks: Mapping[str, np.ndarray] | None, *names: str) -> np.ndarray | None:
    """Union of the named masks, or None when any of them is missing."""
    if masks is None or any(n not in masks for n in names):
        return None
    return np.unique(np.concatenate([np.asarray(masks[n], dtype=np.int64).reshape(-1) for n in names]))


def _mask_regions(masks: Mapping[str, np.ndarray] | None) -> tuple[np.ndarray | None, ...]:
    """``(lips, face, upper_face)`` from FLAME_masks.pkl names; None for each region the masks do not give."""
    return _mask(masks, "lips"), _mask(masks, "face"), _mask(masks, "forehead", "eye_region")


def _regions(lips: np.ndarray, face: np.ndarray, upper_face: np.ndarray) -> FaceRegions:
    """FaceRegions with FLAME 2020's mouth pairs, lip corners and units, checked against its vertex count."""
    regions = FaceRegions(
        lips=lips,
        face=face,
        upper_face=upper_face,
        mouth_upper=MOUTH_UPPER,
        mouth_lower=MOUTH_LOWER,
        lip_corners=LIP_CORNERS,
        unit_to_mm=UNIT_TO_MM,
    )
    regions.check(FLAME2020_NUM_VERTICES)
    return regions


def flame_regions(masks: Mapping[str, np.ndarray] | None = None) -> FaceRegions:
    """FLAME 2020 regions; ``lips`` / ``face`` / ``upper_face`` from ``masks`` (FLAME_masks.pkl names).

    Without a mask, its region falls back to the coarse landmark-only choice described in the module docstring;
    prefer :func:`flame_regions_from_template` when the template is at hand.
    """
    everything = np.arange(FLAME2020_NUM_VERTICES, dtype=np.int64)
    lips, face, upper = _mask_regions(masks)
    return _regions(
        LIP_LANDMARKS if lips is None else lips,
        everything if face is None else face,
        everything if upper is None else upper,
    )


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of ``points`` ``[N, 3]`` to the segments of the polyline ``line`` ``[K, 3]`` -> ``[N]``."""
    a, b = line[:-1], line[1:]  # [K-1, 3]
    ab = b - a
    t = np.einsum("nkc,kc->nk", points[:, None, :] - a[None], ab) / np.maximum((ab * ab).sum(-1), 1e-12)
    closest = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]  # [N, K-1, 3]
    return np.linalg.norm(points[:, None, :] - closest, axis=-1).min(axis=1)


def flame_regions_from_template(v_template: np.ndarray, masks: Mapping[str, np.ndarray] | None = None) -> FaceRegions:
    """FLAME 2020 regions; masks where given, else APPROXIMATE regions derived from the template ``[5023, 3]``.

    FLAME axes: x to the subject's left, y up, z forward (out of the face). With ``w`` the mouth width (distance of
    the lip corners) and ``m`` the mean of the lip landmarks:

    - lips: vertices within ``0.25 w`` of the upper or lower lip line (corner -> ARTalk pairs -> corner polylines);
    - face: ``|x - m_x| <= 1.6 w``, ``m_y - 1.3 w <= y <= m_y + 2.8 w``, ``z >= m_z - 1.0 w``;
    - upper_face: face vertices with ``y > m_y + 1.1 w`` (eyes and forehead).

    These boxes approximate FLAME_masks.pkl's regions on a neutral head; metrics computed with them are not
    comparable to numbers reported with the official masks.
    """
    v = np.asarray(v_template, dtype=np.float64)
    if v.shape != (FLAME2020_NUM_VERTICES, 3):
        raise ValueError(f"FLAME 2020 regions need a [{FLAME2020_NUM_VERTICES}, 3] template, got {v.shape}")
    lips, face, upper = _mask_regions(masks)
    if lips is None or face is None or upper is None:
        c0, c1 = v[LIP_CORNERS[0]], v[LIP_CORNERS[1]]
        w = float(np.linalg.norm(c1 - c0))
        if not w > 0:
            raise ValueError("the template's lip corners coincide; cannot derive regions")
        m = v[LIP_LANDMARKS].mean(axis=0)
        if lips is None:
            upper_line = v[np.concatenate([[LIP_CORNERS[0]], MOUTH_UPPER_ARTALK, [LIP_CORNERS[1]]])]
            lower_line = v[np.concatenate([[LIP_CORNERS[0]], MOUTH_LOWER_ARTALK[::-1], [LIP_CORNERS[1]]])]
            dist = np.minimum(_distance_to_polyline(v, upper_line), _distance_to_polyline(v, lower_line))
            lips = np.union1d(np.flatnonzero(dist <= LIPS_RADIUS * w), LIP_LANDMARKS)
        in_face = (
            (np.abs(v[:, 0] - m[0]) <= FACE_HALF_WIDTH * w)
            & (v[:, 1] >= m[1] - FACE_BELOW * w)
            & (v[:, 1] <= m[1] + FACE_ABOVE * w)
            & (v[:, 2] >= m[2] - FACE_DEPTH * w)
        )
        if face is None:
            face = np.union1d(np.flatnonzero(in_face), lips)
        if upper is None:
            upper = np.flatnonzero(in_face & (v[:, 1] > m[1] + UPPER_FACE_ABOVE * w))
    return _regions(lips, face, upper)
