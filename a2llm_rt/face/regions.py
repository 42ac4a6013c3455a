"""Vertex regions that the motion metrics and losses use, for any face mesh (FLAME or the ARKit mesh).

``FaceRegions`` is mesh-agnostic; the FLAME indices (FLAME 2020 topology, refined by the user's ``FLAME_masks.pkl``)
are filled in by :mod:`a2llm_rt.face.flame_regions`, the ARKit mesh's by :mod:`a2llm_rt.face.arkit_regions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FaceRegions:
    """Index arrays into a mesh's vertices.

    Attributes:
        lips: ``[L]`` lip vertices (LVE, L_lips).
        face: ``[F]`` face vertices (L_face).
        upper_face: ``[U]`` forehead + eye region (UFD).
        mouth_upper, mouth_lower: ``[P]`` upper/lower lip points, paired index to index (``mouth_upper[i]`` sits above
            ``mouth_lower[i]``); their mean distance is the mouth opening (MOD, Peak Align, Temporal Correlation).
        lip_corners: ``[2]`` left and right lip corner (Lip Width Correlation).
        unit_to_mm: factor from mesh units to millimetres (1000 for metres).
    """

    lips: np.ndarray
    face: np.ndarray
    upper_face: np.ndarray
    mouth_upper: np.ndarray
    mouth_lower: np.ndarray
    lip_corners: np.ndarray
    unit_to_mm: float = 1000.0

    def __post_init__(self) -> None:
        for name in ("lips", "face", "upper_face", "mouth_upper", "mouth_lower", "lip_corners"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
        if len(self.mouth_upper) != len(self.mouth_lower) or len(self.mouth_upper) == 0:
            raise ValueError("mouth_upper and mouth_lower must be non-empty and paired (same length)")
        if len(self.lip_corners) != 2:
            raise ValueError("lip_corners must hold exactly two vertex indices")

    def check(self, num_vertices: int) -> None:
        """Raise ValueError when an index does not exist in a mesh of ``num_vertices`` vertices."""
        for name in ("lips", "face", "upper_face", "mouth_upper", "mouth_lower", "lip_corners"):
            idx = getattr(self, name)
            if len(idx) and (idx.min() < 0 or idx.max() >= num_vertices):
                raise ValueError(f"region {name} refers to vertices outside a mesh of {num_vertices} vertices")
