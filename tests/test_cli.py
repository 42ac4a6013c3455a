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


# Command lines that keep their own tail (none: every ``main`` of the packages is on the wrapper).
OWN_TAIL: set[str] = set()


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


def test_converted_command_lines_report_bad_input_on_stderr(tmp_path, capsys):
    """The command lines moved onto the wrapper: bad input is ``error: ...`` on stderr with exit 2, no traceback
    (the token2wav converter and the speech export used to end in a traceback, ``--voice`` in exit 1)."""
    from a2llm_rt.speech import checkpoint
    from export import speech_export
    from plugin_bridge import serve

    for main, argv, what in (
        (checkpoint.main, [str(tmp_path / "nowhere")], "nowhere"),
        (speech_export.main, ["--token2wav", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], "nowhere"),
        (serve.main, ["--voice", "alice"], "NAME=PATH"),
        (serve.main, ["--pace", "-1"], "--pace must be >= 0"),
    ):
        assert main(argv) == 2, argv
        out = capsys.readouterr()
        assert out.err.startswith("error: ") and what in out.err and "Traceback" not in out.err, (argv, out.err)
