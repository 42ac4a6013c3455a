"""The error tail every command line shares: one decorator instead of a try/except in each ``main``.

    @cli_main
    def main(argv: Sequence[str] | None = None) -> int:
        args = parser.parse_args(argv)
        ...  # raise InputError on bad input
        return 0

    @cli_main(failures=(RuntimeError, OSError))  # also these: "error: ..." and exit 1
    def main(argv=None) -> int: ...

Exit codes: what ``main`` returns (0 done, 1 failed); 2 bad input (:class:`~a2llm_rt.errors.InputError`, printed as
``error: <message>`` on stderr, never a traceback; argparse's own usage errors exit 2 too); 1 for the exception types
named in ``failures``; 130 on Ctrl-C (``interrupted`` on stderr).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar, overload

from a2llm_rt.errors import InputError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., int])


def report(e: BaseException) -> None:
    """``error: <message>`` on stderr."""
    print(f"error: {e}", file=sys.stderr)


@overload
def cli_main(fn: F) -> F: ...
@overload
def cli_main(*, failures: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]: ...


def cli_main(fn: F | None = None, *, failures: tuple[type[BaseException], ...] = ()):
    """Wrap a command line's ``main(argv) -> int`` with the shared error tail (see the module docstring)."""

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except InputError as e:
                report(e)
                return EXIT_BAD_INPUT
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except failures as e:
                report(e)
                return EXIT_FAILED

        return run  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap
