"""a2llm_rt.utils.cli: the shared error tail of the command lines, and which command lines use it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from a2llm_rt.errors import InputError
from a2llm_rt.utils.cli import cli_main

REPO = Path(__file__).resolve().parents[1]


def test_exit_codes_and_messages(capsys):
    @cli_main
    def main(argv=None) -> int:
        what = argv[0]
        if what == "bad":
            raise InputError("no such take", "take.csv")
        if what == "ctrl-c":
            raise KeyboardInterrupt
        if what == "bug":
            raise ZeroDivisionError("a bug")
        if what == "usage":
            argparse.ArgumentParser(prog="x").parse_args(["--nope"])
        return int(what)

    assert main(["0"]) == 0 and main(["1"]) == 1
    assert main(["bad"]) == 2
    err = capsys.readouterr().err
    assert err == "error: take.csv: no such take\n"
    assert main(["ctrl-c"]) == 130 and "interrupted" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main(["bug"])
    with pytest.raises(SystemExit) as e:  # argparse's usage errors exit 2 on their own
        main(["usage"])
    assert e.value.code == 2
    assert main.__name__ == "main"


def test_failures_exit_1(capsys):
    @cli_main(failures=(OSError, RuntimeError))
    def main(argv=None) -> int:
        raise (OSError if argv == ["os"] else RuntimeError)("disk full")

    assert main(["os"]) == 1 and main(["rt"]) == 1
    assert capsys.readouterr().err == "error: disk full\nerror: disk full\n"


# Command lines that keep their own tail: other issues own these files (bridge: serve.py; protocol v2: client.py;
# speech: a2llm_rt/speech), or they report through their own exit codes (benchmarks, tools).
OWN_TAIL = {"plugin_bridge/serve.py", "plugin_bridge/client.py", "a2llm_rt/speech/make_voice.py",
            "a2llm_rt/speech/checkpoint.py", "export/speech_export.py", "plugin_bridge/make_fixtures.py"}  # fmt: skip


def test_command_lines_use_the_shared_tail():
    """Every ``def main`` in the packages is decorated with ``@cli_main`` and prints no ``error:`` tail itself."""
    missing, own_tail = [], []
    for pkg in ("a2llm_rt", "apps", "training", "export", "plugin_bridge"):
        for p in sorted((REPO / pkg).rglob("*.py")):
            rel = p.relative_to(REPO).as_posix()
            src = p.read_text(encoding="utf-8")
            if "\ndef main(" not in src or rel in OWN_TAIL:
                continue
            if not re.search(r"\n@cli_main(\(.*\))?\ndef main\(", src):
                missing.append(rel)
            main = src[src.index("\ndef main(") :]
            if re.search(r"except \(?InputError.*\n\s+print\(f\"error: \{e\}\"", main):
                own_tail.append(rel)
    assert not missing, f"main without @cli_main: {missing}"
    assert not own_tail, f"main repeating the error tail: {own_tail}"
