"""The FLAME-QA sample and its on-disk form: WebDataset-style tar shards.

Why tar shards and not parquet: the samples are a handful of variable-length arrays (question waveform, answer
waveform, answer audio codes, motion ``[T, D]``, motion codes ``[T/G, N_q]``) plus a little JSON. Tar needs no new
dependency (stdlib ``tarfile`` + ``.npy`` members, where parquet would add ``pyarrow``), it is read strictly
sequentially (good for object stores and streaming loaders), it is written one sample after the other without a schema
and any WebDataset-compatible loader can read it (members are named ``{key}.{field}``). Shards are written atomically,
so a crashed writer never leaves a half shard.

A dataset directory::

    DIR/dataset.json            {"format": "flame-qa", "version": 1, "shards": [{"name", "samples"}], ...}
    DIR/shard-000000.tar        {key}.json  {key}.question_audio.npy  {key}.answer_audio.npy
                                {key}.answer_codes.npy  {key}.motion.npy  {key}.motion_codes.npy

Alignment contract (ARCHITECTURE §2): answer audio is 24 kHz (``ANSWER_SR``); audio tokens are 25 Hz, one motion frame
per audio token; frame ``k`` covers answer samples ``[k*960, (k+1)*960)``. So ``len(motion) == len(answer_codes)``
and ``len(motion) == ceil(len(answer_audio) / 960)`` (one frame of slack either way, checked by the validator).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from a2llm_rt.audio import FACE_FPS, INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, SAMPLES_PER_FRAME
from a2llm_rt.errors import InputError
from a2llm_rt.face.layouts import get_layout
from a2llm_rt.utils.fileio import atomic_write, atomic_write_json

FORMAT_NAME = "flame-qa"
FORMAT_VERSION = 1
INDEX_FILE = "dataset.json"
TASKS = ("aqaa", "repeat", "tts", "asr")
"""AQAA: spoken question -> spoken answer + motion; Repeat: spoken question -> the same words spoken back + motion;
TTS: text -> speech + motion; ASR: spoken question -> its transcript (text only, no motion)."""
QUESTION_SR = INPUT_SAMPLE_RATE  # the time base lives in a2llm_rt.audio
ANSWER_SR = OUTPUT_SAMPLE_RATE
MOTION_FPS = FACE_FPS
ARRAY_FIELDS = ("question_audio", "answer_audio", "answer_codes", "motion", "motion_codes")
MOTION_LAYOUTS = ("flame58", "arkit52")


@dataclasses.dataclass
class FlameQASample:
    """One training sample. Arrays are numpy; absent ones are None.

    Attributes:
        key: unique id (letters, digits, ``_-``; no dots: it prefixes the tar member names).
        task: one of :data:`TASKS`.
        question_text: the question's words (TTS: the text to read; ASR: its target transcript lives in answer_text).
        question_audio: ``[N]`` float32 mono at ``QUESTION_SR`` (AQAA, Repeat, ASR).
        answer_text: the answer's words (ASR: the transcript).
        answer_audio: ``[N]`` float32 mono at ``ANSWER_SR``; tokenized by an audio tokenizer when codes are absent.
        answer_codes: ``[T]`` int64 25 Hz audio codes of the answer (precomputed; wins over answer_audio).
        motion: ``[T, D]`` float32 motion at 25 fps in ``motion_layout`` (not for ASR).
        motion_codes: ``[T/G, N_q]`` int64 RVQ codes of ``motion`` (precomputed by a motion tokenizer), optional.
        motion_layout: ``flame58`` or ``arkit52``.
        emotion: emotion label (free text, e.g. ``neutral``, ``happy``), or None.
        meta: JSON-serialisable provenance (source clip, speaker, ...).
    """

    key: str
    task: str
    answer_text: str = ""
    question_text: str | None = None
    question_audio: np.ndarray | None = None
    answer_audio: np.ndarray | None = None
    answer_codes: np.ndarray | None = None
    motion: np.ndarray | None = None
    motion_codes: np.ndarray | None = None
    motion_layout: str = "flame58"
    emotion: str | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Motion frames (0 without motion)."""
        return 0 if self.motion is None else int(self.motion.shape[0])

    def header(self) -> dict:
        """The JSON member: every non-array field."""
        return {
            "key": self.key,
            "task": self.task,
            "question_text": self.question_text,
            "answer_text": self.answer_text,
            "motion_layout": self.motion_layout,
            "emotion": self.emotion,
            "meta": self.meta,
        }


def check_key(key: str) -> None:
    if not key or any(not (c.isalnum() or c in "_-") for c in key):
        raise InputError(f"sample key {key!r} must be non-empty letters, digits, '_' or '-'")


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | Path, samples: list[FlameQASample]) -> None:
    """Write ``samples`` into one tar shard, atomically. Arrays are stored with their dtype (float32/int64)."""
    seen: set[str] = set()
    with atomic_write(path, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
        for s in samples:
            check_key(s.key)
            if s.key in seen:
                raise InputError(f"duplicate sample key {s.key!r}", path)
            seen.add(s.key)
            _add(tar, f"{s.key}.json", json.dumps(s.header()).encode())
            for name in ARRAY_FIELDS:
                a = getattr(s, name)
                if a is not None:
                    _add(tar, f"{s.key}.{name}.npy", _npy_bytes(np.asarray(a)))


class ShardWriter:
    """Writes samples into ``DIR/shard-NNNNNN.tar`` files of ``max_samples`` each and keeps ``dataset.json``.

    Use as a context manager; ``close()`` flushes the last shard and writes the index. Appending to an existing
    dataset continues its shard numbering.
    """

    def __init__(self, directory: str | Path, max_samples: int = 256, attrs: dict | None = None):
        if max_samples < 1:
            raise ValueError("max_samples must be >= 1")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_samples = max_samples
        self.index = read_index(self.dir) if (self.dir / INDEX_FILE).is_file() else new_index()
        self.index.setdefault("attrs", {}).update(attrs or {})
        self._keys: set[str] = set()
        self._buf: list[FlameQASample] = []

    def write(self, sample: FlameQASample) -> None:
        check_key(sample.key)
        if sample.key in self._keys:
            raise InputError(f"duplicate sample key {sample.key!r}", self.dir)
        self._keys.add(sample.key)
        self._buf.append(sample)
        if len(self._buf) >= self.max_samples:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        name = f"shard-{len(self.index['shards']):06d}.tar"
        write_shard(self.dir / name, self._buf)
        self.index["shards"].append({"name": name, "samples": len(self._buf)})
        self._buf = []
        atomic_write_json(self.dir / INDEX_FILE, self.index)

    def close(self) -> None:
        self.flush()
        atomic_write_json(self.dir / INDEX_FILE, self.index)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()


def new_index() -> dict:
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "shards": [], "attrs": {}}


def read_index(directory: str | Path) -> dict:
    """``dataset.json`` of a dataset directory (checked), or an index of its ``*.tar`` files when it has none."""
    directory = Path(directory)
    path = directory / INDEX_FILE
    if not path.is_file():
        tars = sorted(directory.glob("*.tar"))
        if not directory.is_dir() or not tars:
            raise InputError("not a FLAME-QA dataset: no dataset.json and no .tar shards", directory)
        return {**new_index(), "shards": [{"name": t.name, "samples": None} for t in tars]}
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable dataset index: {e}", path) from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME or not isinstance(index.get("shards"), list):
        raise InputError(f"not a {FORMAT_NAME} index (needs format and shards)", path)
    if index.get("version", 0) > FORMAT_VERSION:
        raise InputError(f"dataset version {index['version']} is newer than this reader ({FORMAT_VERSION})", path)
    return index


def _split_member(name: str) -> tuple[str, str]:
    key, _, rest = name.partition(".")
    return key, rest


def iter_shard_raw(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {member suffix: bytes}) per sample of one shard, in file order (members of a key are contiguous)."""
    path = Path(path)
    try:
        tar = tarfile.open(path, mode="r")  # noqa: SIM115 (closed by the with-block below)
    except (OSError, tarfile.TarError) as e:
        raise InputError(f"unreadable shard: {e}", path) from None
    with tar:
        cur_key: str | None = None
        members: dict[str, bytes] = {}
        try:
            for m in tar:
                if not m.isfile():
                    continue
                key, suffix = _split_member(m.name)
                if key != cur_key and cur_key is not None:
                    yield cur_key, members
                    members = {}
                cur_key = key
                fobj = tar.extractfile(m)
                members[suffix] = fobj.read() if fobj is not None else b""
        except (OSError, tarfile.TarError, EOFError) as e:
            raise InputError(f"truncated or corrupt shard: {e}", path) from None
        if cur_key is not None:
            yield cur_key, members


def decode_sample(key: str, members: dict[str, bytes], source: str | Path | None = None) -> FlameQASample:
    """Build a :class:`FlameQASample` from its tar members; :class:`InputError` when the JSON or an array is bad."""
    where = f"{source}:{key}" if source is not None else key
    if "json" not in members:
        raise InputError("missing the .json member", where)
    try:
        head = json.loads(members["json"])
    except ValueError as e:
        raise InputError(f"bad .json member: {e}", where) from None
    if not isinstance(head, dict):
        raise InputError("the .json member is not a mapping", where)
    arrays: dict[str, np.ndarray | None] = {}
    for name in ARRAY_FIELDS:
        raw = members.get(f"{name}.npy")
        if raw is None:
            arrays[name] = None
            continue
        try:
            arrays[name] = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"bad {name}.npy member: {e}", where) from None
    return FlameQASample(
        key=str(head.get("key", key)),
        task=str(head.get("task", "")),
        question_text=head.get("question_text"),
        answer_text=head.get("answer_text") or "",
        motion_layout=str(head.get("motion_layout", "flame58")),
        emotion=head.get("emotion"),
        meta=head.get("meta") or {},
        **arrays,
    )


def shard_paths(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    return [directory / s["name"] for s in read_index(directory)["shards"]]


def iter_samples(directory: str | Path) -> Iterator[FlameQASample]:
    """Every sample of a dataset directory (raises :class:`InputError` on the first bad one; the validator goes on)."""
    for path in shard_paths(directory):
        for key, members in iter_shard_raw(path):
            yield decode_sample(key, members, path)


def read_samples(directory: str | Path) -> list[FlameQASample]:
    return list(iter_samples(directory))


# ---- checks ---------------------------------------------------------------------------------------------------------
def expected_frames(n_answer_samples: int) -> int:
    """Motion frames that cover ``n_answer_samples`` of 24 kHz answer audio: ``ceil(n / 960)``."""
    return math.ceil(n_answer_samples / SAMPLES_PER_FRAME)


def sample_problems(s: FlameQASample, group: int = 5) -> list[str]:
    """Every problem of one sample (empty list: good). See the module docstring for the alignment rules."""
    p: list[str] = []
    if s.task not in TASKS:
        p.append(f"task {s.task!r} is not one of {TASKS}")
    needs_q_audio = s.task in ("aqaa", "repeat", "asr")
    if needs_q_audio and s.question_audio is None:
        p.append(f"missing question_audio (task {s.task})")
    if s.task == "tts" and not s.question_text:
        p.append("missing question_text (task tts: the text to read)")
    if not s.answer_text and s.task in ("asr", "aqaa", "repeat", "tts"):
        p.append("missing answer_text")
    for name in ("question_audio", "answer_audio"):
        a = getattr(s, name)
        if a is None:
            continue
        if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.floating):
            p.append(f"{name} must be a non-empty float [N] waveform, got {a.dtype} {list(a.shape)}")
        elif not np.isfinite(a).all():
            p.append(f"{name} holds NaN/inf ({int((~np.isfinite(a)).sum())} samples)")
    if s.task == "asr":
        return p
    if s.answer_audio is None and s.answer_codes is None:
        p.append("missing answer_audio and answer_codes")
    if s.motion is None:
        p.append("missing motion")
        return p
    try:
        dim = get_layout(s.motion_layout).dim
    except (KeyError, ValueError):
        p.append(f"motion_layout {s.motion_layout!r} is not one of {MOTION_LAYOUTS}")
        dim = None
    m = s.motion
    if m.ndim != 2 or (dim is not None and m.shape[1] != dim) or m.shape[0] == 0:
        p.append(f"motion must be [T, {dim}] with T > 0, got {list(m.shape)}")
        return p
    if not np.isfinite(m).all():
        bad = np.argwhere(~np.isfinite(m))[0]
        p.append(f"motion holds NaN/inf (first at frame {bad[0]}, curve {bad[1]})")
    t = m.shape[0]
    if s.answer_codes is not None:
        c = s.answer_codes
        if c.ndim != 1 or not np.issubdtype(c.dtype, np.integer):
            p.append(f"answer_codes must be an integer [T] array, got {c.dtype} {list(c.shape)}")
        elif abs(len(c) - t) > 1:
            p.append(f"answer audio and motion lengths disagree: {len(c)} audio codes vs {t} motion frames")
        elif len(c) and c.min() < 0:
            p.append("answer_codes holds negative codes")
    if s.answer_audio is not None and s.answer_audio.ndim == 1:
        want = expected_frames(len(s.answer_audio))
        if abs(want - t) > 1:
            p.append(
                f"answer audio and motion lengths disagree: {len(s.answer_audio)} samples = {want} frames at 25 fps "
                f"vs {t} motion frames"
            )
    if s.motion_codes is not None:
        mc = s.motion_codes
        if mc.ndim != 2 or not np.issubdtype(mc.dtype, np.integer):
            p.append(f"motion_codes must be an integer [T/G, N_q] array, got {mc.dtype} {list(mc.shape)}")
        elif mc.shape[0] != t // group:
            p.append(f"motion_codes has {mc.shape[0]} tokens, motion {t} frames needs {t // group} (G={group})")
    return p
