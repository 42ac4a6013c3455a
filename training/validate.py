"""Check a FLAME-QA dataset directory, or every dataset a training recipe names.

    python -m training.validate DIR [--json report.json]
    python -m training.validate --recipe training/recipes/a2llm_step_audio2_mini.yaml [--json report.json]

Every sample is checked (missing fields, NaN/inf, answer audio vs motion length, motion codes vs motion length, unknown
task or layout); a bad sample or an unreadable shard is reported and the check goes on. With ``--recipe`` each folder
the A2-LLM recipe names (``train_data``, ``val_data``, each stage's ``train_data``) is checked, and stage 3's affective
dataset (§5.3) must exist as its own folder: named by the recipe, not the stage-1/2 folder, sharing no sample key with
it (a filtered copy of the stage-1 data is refused); samples without an emotion label and a size far from the
paper's ~1k are reported as notes. Exit code 0 when everything is good, 1 when some samples or recipe checks fail, 2
when DIR is not a dataset or the recipe cannot be read.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main
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


def _keys_and_emotions(directory: Path) -> tuple[set[str], int]:
    """(sample keys, how many samples carry no emotion label) of a readable dataset; unreadable parts are skipped
    (:func:`validate_dataset` reports them)."""
    keys: set[str] = set()
    unlabelled = 0
    for entry in read_index(directory)["shards"]:
        path = directory / entry["name"]
        if not path.is_file():
            continue
        try:
            for key, members in iter_shard_raw(path):
                keys.add(key)
                try:
                    if not decode_sample(key, members, path).emotion:
                        unlabelled += 1
                except InputError:
                    pass
        except InputError:
            continue
    return keys, unlabelled


@dataclasses.dataclass
class RecipeReport:
    """Result of :func:`validate_recipe`: one :class:`ValidationReport` per named folder, recipe-level problems
    (failures) and notes (worth a look, not failures)."""

    datasets: dict[str, ValidationReport] = dataclasses.field(default_factory=dict)
    folders: dict[str, str] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.datasets.values())

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "folders": self.folders,
            "datasets": {k: r.to_dict() for k, r in self.datasets.items()},
            "problems": self.problems,
            "notes": self.notes,
        }


AFFECTIVE_PAPER_SIZE = 1000  # §4: "a specialized High-Dynamic Subset of ~1k samples"


def validate_recipe(recipe_path: str | Path, group: int | None = None, progress: bool = False) -> RecipeReport:
    """Check every dataset an A2-LLM recipe names, and that stage 3 has its own affective dataset (§5.3).

    Raises :class:`InputError` when the recipe cannot be read.
    """
    from training.train_a2llm import A2LLMRecipe

    recipe = A2LLMRecipe.from_file(recipe_path)
    g = group or recipe.model.connector.group
    rep = RecipeReport()
    named = {"train_data": recipe.train_data, "val_data": recipe.val_data}
    for n in (1, 2, 3):
        named[f"stage{n}.train_data"] = recipe.stage(n).train_data
    stage_dirs = {}
    for n in (1, 2, 3):
        try:
            stage_dirs[n] = recipe.stage_data(n)
        except InputError as e:
            rep.problems.append(e.problem)
    for role, folder in named.items():
        if not folder:
            continue
        rep.folders[role] = folder
        try:
            rep.datasets[role] = validate_dataset(folder, g, progress)
        except InputError as e:
            rep.problems.append(f"{role} ({folder}): {e.problem}")
    aff, main_dirs = stage_dirs.get(3), {stage_dirs.get(1), stage_dirs.get(2)} - {None}
    aff_role = "stage3.train_data"
    if aff is not None and aff_role in rep.datasets:
        aff_keys, unlabelled = _keys_and_emotions(Path(aff))
        for d in main_dirs:
            role = next((r for r, f in named.items() if f == d), d)
            if role not in rep.datasets:
                continue
            shared = aff_keys & _keys_and_emotions(Path(d))[0]
            if shared:
                rep.problems.append(
                    f"stage 3's affective dataset shares {len(shared)} of its {len(aff_keys)} sample keys with the "
                    f"stage-1/2 data ({d}), e.g. {sorted(shared)[0]!r}: it must be its own dataset, not a subset"
                )
        if unlabelled:
            rep.notes.append(f"{unlabelled} samples of stage 3's affective dataset carry no emotion label")
        n = rep.datasets[aff_role].good
        if not AFFECTIVE_PAPER_SIZE / 4 <= n <= AFFECTIVE_PAPER_SIZE * 4:
            rep.notes.append(f"stage 3's affective dataset holds {n} good samples (the paper's: ~1k)")
    return rep


def _print_dataset(rep: ValidationReport, max_print: int, prefix: str = "") -> None:
    for shard, key, problems in rep.bad[:max_print]:
        print(f"{prefix}BAD {shard}:{key}: " + "; ".join(problems))
    if len(rep.bad) > max_print:
        print(f"{prefix}... and {len(rep.bad) - max_print} more bad entries")
    tasks = ", ".join(f"{k} {v}" for k, v in sorted(rep.tasks.items())) or "none"
    print(
        f"{prefix}{rep.total} samples: {rep.good} good, {len(rep.bad)} bad; tasks: {tasks}; "
        f"{rep.frames} motion frames ({rep.frames / 25 / 60:.1f} min)"
    )


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.validate", description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, nargs="?", help="FLAME-QA dataset directory (dataset.json + shard-*.tar)")
    ap.add_argument("--recipe", type=Path, default=None, help="check every dataset this A2-LLM recipe names")
    ap.add_argument("--group", type=int, default=None, help="frames per motion token G (default 5; the recipe's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    ap.add_argument("--max-print", type=int, default=50, help="print at most this many bad samples")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if (args.dir is None) == (args.recipe is None):
        ap.error("give a dataset DIR or --recipe RECIPE.yaml (one of them)")
    if args.recipe is not None:
        rrep = validate_recipe(args.recipe, args.group, progress=not args.no_progress)
        for role, r in rrep.datasets.items():
            print(f"{role} ({rrep.folders[role]}):")
            _print_dataset(r, args.max_print, "  ")
        for p in rrep.problems:
            print(f"PROBLEM: {p}")
        for n in rrep.notes:
            print(f"note: {n}")
        print("recipe datasets: " + ("all good" if rrep.ok else "problems found"))
        if args.json is not None:
            atomic_write_json(args.json, rrep.to_dict())
        return 0 if rrep.ok else 1
    rep = validate_dataset(args.dir, args.group or 5, progress=not args.no_progress)
    _print_dataset(rep, args.max_print)
    if args.json is not None:
        atomic_write_json(args.json, rep.to_dict())
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
