"""The ``distillscope`` command line.

The library's own commands (``inspect``, ``analyze``, ``report``, ``demo``) are in
``commands``; other packages add theirs through the entry-point group
``distillscope.commands`` (the extract package adds ``extract`` and ``audit``), so the library
never imports them. Errors print one line (``distillscope: error: ...``) and exit with status
2 for invalid input (a wrong command line, a parameter, a store, results or a configuration
that is not valid: ``InputError``, ``StoreError``) and 1 for any other failure (an output
that cannot be written, a file system error); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from .._errors import DistillscopeError, InputError, StoreError
from .._version import __version__
from .commands import add_analysis_options, analyse_and_report, analysis_options, run_analysis

__all__ = ["main", "build_parser", "add_analysis_options", "analysis_options", "run_analysis",
           "analyse_and_report", "EXIT_ERROR", "EXIT_INVALID", "ENTRY_POINTS"]

EXIT_ERROR = 1  # a failure: output not writable, file system error
EXIT_INVALID = 2  # invalid input: command line, parameters, store, results, configuration
#: the entry-point group through which other packages add commands: ``register(subparsers)``
ENTRY_POINTS = "distillscope.commands"


def build_parser() -> argparse.ArgumentParser:
    from .commands import register

    parser = argparse.ArgumentParser(
        prog="distillscope",
        description="Spectral diagnostics of distilled models from saved features.")
    parser.add_argument("--version", action="version", version=f"distillscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    for point in sorted(entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
        point.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader of our output went away (``| head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (DistillscopeError, OSError) as err:
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"distillscope: error: {message}", file=sys.stderr)
        return EXIT_INVALID if isinstance(err, (InputError, StoreError)) else EXIT_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("distillscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
