"""Check a FLAME-QA dataset directory: ``python -m training.validate DIR [--json report.json]``.

Every sample is checked (missing fields, NaN/inf, answer audio vs motion length, motion codes vs motion length, unknown
task or layout); a bad sample or an unreadable shard is reported and the check goes on. Exit code 0 when everything is
good, 1 when some samples are bad, 2 when DIR is not a dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write_json
from training.data.format import decode_sample, iter_shard_raw, read_index, sample_problems


@dataclasses.dataclass
class ValidationReport:
    """Result of :func:`validate_dataset`. ``bad``: (shard, key, problems) per bad sample or unreadable shard."""

    total: int = 0
    good: int = 0
    bad: list[tuple[str, str, list[str]]] = dataclasses.field(default_factory=list)
    tasks: Counter = dataclasses.field(default_factory=Counter)
    frames: int = 0

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "good": self.good,
            "bad": [{"shard": s, "key": k, "problems": p} for s, k, p in self.bad],
            "tasks": dict(self.tasks),
            "motion_frames": self.frames,
        }


def validate_dataset(directory: str | Path, group: int = 5, progress: bool = False) -> ValidationReport:
    """Check every sample of ``directory``; raises :class:`InputError` only when it is not a dataset at all."""
    directory = Path(directory)
    index = read_index(directory)
    rep = ValidationReport()
    shards = [s["name"] for s in index["shards"]]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(s.get("samples") or 0 for s in index["shards"]) or None, unit="sample", file=sys.stderr)
    seen: set[str] = set()
    for name in shards:
        path = directory / name
        if not path.is_file():
            rep.bad.append((name, "*", ["shard file missing"]))
            continue
        try:
            for key, members in iter_shard_raw(path):
                rep.total += 1
                if bar is not None:
                    bar.update(1)
                try:
                    s = decode_sample(key, members, path)
                except InputError as e:
                    rep.bad.append((name, key, [e.problem]))
                    continue
                problems = sample_problems(s, group)
                if key in seen:
                    problems.append("duplicate key")
                seen.add(key)
                if problems:
                    rep.bad.append((name, key, problems))
                else:
                    rep.good += 1
                    rep.tasks[s.task] += 1
                    rep.frames += s.num_frames
        except InputError as e:
            rep.bad.append((name, "*", [e.problem]))
    if bar is not None:
        bar.close()
    return rep


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.validate", description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="FLAME-QA dataset directory (dataset.json + shard-*.tar)")
    ap.add_argument("--group", type=int, default=5, help="frames per motion token G (default 5)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    ap.add_argument("--max-print", type=int, default=50, help="print at most this many bad samples")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        rep = validate_dataset(args.dir, args.group, progress=not args.no_progress)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for shard, key, problems in rep.bad[: args.max_print]:
        print(f"BAD {shard}:{key}: " + "; ".join(problems))
    if len(rep.bad) > args.max_print:
        print(f"... and {len(rep.bad) - args.max_print} more bad entries")
    tasks = ", ".join(f"{k} {v}" for k, v in sorted(rep.tasks.items())) or "none"
    print(
        f"{rep.total} samples: {rep.good} good, {len(rep.bad)} bad; tasks: {tasks}; "
        f"{rep.frames} motion frames ({rep.frames / 25 / 60:.1f} min)"
    )
    if args.json is not None:
        atomic_write_json(args.json, rep.to_dict())
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
