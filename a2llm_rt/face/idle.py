"""Idle life: a seeded streaming generator of 25 fps face frames between turns, and the crossfade into and out of
speech.

Between answers a character must not freeze. :class:`IdleGenerator` streams LIVELINK61 frames (ARKIT52 = the first 52
values, FLAME58 through :func:`idle_to_layout`) with four independent processes, every rate in :class:`IdleConfig`:

- **blinks**, both eyes together (a per-eye amplitude jitter of a few percent): inter-blink intervals drawn from a
  gamma distribution (shape 2.5, a refractory minimum) whose mean gives the configured rate. Rates: Bentivoglio et al.
  1997 (Mov Disord 12(6):1028-1034, 150 healthy adults): **17 blinks/min at rest, 26/min in conversation, 4.5/min
  reading**; the idle default is the rest rate, listening (attending to a speaker) uses a lower rate of our choice
  (14/min, between rest and reading; not a measured value). Durations (lid leaves and returns to open): log-normal
  with a median of 0.25 s clipped to [0.1, 0.45] s, within the few-hundred-millisecond spontaneous blink durations of
  alert subjects measured by Caffier et al. 2003 (Eur J Appl Physiol 89:319-325) and close to the Live Link capture
  in ``../shared/data`` (see the README); the lid closes faster than it reopens (closing ~1/3 of the blink,
  VanderWerf et al. 2003, J Neurophysiol 89:2784-2796).
- **saccades**: gaze jumps around the listener's face with exponentially distributed fixation times (mean 0.9 s idle,
  1.4 s listening) and amplitudes (mean 3 degrees, at most 8), and returns to mutual gaze half the time: the
  statistical gaze model of Lee, Badler & Badler 2002 ("Eyes Alive", SIGGRAPH), whose amplitudes are mostly below
  15 degrees and longer in listening mode than in talking mode. A saccade lasts ``25 ms + 2.4 ms/deg`` (the main
  sequence used there), i.e. one 40 ms frame for the amplitudes here, so at 25 fps it is a one-frame step.
- **breathing**: a head pitch oscillation at 15 breaths/min (adult resting range 12-20/min), 0.3 degrees.
- **head motion**: a sum of three slow sinusoids per axis (0.05-0.3 Hz, seeded phases), about 1 degree.

**Listening** (while the player speaks; :meth:`IdleGenerator.set_listening`): eased in and out over
``listen_ramp_s``: fewer and smaller saccades, a lower blink rate, a slight head tilt and inner-brow raise.

Transitions: :class:`Crossfader` mixes the idle stream with answer frames (raised-cosine weight over
``crossfade_frames``); when the answer ends it holds the answer's last frame and fades back to idle, so neither the
first nor the last answer frame pops (tested: frame-to-frame jumps stay below a bound).

Streaming contract (:mod:`a2llm_rt.streaming`): weights/config are shared, per-session state is a typed dataclass
(:class:`IdleState`, :class:`CrossfadeState`); ``step(n, state)`` returns ``(frames, new_state)`` and never modifies
``state`` in place; the same seed gives the same frames whatever the chunking (tested). States are numpy/python, not
torch (nothing here is a tensor network): they derive :class:`~a2llm_rt.streaming.StreamingState` as host-side
states, which hold one stream and refuse the batch operations (``reset`` in favour of ``init_state``).

Axis conventions follow :mod:`a2llm_rt.face.flame_to_arkit`: ``HeadYaw`` > 0 turns toward the subject's right,
``HeadPitch`` > 0 raises the chin, ``HeadRoll`` > 0 tilts toward the right shoulder; eye yaw/pitch likewise.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from a2llm_rt.audio import FACE_FPS
from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.face.flame_to_arkit import EYELID_SCALE, head_to_flame_global
from a2llm_rt.face.layouts import (
    ARKIT52_DIM,
    ARKIT_INDEX,
    FLAME58_DIM,
    FLAME_EYELIDS,
    FLAME_GLOBAL,
    LIVELINK61_DIM,
    LIVELINK_HEAD,
    LIVELINK_LEFT_EYE,
    LIVELINK_RIGHT_EYE,
    get_layout,
)
from a2llm_rt.streaming import StreamingState

_DEG = math.pi / 180.0


@dataclasses.dataclass
class IdleConfig(Config):
    """Parameters of idle life (sources in the module docstring)."""

    fps: float = FACE_FPS
    """Frame rate of the face stream (the project's motion rate)."""
    blink_rate_per_min: float = 17.0
    """Mean spontaneous blink rate at rest (Bentivoglio et al. 1997: 17/min)."""
    blink_rate_listening_per_min: float = 14.0
    """Blink rate while listening (our choice, between rest and reading rates)."""
    blink_interval_shape: float = 2.5
    """Gamma shape of the inter-blink intervals (1 = Poisson; larger = more regular)."""
    blink_min_interval_s: float = 0.5
    """Refractory gap between the end of one blink and the start of the next."""
    blink_duration_median_s: float = 0.25
    blink_duration_range_s: tuple[float, float] = (0.1, 0.45)
    """Blink durations: log-normal (sigma 0.3) around the median, clipped to this range (Caffier et al. 2003)."""
    blink_close_fraction: float = 0.35
    """Part of a blink spent closing (the lid reopens more slowly; VanderWerf et al. 2003)."""
    blink_amplitude: float = 0.95
    blink_eye_jitter: float = 0.03
    """Per-eye amplitude jitter (both eyes blink together, not identically)."""
    saccade_interval_mean_s: float = 0.9
    saccade_interval_listening_mean_s: float = 1.4
    saccade_min_interval_s: float = 0.2
    saccade_amplitude_mean_deg: float = 3.0
    saccade_amplitude_max_deg: float = 8.0
    saccade_listening_amplitude_scale: float = 0.6
    saccade_return_probability: float = 0.5
    """Probability that a saccade returns to mutual gaze (the listener's eyes)."""
    gaze_full_scale_deg: float = 30.0
    """Eye rotation at which an ARKit eyeLook curve reaches 1."""
    breath_rate_per_min: float = 15.0
    breath_pitch_deg: float = 0.3
    head_amplitude_deg: tuple[float, float, float] = (1.2, 0.8, 0.6)
    """Slow head sway amplitude (yaw, pitch, roll)."""
    head_frequency_range_hz: tuple[float, float] = (0.05, 0.3)
    listen_ramp_s: float = 0.4
    """Time to ease into / out of the listening posture."""
    listen_head_deg: tuple[float, float, float] = (0.0, -1.5, 2.5)
    """Listening posture offset (yaw, pitch, roll): chin slightly down, head tilted toward the speaker."""
    listen_brow_inner_up: float = 0.12

    def validate(self) -> None:
        if not 1.0 <= self.fps <= 240.0:
            raise ValueError(f"fps must be in [1, 240], got {self.fps}")
        for name in ("blink_rate_per_min", "blink_rate_listening_per_min"):
            if not 0.5 <= getattr(self, name) <= 60.0:
                raise ValueError(f"{name} must be in [0.5, 60] blinks/min")
        lo, hi = self.blink_duration_range_s
        if not 0.04 <= lo <= self.blink_duration_median_s <= hi <= 1.0:
            raise ValueError("need 0.04 <= blink_duration_range_s[0] <= median <= range[1] <= 1 s")
        if self.blink_min_interval_s * self.blink_rate_per_min / 60.0 >= 0.9:
            raise ValueError("blink_min_interval_s leaves no room for the blink rate")
        if not 0.1 <= self.blink_close_fraction <= 0.9 or not 0.0 < self.blink_amplitude <= 1.0:
            raise ValueError("blink_close_fraction must be in [0.1, 0.9] and blink_amplitude in (0, 1]")
        if not 0.0 <= self.blink_eye_jitter <= 0.2 or self.blink_interval_shape < 1.0:
            raise ValueError("blink_eye_jitter in [0, 0.2] and blink_interval_shape >= 1 are required")
        if min(self.saccade_interval_mean_s, self.saccade_interval_listening_mean_s) <= self.saccade_min_interval_s:
            raise ValueError("saccade interval means must exceed saccade_min_interval_s")
        if not 0.0 < self.saccade_amplitude_mean_deg <= self.saccade_amplitude_max_deg <= 30.0:
            raise ValueError("need 0 < saccade_amplitude_mean_deg <= saccade_amplitude_max_deg <= 30")
        if not 0.0 <= self.saccade_return_probability <= 1.0 or self.gaze_full_scale_deg <= 0:
            raise ValueError("saccade_return_probability in [0, 1] and gaze_full_scale_deg > 0 are required")
        if not 4.0 <= self.breath_rate_per_min <= 40.0 or self.listen_ramp_s <= 0:
            raise ValueError("breath_rate_per_min in [4, 40] and listen_ramp_s > 0 are required")
        if any(abs(a) > 10.0 for a in (*self.head_amplitude_deg, *self.listen_head_deg, self.breath_pitch_deg)):
            raise ValueError("head motion amplitudes above 10 degrees are not idle motion")
        f0, f1 = self.head_frequency_range_hz
        if not 0.0 < f0 <= f1 <= 2.0:
            raise ValueError("head_frequency_range_hz must satisfy 0 < low <= high <= 2")


@dataclasses.dataclass
class IdleState(StreamingState):
    """One session's idle-life state (plain values; the generator's numpy PCG64 state travels with it)."""

    rng: dict
    """``np.random.PCG64().state`` of this session's generator."""
    frame: int = 0
    listening: bool = False
    listen_level: float = 0.0
    next_blink_s: float = 0.0
    blink_start_s: float = -1.0
    blink_duration_s: float = 0.2
    blink_amp: tuple[float, float] = (0.95, 0.95)
    next_saccade_s: float = 0.0
    gaze_deg: tuple[float, float] = (0.0, 0.0)
    """Current gaze (yaw, pitch) in degrees, relative to mutual gaze."""
    head_phases: tuple[float, ...] = ()
    head_freqs: tuple[float, ...] = ()
    breath_phase: float = 0.0


def _gen(state: IdleState) -> np.random.Generator:
    bg = np.random.PCG64()
    bg.state = state.rng
    return np.random.Generator(bg)


class IdleGenerator:
    """Streams idle LIVELINK61 frames ``[n, 61]`` float32 (ARKit values in [0, 1], angles in radians)."""

    def __init__(self, config: IdleConfig | None = None):
        self.cfg = config or IdleConfig()

    # ---- state -----------------------------------------------------------------------------------------------------
    def init_state(self, seed: int) -> IdleState:
        """A fresh session state; the same seed gives the same frames."""
        if not isinstance(seed, int) or seed < 0:
            raise InputError(f"idle seed must be a non-negative int, got {seed!r}")
        g = np.random.Generator(np.random.PCG64(seed))
        f0, f1 = self.cfg.head_frequency_range_hz
        st = IdleState(
            rng={},
            head_phases=tuple(float(x) for x in g.uniform(0, 2 * math.pi, 9)),
            head_freqs=tuple(float(x) for x in g.uniform(f0, f1, 9)),
            breath_phase=float(g.uniform(0, 2 * math.pi)),
        )
        st.rng = g.bit_generator.state
        # the first blink and saccade come after a random part of an interval, not all at t = 0
        st.next_blink_s = float(g.uniform(0.0, 60.0 / self.cfg.blink_rate_per_min))
        st.next_saccade_s = float(g.uniform(0.0, self.cfg.saccade_interval_mean_s))
        st.rng = g.bit_generator.state
        return st

    def set_listening(self, state: IdleState, listening: bool) -> IdleState:
        """A new state whose posture eases toward listening (True, the player speaks) or idle (False)."""
        return dataclasses.replace(state, listening=bool(listening))

    # ---- processes -------------------------------------------------------------------------------------------------
    def _blink_interval(self, g: np.random.Generator, listening: bool) -> float:
        c = self.cfg
        rate = c.blink_rate_listening_per_min if listening else c.blink_rate_per_min
        mean = 60.0 / rate - c.blink_min_interval_s - c.blink_duration_median_s
        k = c.blink_interval_shape
        return c.blink_min_interval_s + float(g.gamma(k, max(mean, 0.05) / k))

    def _blink_value(self, t: float, st: IdleState) -> float:
        """Lid closure 0..1 (before amplitude) at time ``t`` for the blink in ``st`` (0 outside it)."""
        u = (t - st.blink_start_s) / st.blink_duration_s
        if st.blink_start_s < 0 or not 0.0 <= u < 1.0:
            return 0.0
        a = self.cfg.blink_close_fraction
        if u < a:  # closing: ease-in-out up to fully closed
            return 0.5 - 0.5 * math.cos(math.pi * u / a)
        return 0.5 + 0.5 * math.cos(math.pi * (u - a) / (1.0 - a))

    def step(self, n: int, state: IdleState) -> tuple[np.ndarray, IdleState]:
        """The next ``n`` frames ``[n, 61]`` float32 and the new state (``state`` is not modified)."""
        if not isinstance(n, int) or n < 0:
            raise InputError(f"frame count must be a non-negative int, got {n!r}")
        c = self.cfg
        st = dataclasses.replace(state)
        g = _gen(st)
        out = np.zeros((n, LIVELINK61_DIM), dtype=np.float64)
        dt = 1.0 / c.fps
        ramp = dt / c.listen_ramp_s
        for i in range(n):
            t = st.frame * dt
            target = 1.0 if st.listening else 0.0
            st.listen_level += max(-ramp, min(ramp, target - st.listen_level))
            lw = 0.5 - 0.5 * math.cos(math.pi * st.listen_level)  # eased listening weight
            # blinks
            if st.blink_start_s >= 0 and t >= st.blink_start_s + st.blink_duration_s:
                st.blink_start_s = -1.0
            if st.blink_start_s < 0 and t >= st.next_blink_s:
                lo, hi = c.blink_duration_range_s
                st.blink_duration_s = float(np.clip(c.blink_duration_median_s * math.exp(0.3 * g.normal()), lo, hi))
                st.blink_start_s = st.next_blink_s
                j = g.uniform(-c.blink_eye_jitter, c.blink_eye_jitter, 2)
                st.blink_amp = (float(min(1.0, c.blink_amplitude + j[0])), float(min(1.0, c.blink_amplitude + j[1])))
                st.next_blink_s = st.blink_start_s + st.blink_duration_s + self._blink_interval(g, lw > 0.5)
            b = self._blink_value(t, st)
            out[i, ARKIT_INDEX["eyeBlinkLeft"]] = b * st.blink_amp[0]
            out[i, ARKIT_INDEX["eyeBlinkRight"]] = b * st.blink_amp[1]
            # saccades (a one-frame step at 25 fps: 25 ms + 2.4 ms/deg < 40 ms for amplitudes below 6 degrees)
            if t >= st.next_saccade_s:
                scale = 1.0 + (c.saccade_listening_amplitude_scale - 1.0) * lw
                if g.uniform() < c.saccade_return_probability:
                    st.gaze_deg = (0.0, 0.0)
                else:
                    amp = min(float(g.exponential(c.saccade_amplitude_mean_deg)), c.saccade_amplitude_max_deg)
                    ang = float(g.uniform(0, 2 * math.pi))
                    st.gaze_deg = (amp * scale * math.cos(ang), 0.6 * amp * scale * math.sin(ang))
                mean = (
                    c.saccade_interval_mean_s + (c.saccade_interval_listening_mean_s - c.saccade_interval_mean_s) * lw
                )
                st.next_saccade_s = t + c.saccade_min_interval_s + float(g.exponential(mean - c.saccade_min_interval_s))
            yaw, pitch = st.gaze_deg
            self._write_gaze(out[i], yaw, pitch)
            # head: slow sway + breathing + listening posture
            head = np.zeros(3)
            for axis in range(3):
                ph = st.head_phases[3 * axis : 3 * axis + 3]
                fr = st.head_freqs[3 * axis : 3 * axis + 3]
                sway = sum(math.sin(2 * math.pi * f * t + p) for f, p in zip(fr, ph, strict=True)) / 3.0
                head[axis] = c.head_amplitude_deg[axis] * sway + c.listen_head_deg[axis] * lw
            head[1] += c.breath_pitch_deg * math.sin(2 * math.pi * c.breath_rate_per_min / 60.0 * t + st.breath_phase)
            out[i, LIVELINK_HEAD] = head * _DEG
            out[i, ARKIT_INDEX["browInnerUp"]] = c.listen_brow_inner_up * lw
            st.frame += 1
        out[:, :ARKIT52_DIM] = np.clip(out[:, :ARKIT52_DIM], 0.0, 1.0)
        st.rng = g.bit_generator.state
        return out.astype(np.float32), st

    def _write_gaze(self, frame: np.ndarray, yaw_deg: float, pitch_deg: float) -> None:
        """ARKit eyeLook curves and Live Link eye rotations for a gaze (yaw > 0: toward the subject's right)."""
        fs = self.cfg.gaze_full_scale_deg
        right, left = max(yaw_deg, 0.0) / fs, max(-yaw_deg, 0.0) / fs
        up, down = max(pitch_deg, 0.0) / fs, max(-pitch_deg, 0.0) / fs
        # looking to the subject's right: the left eye turns inward (toward the nose), the right eye outward
        frame[ARKIT_INDEX["eyeLookInLeft"]] = right
        frame[ARKIT_INDEX["eyeLookOutRight"]] = right
        frame[ARKIT_INDEX["eyeLookOutLeft"]] = left
        frame[ARKIT_INDEX["eyeLookInRight"]] = left
        for side in ("Left", "Right"):
            frame[ARKIT_INDEX["eyeLookUp" + side]] = up
            frame[ARKIT_INDEX["eyeLookDown" + side]] = down
        for sl in (LIVELINK_LEFT_EYE, LIVELINK_RIGHT_EYE):
            frame[sl] = (yaw_deg * _DEG, pitch_deg * _DEG, 0.0)


def idle_to_layout(frames: np.ndarray, layout: str | int) -> np.ndarray:
    """LIVELINK61 idle frames ``[..., 61]`` -> ``layout`` (``arkit52``, ``livelink61`` or ``flame58``), float32.

    FLAME58 carries what maps cleanly: the blink as the eyelid parameters (``eyeBlink / EYELID_SCALE``, the inverse of
    :mod:`~a2llm_rt.face.flame_to_arkit`) and the head as the global pose; FLAME58 has no eye gaze and no brows
    outside the learned expression space, so saccades and the listening brow are dropped there.
    """
    lay = get_layout(layout)
    x = np.asarray(frames, dtype=np.float64)
    if x.shape[-1] != LIVELINK61_DIM:
        raise InputError(f"idle frames must be [..., {LIVELINK61_DIM}], got {x.shape}")
    if lay.name == "livelink61":
        return x.astype(np.float32)
    if lay.name == "arkit52":
        return x[..., :ARKIT52_DIM].astype(np.float32)
    out = np.zeros((*x.shape[:-1], FLAME58_DIM))
    out[..., FLAME_EYELIDS] = x[..., [ARKIT_INDEX["eyeBlinkLeft"], ARKIT_INDEX["eyeBlinkRight"]]] / EYELID_SCALE
    out[..., FLAME_GLOBAL] = head_to_flame_global(x[..., LIVELINK_HEAD])
    return out.astype(np.float32)


def blink_events(blink: np.ndarray, fps: float, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Blinks of an eyeBlink curve ``[T]``: (start times s ``[K]``, durations s ``[K]`` above ``threshold``).

    Used to compare the generator with a capture (both measured the same way, at their own frame rates)."""
    m = np.asarray(blink) > threshold
    e = np.diff(np.r_[0, m.astype(np.int8), 0])
    starts, ends = np.flatnonzero(e == 1), np.flatnonzero(e == -1)
    return starts / fps, (ends - starts) / fps


# ---- transitions --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CrossfadeState(StreamingState):
    """Weight of the answer in the output (0 idle .. 1 answer) and the last answer frame (held while fading out)."""

    level: int = 0
    """Frames into the fade, 0 (idle) .. ``crossfade_frames`` (answer)."""
    last_answer: np.ndarray | None = None


class Crossfader:
    """Mixes idle frames with answer frames so that neither the first nor the last answer frame pops.

    ``step(idle, answer, state)``: ``idle`` ``[n, D]``; ``answer`` ``[n, D]`` during an answer or ``None`` between
    answers. The answer weight moves by ``1 / crossfade_frames`` per frame toward 1 (answer) or 0 (idle) and is eased
    with a raised cosine; while fading out, the answer's last frame is held. A frame-to-frame jump of the output is
    then at most ``max(idle jump, answer jump) + (pi / 2) * |answer - idle| / crossfade_frames``.
    """

    def __init__(self, crossfade_frames: int = 6):
        if not isinstance(crossfade_frames, int) or crossfade_frames < 1:
            raise InputError(f"crossfade_frames must be a positive int, got {crossfade_frames!r}")
        self.n = crossfade_frames

    def init_state(self) -> CrossfadeState:
        return CrossfadeState()

    def step(
        self, idle: np.ndarray, answer: np.ndarray | None, state: CrossfadeState
    ) -> tuple[np.ndarray, CrossfadeState]:
        idle = np.asarray(idle, dtype=np.float32)
        if idle.ndim != 2:
            raise InputError(f"idle frames must be [n, D], got {idle.shape}")
        if answer is not None:
            answer = np.asarray(answer, dtype=np.float32)
            if answer.shape != idle.shape:
                raise InputError(f"answer frames {answer.shape} must match the idle frames {idle.shape}")
        last = state.last_answer
        if last is not None and last.shape[-1] != idle.shape[1]:
            last = None
        level = state.level
        out = np.empty_like(idle)
        for i in range(idle.shape[0]):
            if answer is not None:
                last = answer[i]
                level = min(self.n, level + 1)
            else:
                level = max(0, level - 1)
            if last is None or level == 0:
                out[i] = idle[i]
                continue
            w = 0.5 - 0.5 * math.cos(math.pi * level / self.n)
            out[i] = (1.0 - w) * idle[i] + w * last
        if level == 0:
            last = None
        return out, CrossfadeState(level=level, last_answer=None if last is None else last.copy())
