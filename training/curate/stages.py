"""The curation stages' backends: ASR, face-parameter import, emotion labels, QA generation, question TTS.

Each backend is chosen by name (a built-in) or ``package.module:attribute`` (a class or factory called with no
arguments), so users plug in their own without touching the pipeline:

- ASR (:func:`get_asr`): ``auto`` (a ``{stem}.txt`` transcript next to the clip, else faster-whisper, else
  openai-whisper, whichever is installed), ``transcripts`` (sidecar ``.txt`` only), ``faster-whisper``, ``whisper``.
  Interface: ``transcribe(wav_path) -> str``.
- Face parameters (:func:`import_face`): files the user produced next to the clip: ``{stem}.smirk.npz`` (SMIRK FLAME
  outputs: ``expression_params [T,50]``, ``jaw_params [T,3]``, optional ``pose_params [T,3]``,
  ``eyelid_params [T,2]``, ``fps``) -> FLAME58; ``{stem}.mediapipe.csv`` / ``.mediapipe.json`` (MediaPipe
  FaceLandmarker blendshape scores, ARKit names; CSV: a header of category names and optional ``timestamp_ms``;
  JSON: a list of frames, each ``{name: score}`` or ``[{"categoryName", "score"}]``) -> ARKIT52; or
  ``{stem}.face.npz`` / ``.face.csv`` / ``.face.json`` in any format :func:`a2llm_rt.face.io.load_clip` reads.
- Emotion (:func:`get_emotion`): ``sidecar`` (``{stem}.emotion.txt``, else ``neutral``), ``none``.
  Interface: ``label(wav_path, transcript) -> str | None``.
- QA (:class:`ChatClient`): any OpenAI-compatible ``/chat/completions`` endpoint over stdlib ``urllib``; the prompt is
  ``training/curate/prompts/qa.txt``.
- TTS (:func:`get_tts`): ``espeak-ng`` (built in: ``espeak-ng -w out.wav TEXT``), ``none``.
  Interface: ``synthesize(text, out_wav_path) -> None``.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.layouts import ARKIT52_NAMES, FLAME58_DIM

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


class StageSkipped(Exception):
    """A stage cannot run for this clip (a backend is missing); the message says what to install or provide."""


def _plugin(spec: str):
    mod, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)()
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot load plugin {spec!r}: {e}") from None


# ---- ASR ------------------------------------------------------------------------------------------------------------
class SidecarTranscripts:
    """Reads ``{stem}.txt`` next to the clip."""

    def transcribe(self, wav: Path) -> str:
        txt = wav.with_suffix(".txt")
        if not txt.is_file():
            raise StageSkipped(f"no transcript {txt.name} (and no ASR backend)")
        return txt.read_text().strip()


class FasterWhisperASR:
    def __init__(self, model: str = "small"):
        from faster_whisper import WhisperModel

        self.model = WhisperModel(model, device="auto")

    def transcribe(self, wav: Path) -> str:
        segments, _ = self.model.transcribe(str(wav))
        return " ".join(s.text.strip() for s in segments).strip()


class OpenAIWhisperASR:
    def __init__(self, model: str = "small"):
        import whisper

        self.model = whisper.load_model(model)

    def transcribe(self, wav: Path) -> str:
        return str(self.model.transcribe(str(wav))["text"]).strip()


class AutoASR:
    """Sidecar transcript when present, else the first installed Whisper (loaded on first need)."""

    def __init__(self, model: str = "small"):
        self.model_name = model
        self._backend = None
        self._tried = False

    def _whisper(self):
        if not self._tried:
            self._tried = True
            for cls, mod in ((FasterWhisperASR, "faster_whisper"), (OpenAIWhisperASR, "whisper")):
                if importlib.util.find_spec(mod) is not None:
                    self._backend = cls(self.model_name)
                    break
        return self._backend

    def transcribe(self, wav: Path) -> str:
        if wav.with_suffix(".txt").is_file():
            return SidecarTranscripts().transcribe(wav)
        backend = self._whisper()
        if backend is None:
            raise StageSkipped(
                f"ASR skipped: no transcript {wav.with_suffix('.txt').name} and neither faster-whisper nor "
                "openai-whisper is installed (pip install faster-whisper, or provide transcripts)"
            )
        return backend.transcribe(wav)


def get_asr(name: str, model: str = "small"):
    if name == "auto":
        return AutoASR(model)
    if name == "transcripts":
        return SidecarTranscripts()
    if name == "faster-whisper":
        return FasterWhisperASR(model)
    if name == "whisper":
        return OpenAIWhisperASR(model)
    return _plugin(name)


# ---- face parameters ------------------------------------------------------------------------------------------------
FACE_SUFFIXES = (".smirk.npz", ".mediapipe.csv", ".mediapipe.json", ".face.npz", ".face.csv", ".face.json")
_ARKIT_LOWER = {n.lower(): i for i, n in enumerate(ARKIT52_NAMES)}


def find_face_file(wav: Path) -> Path | None:
    for suf in FACE_SUFFIXES:
        p = wav.parent / (wav.stem + suf)
        if p.is_file():
            return p
    return None


def _first(npz, *names: str):
    for n in names:
        if n in npz.files:
            return np.asarray(npz[n], dtype=np.float32)
    return None


def import_smirk(path: Path, default_fps: float) -> MotionClip:
    """SMIRK per-frame FLAME outputs (``.smirk.npz``) -> FLAME58 clip (missing pose/eyelids are zeros)."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable SMIRK npz: {e}", path) from None
    exp = _first(z, "expression_params", "expression", "exp")
    jaw = _first(z, "jaw_params", "jaw_pose", "jaw")
    if exp is None or jaw is None:
        raise InputError(f"SMIRK npz needs expression_params and jaw_params, has {z.files}", path)
    t = exp.shape[0]
    pose = _first(z, "pose_params", "global_pose", "pose")
    lids = _first(z, "eyelid_params", "eyelids")
    out = np.zeros((t, FLAME58_DIM), np.float32)
    out[:, : min(50, exp.shape[1])] = exp[:, :50]
    out[:, 50:53] = jaw.reshape(t, 3)
    if pose is not None:
        out[:, 53:56] = pose.reshape(t, -1)[:, :3]
    if lids is not None:
        out[:, 56:58] = lids.reshape(t, 2)
    fps = float(z["fps"]) if "fps" in z.files else default_fps
    clip = MotionClip(out, fps, "flame58", {"source": str(path), "importer": "smirk"})
    clip.validate(path)
    return clip


def _arkit_row(scores: dict[str, float]) -> np.ndarray:
    row = np.zeros(len(ARKIT52_NAMES), np.float32)
    for name, v in scores.items():
        i = _ARKIT_LOWER.get(str(name).lower())
        if i is not None:
            row[i] = float(v)
    return row


def import_mediapipe(path: Path, default_fps: float) -> MotionClip:
    """MediaPipe blendshape scores (CSV or JSON, ARKit names; ``_neutral`` ignored, ``tongueOut`` 0) -> ARKIT52."""
    times: list[float] = []
    rows: list[np.ndarray] = []
    try:
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                for rec in csv.DictReader(f):
                    if "timestamp_ms" in rec:
                        times.append(float(rec["timestamp_ms"]) / 1000)
                    rows.append(_arkit_row({k: v for k, v in rec.items() if k.lower() in _ARKIT_LOWER}))
        else:
            for fr in json.loads(path.read_text()):
                if isinstance(fr, dict) and "blendshapes" in fr:
                    if "timestamp_ms" in fr:
                        times.append(float(fr["timestamp_ms"]) / 1000)
                    fr = fr["blendshapes"]
                if isinstance(fr, list):
                    fr = {c["categoryName"]: c["score"] for c in fr}
                rows.append(_arkit_row(fr))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"unreadable MediaPipe blendshapes: {e}", path) from None
    if not rows:
        raise InputError("no frames", path)
    fps = default_fps
    if len(times) == len(rows) and len(times) > 1 and times[-1] > times[0]:
        fps = (len(times) - 1) / (times[-1] - times[0])
    clip = MotionClip(np.stack(rows), fps, "arkit52", {"source": str(path), "importer": "mediapipe"})
    clip.validate(path)
    return clip


def import_face(path: Path, default_fps: float) -> MotionClip:
    """Read a face-parameter file (see the module docstring) into a clip at its own frame rate."""
    name = path.name
    if name.endswith(".smirk.npz"):
        return import_smirk(path, default_fps)
    if name.endswith((".mediapipe.csv", ".mediapipe.json")):
        return import_mediapipe(path, default_fps)
    from a2llm_rt.face.io import convert_layout, load_clip

    clip = load_clip(path)
    return clip if clip.layout in ("flame58", "arkit52") else convert_layout(clip, "arkit52")


# ---- emotion --------------------------------------------------------------------------------------------------------
class SidecarEmotion:
    """``{stem}.emotion.txt`` when present, else ``neutral``."""

    def label(self, wav: Path, transcript: str) -> str | None:
        p = wav.with_suffix(".emotion.txt")
        return p.read_text().strip() if p.is_file() else "neutral"


class NoEmotion:
    def label(self, wav: Path, transcript: str) -> str | None:
        return None


def get_emotion(name: str):
    return {"sidecar": SidecarEmotion, "none": NoEmotion}.get(name, lambda: _plugin(name))()


# ---- QA generation --------------------------------------------------------------------------------------------------
def load_prompt(name: str = "qa.txt") -> str:
    return (PROMPT_DIR / name).read_text()


class ChatClient:
    """Minimal OpenAI-compatible chat client (stdlib urllib): ``POST {base_url}/chat/completions``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0, retries: int = 3):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries

    def complete(self, prompt: str, temperature: float = 0.7) -> str:
        body = json.dumps(
            {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": temperature}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return str(json.loads(r.read())["choices"][0]["message"]["content"])
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
                last = e
                time.sleep(0.2 * 2**attempt)
        raise RuntimeError(f"chat endpoint {self.url} failed after {self.retries} tries: {last}")


def parse_question(reply: str) -> str:
    """The question from the model's reply: JSON ``{"question": ...}`` (possibly inside other text), else the text."""
    start, end = reply.find("{"), reply.rfind("}")
    if start >= 0 and end > start:
        try:
            q = json.loads(reply[start : end + 1]).get("question")
            if isinstance(q, str) and q.strip():
                return q.strip()
        except (ValueError, AttributeError):
            pass
    q = reply.strip().strip('"').strip()
    if not q:
        raise ValueError("empty reply from the chat endpoint")
    return q


def generate_question(client: ChatClient, transcript: str, prompt: str) -> str:
    return parse_question(client.complete(prompt.replace("{answer}", transcript)))


# ---- TTS ------------------------------------------------------------------------------------------------------------
class EspeakTTS:
    """``espeak-ng -w out.wav TEXT`` (22.05 kHz PCM16)."""

    def __init__(self, voice: str | None = None):
        self.exe = shutil.which("espeak-ng")
        self.voice = voice

    def synthesize(self, text: str, out: Path) -> None:
        if self.exe is None:
            raise StageSkipped("TTS skipped: espeak-ng is not installed (apt-get install espeak-ng)")
        cmd = [self.exe, "-w", str(out)] + (["-v", self.voice] if self.voice else []) + ["--", text]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or not out.is_file():
            raise RuntimeError(f"espeak-ng failed ({r.returncode}): {r.stderr.strip()[:200]}")


class NoTTS:
    def synthesize(self, text: str, out: Path) -> None:
        raise StageSkipped("TTS disabled (--tts none)")


def get_tts(name: str):
    return {"espeak-ng": EspeakTTS, "espeak": EspeakTTS, "none": NoTTS}.get(name, lambda: _plugin(name))()
