"""Face frame layouts: FLAME58, ARKIT52 and LIVELINK61 (names, slices, ids).

This is the only module that spells these layouts out; every other module imports them.

- FLAME58 (float32, axis-angle radians): ``expression[0:50] | jaw_pose[50:53] | global_pose[53:56] | eyelids[56:58]``.
- ARKIT52: Apple's ARFaceAnchor blendshape order, identical to Unreal's ``EARFaceBlendShape`` 0..51, values in [0, 1].
  Names are ARKit camelCase (``eyeBlinkLeft``).
- LIVELINK61: ARKIT52 in Live Link's PascalCase (``EyeBlinkLeft``) followed by head and eye rotations in radians,
  the curve set of Unreal's Live Link Face source and of its UDP packets.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- FLAME58 -------------------------------------------------------------------------------------------------------
FLAME_N_EXPRESSION = 50
FLAME58_DIM = 58
FLAME_EXPRESSION = slice(0, 50)
FLAME_JAW = slice(50, 53)
FLAME_GLOBAL = slice(53, 56)
FLAME_EYELIDS = slice(56, 58)
FLAME58_NAMES: tuple[str, ...] = tuple(f"exp{i:02d}" for i in range(FLAME_N_EXPRESSION)) + (
    "jaw_x",
    "jaw_y",
    "jaw_z",
    "global_x",
    "global_y",
    "global_z",
    "eyelid_left",
    "eyelid_right",
)

# --- ARKIT52 -------------------------------------------------------------------------------------------------------
ARKIT52_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)  # fmt: skip
ARKIT52_DIM = 52
ARKIT_INDEX: dict[str, int] = {n: i for i, n in enumerate(ARKIT52_NAMES)}

# --- LIVELINK61 ----------------------------------------------------------------------------------------------------
LIVELINK_EXTRA_NAMES: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll",
    "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
LIVELINK61_DIM = 61
LIVELINK_HEAD = slice(52, 55)  # yaw, pitch, roll (radians)
LIVELINK_LEFT_EYE = slice(55, 58)
LIVELINK_RIGHT_EYE = slice(58, 61)


def arkit_to_livelink_name(name: str) -> str:
    """``eyeBlinkLeft`` -> ``EyeBlinkLeft``. Raises KeyError for a name that is not an ARKit curve."""
    if name not in ARKIT_INDEX:
        raise KeyError(f"unknown ARKit curve name {name!r}")
    return name[0].upper() + name[1:]


def livelink_to_arkit_name(name: str) -> str:
    """``EyeBlinkLeft`` -> ``eyeBlinkLeft``. Raises KeyError for a name that is not a Live Link ARKit curve."""
    arkit = name[:1].lower() + name[1:]
    if arkit not in ARKIT_INDEX or name != arkit_to_livelink_name(arkit):
        raise KeyError(f"unknown Live Link curve name {name!r}")
    return arkit


LIVELINK61_NAMES: tuple[str, ...] = tuple(arkit_to_livelink_name(n) for n in ARKIT52_NAMES) + LIVELINK_EXTRA_NAMES
LIVELINK_INDEX: dict[str, int] = {n: i for i, n in enumerate(LIVELINK61_NAMES)}


def _mirror_name(name: str) -> str:
    if name.endswith("Left"):
        return name[: -len("Left")] + "Right"
    if name.endswith("Right"):
        return name[: -len("Right")] + "Left"
    return name


# Left/right mirror permutation of ARKIT52: ``mirrored = frames[..., ARKIT52_MIRROR]``.
# Curves without a side (jawOpen, browInnerUp, ...) map to themselves; jawLeft<->jawRight and mouthLeft<->mouthRight
# swap, which is the correct mirror of a sideways jaw or mouth motion.
ARKIT52_MIRROR: tuple[int, ...] = tuple(ARKIT_INDEX[_mirror_name(n)] for n in ARKIT52_NAMES)


# --- registry ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """A named face-frame layout. ``layout_id`` is the stable number used on the wire and in files."""

    name: str
    layout_id: int
    names: tuple[str, ...]
    mirror: tuple[int, ...] | None = None  # left/right permutation, None when the layout has no simple mirror

    @property
    def dim(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"curve {name!r} is not in layout {self.name}") from None


FLAME58 = Layout("flame58", 1, FLAME58_NAMES)
ARKIT52 = Layout("arkit52", 2, ARKIT52_NAMES, ARKIT52_MIRROR)
LIVELINK61 = Layout("livelink61", 3, LIVELINK61_NAMES)
LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (FLAME58, ARKIT52, LIVELINK61)}
LAYOUTS_BY_ID: dict[int, Layout] = {lay.layout_id: lay for lay in LAYOUTS.values()}


def get_layout(name_or_id: str | int) -> Layout:
    """Look a layout up by name (``"arkit52"``) or wire id; raises KeyError with the known names."""
    table = LAYOUTS_BY_ID if isinstance(name_or_id, int) else LAYOUTS
    try:
        return table[name_or_id]  # type: ignore[index]
    except KeyError:
        raise KeyError(f"unknown face layout {name_or_id!r}; known: {sorted(LAYOUTS)}") from None


def layout_for_dim(dim: int) -> Layout:
    """The layout whose frames have ``dim`` values (58, 52 or 61)."""
    for lay in LAYOUTS.values():
        if lay.dim == dim:
            return lay
    raise KeyError(f"no face layout has {dim} values per frame; known: 58 (flame58), 52 (arkit52), 61 (livelink61)")


assert len(ARKIT52_NAMES) == ARKIT52_DIM and len(LIVELINK61_NAMES) == LIVELINK61_DIM and len(FLAME58_NAMES) == 58
