"""Safe outputs for the command-line tools: never write over an input, never lose a previous output.

Every tool that writes a folder (``run --out``, ``replay --out``, ``make-bag --out``,
``evaluate --out``) goes through :class:`OutputTarget`:

1. **Checked before any work.** The output path must not be an input, hold an input or lie
   inside one (:func:`check_not_an_input`). A path that exists is an error, unless it is an
   empty folder, or ``overwrite`` is set and the folder holds nothing but what that tool
   writes (its ``owned`` check: a bag written by ros2-affect, a ``run`` or ``evaluate``
   folder); anything else there (a user's ``calibration.yaml``) makes it an error too, so
   ``--overwrite`` never deletes a file the tool did not write.
2. **Written beside the target.** :meth:`OutputTarget.stage` creates a new folder
   ``NAME.incomplete-XXXXXX`` next to the target; the tool writes ``<that>/NAME``.
3. **Moved into place only when complete.** :meth:`StagedOutput.commit` replaces the
   previous output (only now removed) by the new one with renames in the same folder.
   :meth:`StagedOutput.discard` (an error, Ctrl-C, no frame read) deletes the new output
   and leaves the previous one as it was. :meth:`StagedOutput.keep_partial` (a run stopped
   by a signal) moves what was written to ``NAME.partial`` (``NAME.partial-2``, ... when
   taken), never over the target.

:class:`StopSignals` turns SIGINT and SIGTERM into a flag that a frame loop checks, so a
long run stops between frames and closes its output instead of dying in the middle of a
write.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Collection, Dict, Iterable, List, Optional, Sequence, Union

from ros2_affect.errors import OutputError

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
#: ``owned(path)``: None when the existing folder ``path`` holds only what the tool writes,
#: else the reason it does not (a phrase, e.g. "it holds notes.txt, which run does not write").
OwnedCheck = Callable[[Path], Optional[str]]

STAGING_MARK = ".incomplete-"
PARTIAL_SUFFIX = ".partial"


def _resolved(path: PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def check_not_an_input(out: PathLike, inputs: Iterable[Optional[PathLike]], option: str = "--out") -> None:
    """Refuse an output path that is an input, holds one, or lies inside one.

    Symbolic links are followed, so ``--out link`` to an input folder is refused too.

    Raises:
        OutputError: naming both paths and the fix.
    """
    target = _resolved(out)
    for item in inputs:
        if item is None:
            continue
        source = _resolved(item)
        if target == source:
            how = "is the input"
        elif target in source.parents:
            how = "holds the input"
        elif source in target.parents:
            how = "is inside the input"
        else:
            continue
        raise OutputError(
            f"{option} {str(out)!r} {how} {str(item)!r}; writing there would destroy it. "
            f"Choose an {option} outside the input"
        )


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def only_entries(allowed: Dict[str, Optional[OwnedCheck]], tool: str) -> OwnedCheck:
    """An ``owned`` check: the folder holds only entries named in ``allowed``.

    ``allowed`` maps an entry name to None (any file of that name) or to a check of that
    entry (e.g. a sub-folder that must itself be owned).
    """

    def owned(path: Path) -> Optional[str]:
        entries = sorted(p.name for p in path.iterdir())
        foreign = [n for n in entries if n not in allowed]
        if foreign:
            return f"it holds {_listing(foreign)}, which {tool} does not write"
        for name in entries:
            check = allowed[name]
            entry = path / name
            if entry.is_symlink():
                return f"{name} in it is a symbolic link, which {tool} does not write"
            if check is None:
                if not entry.is_file():
                    return f"{name} in it is not a file"
                continue
            reason = check(entry)
            if reason is not None:
                return f"{name}: {reason}"
        return None

    return owned


def files_with_suffix(suffixes: Collection[str], tool: str) -> OwnedCheck:
    """An ``owned`` check for a folder of plain files ending in one of ``suffixes``."""

    def owned(path: Path) -> Optional[str]:
        if not path.is_dir():
            return "it is not a folder"
        foreign = [p.name for p in path.iterdir() if not (p.is_file() and p.suffix.lower() in suffixes)]
        return f"it holds {_listing(foreign)}, which {tool} does not write" if foreign else None

    return owned


class OutputTarget:
    """An output folder a tool is about to write (see the module docstring).

    Args:
        path: the folder to create or replace.
        overwrite: replace an existing output (one that ``owned`` accepts).
        owned: the tool's check that an existing folder holds only its own output.
        tool: the command, for messages ("replay", "run", ...).
        inputs: paths the tool reads; the output may not overlap any of them.
        option: the option naming the path in messages.

    Raises:
        OutputError: at construction, before any work, when the path may not be written.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        overwrite: bool,
        owned: OwnedCheck,
        tool: str,
        inputs: Iterable[Optional[PathLike]] = (),
        option: str = "--out",
    ) -> None:
        self.path = Path(path)
        #: where it is written: the absolute path (``--out .`` is the current folder by name)
        self.absolute = Path(os.path.abspath(self.path))
        self.overwrite = overwrite
        self.owned = owned
        self.tool = tool
        self.option = option
        check_not_an_input(self.path, inputs, option)
        cwd = _resolved(os.getcwd())
        if _resolved(self.path) in (cwd, *cwd.parents):
            raise OutputError(
                f"{self._what()} is or holds the current folder; choose a new folder for the output, e.g. "
                f"{option} out"
            )
        self.check()

    def _what(self) -> str:
        return f"{self.option} {str(self.path)!r}"

    def check(self) -> None:
        """Raise :class:`OutputError` unless the path is free, an empty folder, or (with
        ``overwrite``) a folder holding only this tool's output."""
        path = self.path
        if path.is_symlink():
            raise OutputError(f"{self._what()} is a symbolic link; pass the folder it points to, or another path")
        if not path.exists():
            return
        if not path.is_dir():
            raise OutputError(f"{self._what()} is an existing file, not a folder; choose a folder path")
        try:
            empty = not any(path.iterdir())
        except OSError as exc:
            raise OutputError(f"{self._what()} cannot be read ({exc.strerror}); choose another path") from None
        if empty:
            return
        if not self.overwrite:
            raise OutputError(
                f"{self._what()} already exists; remove it, choose another path or pass --overwrite"
            )
        reason = self.owned(path)
        if reason is not None:
            raise OutputError(
                f"{self._what()} is not {self.tool} output ({reason}); refusing to replace it with --overwrite. "
                "Choose another path, or move those files away first"
            )

    def stage(self) -> StagedOutput:
        """Create the staging folder beside the target; write the output at ``.path`` of the result.

        Raises:
            OutputError: the parent folder cannot be created or written.
        """
        parent = self.absolute.parent
        leftovers = sorted(str(p) for p in parent.glob(f"{glob.escape(self.absolute.name)}{STAGING_MARK}*"))
        if leftovers:  # a run killed with SIGKILL or by a power loss cannot clean up after itself
            LOG.warning(
                "%s: unfinished output of an earlier run that was killed; delete it when it is not needed",
                ", ".join(leftovers),
            )
        try:
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"{self.absolute.name}{STAGING_MARK}", dir=parent))
        except OSError as exc:
            raise OutputError(
                f"cannot write {self._what()}: the folder {str(parent)!r} is not writable ({exc.strerror}); "
                f"choose an {self.option} in a folder you can write to"
            ) from None
        return StagedOutput(self, folder)


class StagedOutput:
    """An output being written in a folder beside its target (from :meth:`OutputTarget.stage`).

    Attributes:
        path: where to write the output (``<staging folder>/<target name>``); it does not
            exist yet.
    """

    def __init__(self, target: OutputTarget, folder: Path) -> None:
        self.target = target
        self.folder = folder
        self.path = folder / target.absolute.name
        self.done = False

    def commit(self) -> Path:
        """Move the finished output into place; only now is a previous output removed.

        Raises:
            OutputError: the target changed during the run so that it may no longer be
                replaced, or it cannot be renamed (a mount point); the new output is then
                kept beside it, named in the message.
        """
        if self.done:
            return self.target.path
        target = self.target.absolute
        if not self.path.exists():
            self.path.mkdir()  # an output with no files is still an (empty) output folder
        try:
            self.target.check()
        except OutputError as exc:
            kept = self._keep_beside(target, PARTIAL_SUFFIX)
            raise OutputError(f"{exc} (it changed during the run); the new output is at {str(kept)!r}") from None
        previous = self.folder / ".previous"
        moved_previous = False
        try:
            if target.exists():
                os.rename(target, previous)  # same folder: atomic, nothing copied
                moved_previous = True
            os.rename(self.path, target)
        except OSError as exc:
            if moved_previous:
                os.rename(previous, target)
            kept = self._keep_beside(target, PARTIAL_SUFFIX)
            raise OutputError(
                f"cannot move the finished output into {self.target._what()} ({exc.strerror}); it is at "
                f"{str(kept)!r}, and {str(self.target.path)!r} was left as it was"
            ) from None
        self.done = True
        shutil.rmtree(self.folder, ignore_errors=True)  # the previous output, if any, goes only now
        return self.target.path

    def discard(self) -> None:
        """Delete what was written; a previous output stays as it was."""
        if not self.done:
            self.done = True
            shutil.rmtree(self.folder, ignore_errors=True)

    def keep_partial(self) -> Path:
        """Keep what was written as ``NAME.partial`` (numbered when taken) beside the target."""
        if not self.path.exists():
            self.path.mkdir()
        return self._keep_beside(self.target.absolute, PARTIAL_SUFFIX)

    def _keep_beside(self, target: Path, suffix: str) -> Path:
        self.done = True  # kept: never deleted by a later discard()
        for n in range(1, 1000):
            candidate = target.with_name(target.name + suffix + ("" if n == 1 else f"-{n}"))
            if candidate.exists() or candidate.is_symlink():
                continue
            try:
                os.rename(self.path, candidate)
            except OSError:
                continue  # taken in the meantime
            shutil.rmtree(self.folder, ignore_errors=True)
            return self.target.path.with_name(candidate.name)  # as the user spelled the target
        return self.path  # pragma: no cover - a thousand partial outputs: leave it where it is

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class StopSignals:
    """While in the ``with`` block, SIGINT and SIGTERM set :attr:`received` instead of ending
    the process, so a frame loop can stop between frames and close its output::

        with StopSignals() as stop:
            for frame in frames:
                if stop.received:
                    break

    Only the main thread can receive signals; elsewhere this does nothing. The previous
    handlers are restored on exit. A second signal is logged and ignored while the output
    is being closed (SIGKILL still ends the process).
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, what: str = "the current frame") -> None:
        self.what = what
        self.received: Optional[str] = None
        self._previous: List[Any] = []

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            LOG.warning("%s received: stopping after %s and closing the output", name, self.what)
        else:
            LOG.warning("%s received: already stopping, closing the output", name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous.append((number, signal.signal(number, self._handle)))
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in reversed(self._previous):
            signal.signal(number, handler)
        self._previous.clear()
