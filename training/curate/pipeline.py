"""The curation pipeline: per-clip stages with cached outputs, a manifest, a process pool or Ray, and packing.

Input: ``--clips DIR`` holds ``{stem}.wav`` clips (the person's speech = the answer) and, next to each, the files the
user produced: face parameters (see :mod:`training.curate.stages`), optionally ``{stem}.txt`` (transcript) and
``{stem}.emotion.txt``. Output ``--out DIR``::

    OUT/work/{stem}/asr.json  face.npz  emotion.json  qa.json  question_aqaa.wav  question_repeat.wav
    OUT/manifest.json         per clip and stage: done | cached | skipped: why | failed: why
    OUT/dataset/              the FLAME-QA shards (rebuilt from the work folder at the end of every run)

Resumable and idempotent: a stage whose output exists (with the same settings fingerprint) is not run again, every
output is written atomically, and a crash only loses the stage in flight. Stages per clip: ``asr`` -> ``face`` ->
``emotion`` -> ``qa`` (needs ``--llm-url``) -> ``tts`` (question speech for AQAA and Repeat). Packing makes, per
clip, the samples its outputs allow: TTS and ASR (transcript + audio + face), Repeat (+ repeat question speech), AQAA
(+ generated question and its speech).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from a2llm_rt.audio import read_wav, write_wav
from a2llm_rt.audio import resample as resample_wave
from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.face.clip import MotionClip
from a2llm_rt.face.resample import resample
from a2llm_rt.utils.fileio import atomic_save_npz, atomic_write_json
from training.curate import stages as st
from training.data.format import ANSWER_SR, MOTION_FPS, QUESTION_SR, TASKS, FlameQASample, ShardWriter, expected_frames

STAGES = ("asr", "face", "emotion", "qa", "tts")


@dataclasses.dataclass
class CurateConfig(Config):
    """Settings of one curation run (CLI flags of ``python -m training.curate``)."""

    asr: str = "auto"
    """``auto`` | ``transcripts`` | ``faster-whisper`` | ``whisper`` | ``module:attr``."""
    asr_model: str = "small"
    face_fps: float = 30.0
    """Frame rate of face files that do not state theirs (the video's)."""
    emotion: str = "sidecar"
    """``sidecar`` | ``none`` | ``module:attr``."""
    llm_url: str | None = None
    """Base URL of an OpenAI-compatible API (``http://host:port/v1``); None: no AQAA questions."""
    llm_model: str = "gpt-4o-mini"
    llm_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (may be unset for local servers)."""
    prompt: str = "qa.txt"
    """Prompt file under ``training/curate/prompts``."""
    tts: str = "espeak-ng"
    """``espeak-ng`` | ``none`` | ``module:attr``."""
    tasks: tuple[str, ...] = TASKS
    max_pad_frames: int = 3
    """Motion may be this many frames shorter than the audio (padded with its last frame); more is a failure."""
    shard_samples: int = 256

    def validate(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"unknown tasks {bad}; known: {TASKS}")
        if self.face_fps <= 0:
            raise ValueError("face_fps must be > 0")


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


class _Backends:
    """Backends built lazily once per worker process."""

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg
        self._asr = self._emotion = self._tts = self._chat = None

    @property
    def asr(self):
        if self._asr is None:
            self._asr = st.get_asr(self.cfg.asr, self.cfg.asr_model)
        return self._asr

    @property
    def emotion(self):
        if self._emotion is None:
            self._emotion = st.get_emotion(self.cfg.emotion)
        return self._emotion

    @property
    def tts(self):
        if self._tts is None:
            self._tts = st.get_tts(self.cfg.tts)
        return self._tts

    @property
    def chat(self):
        if self._chat is None and self.cfg.llm_url:
            self._chat = st.ChatClient(self.cfg.llm_url, self.cfg.llm_model, os.environ.get(self.cfg.llm_key_env))
        return self._chat


_WORKER: dict[str, _Backends] = {}


def _backends(cfg: CurateConfig) -> _Backends:
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _WORKER:
        _WORKER.clear()
        _WORKER[key] = _Backends(cfg)
    return _WORKER[key]


def process_clip(wav: str, out: str, cfg_dict: dict) -> dict[str, str]:
    """Run every stage of one clip (in a worker); returns {stage: status}. Never raises."""
    cfg = CurateConfig.from_dict(cfg_dict)
    b = _backends(cfg)
    wav_p = Path(wav)
    work = Path(out) / "work" / wav_p.stem
    work.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}

    def run(stage: str, output: Path, fingerprint: str, fn: Callable[[], None]) -> None:
        if output.is_file() and (_read_json(work / "fingerprints.json") or {}).get(stage) == fingerprint:
            status[stage] = "cached"
            return
        try:
            fn()
            fps = _read_json(work / "fingerprints.json") or {}
            fps[stage] = fingerprint
            atomic_write_json(work / "fingerprints.json", fps)
            status[stage] = "done"
        except st.StageSkipped as e:
            status[stage] = f"skipped: {e}"
        except InputError as e:
            status[stage] = f"failed: {e}"
        except Exception as e:  # a backend crashed: report it, keep the other clips going
            status[stage] = f"failed: {type(e).__name__}: {e} | {traceback.format_exc(limit=2).splitlines()[-1]}"

    def asr() -> None:
        atomic_write_json(work / "asr.json", {"text": b.asr.transcribe(wav_p)})

    def face() -> None:
        src = st.find_face_file(wav_p)
        if src is None:
            raise st.StageSkipped(f"no face-parameter file ({', '.join(wav_p.stem + s for s in st.FACE_SUFFIXES)})")
        clip = resample(st.import_face(src, cfg.face_fps), MOTION_FPS)
        atomic_save_npz(work / "face.npz", values=clip.values, fps=np.float32(clip.fps), layout=np.str_(clip.layout))

    run("asr", work / "asr.json", _fingerprint(cfg.asr, cfg.asr_model), asr)
    run("face", work / "face.npz", _fingerprint(str(cfg.face_fps)), face)
    transcript = (_read_json(work / "asr.json") or {}).get("text")

    def emotion() -> None:
        atomic_write_json(work / "emotion.json", {"label": b.emotion.label(wav_p, transcript or "")})

    run("emotion", work / "emotion.json", _fingerprint(cfg.emotion), emotion)
    prompt = st.load_prompt(cfg.prompt)

    def qa() -> None:
        if b.chat is None:
            raise st.StageSkipped("QA skipped: no --llm-url (no AQAA samples)")
        if not transcript:
            raise st.StageSkipped("QA skipped: no transcript")
        atomic_write_json(work / "qa.json", {"question": st.generate_question(b.chat, transcript, prompt)})

    if "aqaa" in cfg.tasks:
        run("qa", work / "qa.json", _fingerprint(prompt, cfg.llm_model, transcript or ""), qa)
    else:
        status["qa"] = "skipped: task aqaa not requested"
    question = (_read_json(work / "qa.json") or {}).get("question")
    texts = {"aqaa": question, "repeat": transcript}
    tts_status: list[str] = []
    for task in ("aqaa", "repeat"):
        text = texts[task]
        if task not in cfg.tasks or not text:
            continue

        def tts(text: str = text, task: str = task) -> None:
            tmp = work / f".tts_{task}.raw.wav"
            b.tts.synthesize(text, tmp)
            a, sr = read_wav(tmp)
            write_wav(work / f"question_{task}.wav", resample_wave(a, sr, QUESTION_SR), QUESTION_SR)
            tmp.unlink(missing_ok=True)

        run(f"tts_{task}", work / f"question_{task}.wav", _fingerprint(cfg.tts, text), tts)
        tts_status.append(f"{task} {status.pop(f'tts_{task}')}")
    status["tts"] = "; ".join(tts_status) or "skipped: no question text"
    return status


# ---- packing ---------------------------------------------------------------------------------------------------------
def _fit_motion(values: np.ndarray, frames: int, max_pad: int) -> np.ndarray | None:
    if len(values) >= frames:
        return values[:frames]
    if frames - len(values) > max_pad:
        return None
    return np.concatenate([values, np.repeat(values[-1:], frames - len(values), 0)])


def clip_samples(wav: Path, out: Path, cfg: CurateConfig) -> tuple[list[FlameQASample], list[str]]:
    """The samples that one clip's stage outputs allow, and why others were not made."""
    work = out / "work" / wav.stem
    notes: list[str] = []
    transcript = (_read_json(work / "asr.json") or {}).get("text")
    if not transcript:
        return [], ["no transcript"]
    audio, sr = read_wav(wav)
    emotion = (_read_json(work / "emotion.json") or {}).get("label")
    meta = {"source": str(wav)}
    q16 = resample_wave(audio, sr, QUESTION_SR)
    samples: list[FlameQASample] = []
    if "asr" in cfg.tasks:
        samples.append(
            FlameQASample(f"{wav.stem}-asr", "asr", transcript, question_audio=q16, emotion=emotion, meta=meta)
        )
    if not (work / "face.npz").is_file():
        return samples, [*notes, "no face parameters: only ASR"]
    z = np.load(work / "face.npz", allow_pickle=False)
    clip = MotionClip(np.asarray(z["values"], np.float32), float(z["fps"]), str(z["layout"]))
    a24 = resample_wave(audio, sr, ANSWER_SR)
    motion = _fit_motion(clip.values, expected_frames(len(a24)), cfg.max_pad_frames)
    if motion is None:
        return samples, [*notes, f"motion ({len(clip.values)} frames) much shorter than the audio"]
    common = dict(answer_text=transcript, answer_audio=a24, motion=motion, motion_layout=clip.layout, emotion=emotion)
    if "tts" in cfg.tasks:
        samples.append(FlameQASample(f"{wav.stem}-tts", "tts", question_text=transcript, meta=meta, **common))
    question = (_read_json(work / "qa.json") or {}).get("question")
    for task, qtext in (("repeat", transcript), ("aqaa", question)):
        qwav = work / f"question_{task}.wav"
        if task not in cfg.tasks:
            continue
        if not qwav.is_file() or not qtext:
            notes.append(f"no {task} question speech")
            continue
        qa, _ = read_wav(qwav)
        samples.append(
            FlameQASample(f"{wav.stem}-{task}", task, question_text=qtext, question_audio=qa, meta=meta, **common)
        )
    return samples, notes


def pack(clips: list[Path], out: Path, cfg: CurateConfig) -> tuple[int, dict[str, list[str]]]:
    """Rebuild ``OUT/dataset`` from the work folder (written beside, then swapped in). Returns (samples, notes)."""
    tmp = out / ".dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    notes: dict[str, list[str]] = {}
    n = 0
    with ShardWriter(tmp, cfg.shard_samples, attrs={"curation": cfg.to_dict()}) as w:
        for wav in clips:
            try:
                samples, why = clip_samples(wav, out, cfg)
            except InputError as e:
                samples, why = [], [str(e)]
            for s in samples:
                w.write(s)
            n += len(samples)
            if why:
                notes[wav.stem] = why
    final = out / "dataset"
    if final.exists():
        old = out / ".dataset.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return n, notes


# ---- driver ----------------------------------------------------------------------------------------------------------
def find_clips(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise InputError("clips folder does not exist", directory)
    clips = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith("."))
    if not clips:
        raise InputError("no .wav clips in folder", directory)
    stems = [c.stem for c in clips]
    if len(set(stems)) != len(stems):
        raise InputError("two clips share a file stem", directory)
    return clips


def _map_local(clips: list[Path], out: Path, cfg: CurateConfig, workers: int):
    args = [(str(c), str(out), cfg.to_dict()) for c in clips]
    if workers <= 1:
        for a in args:
            yield a[0], process_clip(*a)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futs = {pool.submit(process_clip, *a): a[0] for a in args}
        for f in as_completed(futs):
            yield futs[f], f.result()


def cfg_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _map_ray(clips: list[Path], out: Path, cfg: CurateConfig, address: str | None, local_mode: bool):
    try:
        import ray
    except ImportError:
        raise InputError(
            "--ray needs the 'ray' package (pip install 'ray[default]'); it is not installed in this environment"
        ) from None
    if not ray.is_initialized():
        if local_mode:  # a single-node Ray started here (Ray 2.x dropped the old in-process local_mode)
            ray.init(num_cpus=cfg_workers(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, ignore_reinit_error=True)
    task = ray.remote(process_clip)
    refs = {task.remote(str(c), str(out), cfg.to_dict()): str(c) for c in clips}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield refs[done[0]], ray.get(done[0])


def curate(
    clips_dir: Path,
    out: Path,
    cfg: CurateConfig,
    workers: int = 1,
    use_ray: bool = False,
    ray_address: str | None = None,
    ray_local_mode: bool = False,
    progress: bool = True,
) -> dict:
    """Run the pipeline; returns (and writes) the manifest."""
    clips = find_clips(clips_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = _read_json(manifest_path) or {"clips": {}}
    manifest["config"] = cfg.to_dict()
    it = _map_ray(clips, out, cfg, ray_address, ray_local_mode) if use_ray else _map_local(clips, out, cfg, workers)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), unit="clip", file=sys.stderr, desc="curate")
    for wav, status in it:
        manifest["clips"][Path(wav).stem] = {"source": wav, "stages": status}
        atomic_write_json(manifest_path, manifest)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    n, notes = pack(clips, out, cfg)
    counts: dict[str, dict[str, int]] = {}
    for rec in manifest["clips"].values():
        for stage, s in rec["stages"].items():
            key = s.split(":")[0].split(" ")[0] if stage != "tts" else ("done" if "done" in s or "cached" in s else "-")
            counts.setdefault(stage, {}).setdefault(key, 0)
            counts[stage][key] += 1
    manifest["summary"] = {"clips": len(clips), "samples": n, "stages": counts, "pack_notes": notes}
    atomic_write_json(manifest_path, manifest)
    return manifest
