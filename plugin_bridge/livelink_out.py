"""Live Link Face UDP output: the face stream as the iPhone app's packets, so Unreal drives a MetaHuman unaided.

Frames arrive from turn workers in bursts (a window of 5 frames every 200 ms, or a whole answer at once); a single
sender thread releases them **paced at the frame rate**: frame ``k`` of a subject's stream leaves at
``t0 + (k - k0) / fps``, where ``t0`` is when frame ``k0`` (the turn's first) arrived. A frame up to ``MAX_LAG_S``
late leaves at once; later than that, the subject's clock is re-anchored to now (no burst of stale frames). Packet
frame numbers are timecode frames (frames since local midnight at the packet's rate, as the app sends), so Unreal
sees them increase. After a turn ends, one neutral frame (all 61 curves 0) follows the last one, so the face rests.

A protocol version 2 session (a game character, PROTOCOL.md §10) sends the same processed face its ZeroMQ client
gets: the answer through the character's face (crossfade from idle, emotion offsets), and, when the client asked for
idle frames, the idle face between turns (blinks, saccades, breathing, emotion); no neutral frame then: the idle
face follows the answer.

Each session is its own Live Link subject (``a2llm<session id>``); in Unreal pick it in the MetaHuman's
Blueprint (Live Link Face "LLink Face Subj").
"""

from __future__ import annotations

import datetime as _dt
import heapq
import itertools
import logging
import socket
import threading
import time
from fractions import Fraction

import numpy as np

from a2llm_rt.face.layouts import LIVELINK61_DIM
from a2llm_rt.face.livelink_packet import LiveLinkPacket

log = logging.getLogger("plugin_bridge.livelink")

LIVELINK_DEFAULT_PORT = 11111
MAX_LAG_S = 0.1  # a frame due longer ago than this re-anchors its subject's clock (no burst of stale frames)


def fps_fraction(fps: float) -> tuple[int, int]:
    """25.0 -> (25, 1); 29.97 -> (30000, 1001)."""
    f = Fraction(fps).limit_denominator(1001)
    return f.numerator, f.denominator


class LiveLinkSender:
    """Sends ``[n, 61]`` LIVELINK61 frames as Live Link Face UDP packets to ``host:port``, paced at their rate.

    Thread-safe: ``push``, ``rest`` and ``clear`` may be called from any thread. ``close()`` stops the sender.
    """

    def __init__(self, host: str, port: int = LIVELINK_DEFAULT_PORT, device_id: str = "a2llm-bridge"):
        self.address = (host, int(port))
        self.device_id = device_id
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self._heap: list[tuple[float, int, str, float, np.ndarray]] = []  # due, order, subject, fps, values [61]
        # subject -> (t0, k0, due of its last queued frame, next expected frame, fps): frame k is due at t0 + (k-k0)/fps
        self._clock: dict[str, tuple[float, int, float, int, float]] = {}
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="livelink-out", daemon=True)
        self._thread.start()

    def push(self, subject: str, first_frame: int, frames: np.ndarray, fps: float) -> None:
        """Queue ``frames`` ``[n, 61]`` (frames ``first_frame .. first_frame + n - 1`` of the subject's turn)."""
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2 or frames.shape[1] != LIVELINK61_DIM:
            raise ValueError(f"Live Link frames must be [n, {LIVELINK61_DIM}], got {list(frames.shape)}")
        now = time.monotonic()
        with self._cv:
            clock = self._clock.get(subject)
            if clock is None or first_frame != clock[3] or clock[4] != fps:  # a new stream (turn, idle): anchor
                # its clock now, or after the subject's frames still queued (a subject's streams never interleave)
                start = now if clock is None else max(now, clock[2] + 1.0 / clock[4])
                clock = (start, first_frame, start, first_frame, fps)
            t0, k0 = clock[0], clock[1]
            if t0 + (first_frame - k0) / fps < now - MAX_LAG_S:  # the producer fell behind: re-anchor, no burst
                t0, k0 = now, first_frame
            for i in range(frames.shape[0]):
                k = first_frame + i
                heapq.heappush(self._heap, (t0 + (k - k0) / fps, next(self._order), subject, fps, frames[i]))
            last_due = t0 + (first_frame + frames.shape[0] - 1 - k0) / fps
            self._clock[subject] = (t0, k0, last_due, first_frame + frames.shape[0], fps)
            self._cv.notify()

    def rest(self, subject: str) -> None:
        """Queue one neutral frame (all zeros) one frame after the subject's last queued frame."""
        with self._cv:
            clock = self._clock.pop(subject, None)
            if clock is None:
                return
            due = clock[2] + 1.0 / clock[4]
            zero = np.zeros(LIVELINK61_DIM, np.float32)
            heapq.heappush(self._heap, (due, next(self._order), subject, clock[4], zero))
            self._cv.notify()

    def clear(self, subject: str, rest: bool = True) -> None:
        """Drop the subject's queued frames (its turn was cancelled) and send one neutral frame now (``rest``; not
        for a game character, whose idle face follows)."""
        with self._cv:
            self._heap = [x for x in self._heap if x[2] != subject]
            heapq.heapify(self._heap)
            self._clock.pop(subject, None)
            if not rest:
                return
            zero = np.zeros(LIVELINK61_DIM, np.float32)
            heapq.heappush(self._heap, (time.monotonic(), next(self._order), subject, 25.0, zero))
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(2.0)
        self._sock.close()

    def _packet(self, subject: str, fps: float, values: np.ndarray) -> bytes:
        num, den = fps_fraction(fps)
        now = _dt.datetime.now()
        since_midnight = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        frame_f = since_midnight * num / den
        frame = int(frame_f)
        return LiveLinkPacket(self.device_id, subject, frame, frame_f - frame, num, den, values).encode()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic()))
                if self._closed:
                    return
                _, _, subject, fps, values = heapq.heappop(self._heap)
            try:
                self._sock.sendto(self._packet(subject, fps, values), self.address)
                self.sent += 1
            except OSError as e:  # an unreachable Live Link host must not stop the server
                log.warning("Live Link UDP send to %s failed: %s", self.address, e)
