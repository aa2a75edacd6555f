"""``ros2-affect``: the command-line entry point.

Each subcommand lives in its own module under ``ros2_affect.tools`` and contributes an
``add_parser(subparsers)`` function; modules are imported only when their command runs,
so ``ros2-affect fetch-assets`` works before the heavier dependencies are usable.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any, List, NoReturn, Optional

from ros2_affect.errors import AffectError, Interrupted
from ros2_affect.tools.cli_args import plain_text

#: subcommand -> module in ros2_affect.tools that defines it
COMMANDS = {
    "fetch-assets": "fetch_assets",
    "run": "run",
    "replay": "replay",
    "make-bag": "make_bag",
    "evaluate": "evaluate_bag",
    "bench": "bench",
    "build-engine": "build_engine",
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (and where to read more), not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: List[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="ros2-affect", description=plain_text(__doc__.splitlines()[0]))
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the native libraries' own log lines (LiteRT, ONNX Runtime, OpenCV)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [a for a in argv if a in COMMANDS][:1] or list(COMMANDS)
    for command in COMMANDS:
        if command in wanted:
            try:
                module = importlib.import_module(f"ros2_affect.tools.{COMMANDS[command]}")
            except ImportError:
                if len(wanted) == 1:
                    raise
                subparsers.add_parser(command, help="(unavailable: module not importable)")
                continue
            module.add_parser(subparsers)
        else:
            subparsers.add_parser(command)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    as_command = argv is None  # the console script (not a call from Python, e.g. a test)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if as_command and not args.verbose:
        from ros2_affect.tools.quiet import quiet_native_logs

        quiet_native_logs()  # LiteRT/glog/ONNX Runtime/OpenCV's own log lines: only with --verbose
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous_term = _sigterm_as_keyboard_interrupt()
    try:
        return int(args.func(args) or 0)
    except Interrupted as exc:  # stopped by a signal after closing its output (kept as partial)
        print(f"ros2-affect {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: unfinished outputs were removed on the way out
        name = str(exc.args[0]) if exc.args else "SIGINT"
        print(f"ros2-affect {args.command}: interrupted by {name} before finishing", file=sys.stderr)
        return 128 + int(getattr(signal.Signals, name, signal.SIGINT))
    except AffectError as exc:
        print(f"ros2-affect {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the command was given cannot be created, read or written
        print(f"ros2-affect {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous_term is not _NOT_INSTALLED:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous_term is None else previous_term)


def _raise_keyboard_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _sigterm_as_keyboard_interrupt() -> Any:
    """SIGTERM unwinds like Ctrl-C (outputs being written are cleaned up, one line, no
    traceback) instead of ending the process on the spot. Returns the previous handler
    (:data:`_NOT_INSTALLED` off the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_INSTALLED
    return signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


_NOT_INSTALLED = object()


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: the path, what is wrong with it and the fix."""
    path = exc.filename if exc.filename is not None else "a path"
    where = repr(str(path))
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return f"{where} is a file where a folder is needed (or a part of that path is a file); pass a folder path"
    if isinstance(exc, IsADirectoryError):
        return f"{where} is a folder where a file is needed; pass a file path"
    if isinstance(exc, FileNotFoundError):
        return f"{where} does not exist (or its parent folder does not); check the path"
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return f"cannot write {where}: {exc.strerror}; choose a folder you can write to"
    if exc.errno == errno.ENOSPC:
        return f"cannot write {where}: the disk is full; free space or choose another folder"
    return f"{where}: {exc.strerror or exc}; check the path"


if __name__ == "__main__":
    sys.exit(main())
