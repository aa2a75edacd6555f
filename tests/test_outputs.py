"""ros2_affect.outputs on real folders: overlap checks, staging, commit, partial outputs, signals.

The commands' data-safety cases on real inputs are in tests/tools/test_outputs.py and
tests/tools/test_interrupt.py; these pin the module's own rules and messages.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Optional

import pytest

from ros2_affect.errors import OutputError
from ros2_affect.outputs import OutputTarget, StopSignals, check_not_an_input, only_entries

OWNED = only_entries({"result.txt": None}, "test-tool")


def target(path: Path, overwrite: bool = False, inputs: tuple = ()) -> OutputTarget:
    return OutputTarget(path, overwrite=overwrite, owned=OWNED, tool="test-tool", inputs=inputs)


def test_overlap_is_by_path_components_and_follows_links(tmp_path: Path) -> None:
    (tmp_path / "rec").mkdir()
    check_not_an_input(tmp_path / "rec2", [tmp_path / "rec"])  # a common prefix is no overlap
    check_not_an_input(tmp_path / "out", [None, tmp_path / "rec"])  # None: an input with no path (a camera)
    with pytest.raises(OutputError, match=r"--out '.*rec' is the input '.*rec'; writing there would destroy it"):
        check_not_an_input(tmp_path / "rec" / ".." / "rec", [tmp_path / "rec"])
    with pytest.raises(OutputError, match=r"--x '.*' holds the input '.*rec/a.mp4'; .* Choose an --x outside"):
        check_not_an_input(tmp_path, [tmp_path / "rec" / "a.mp4"], option="--x")
    (tmp_path / "link").symlink_to(tmp_path / "rec")
    with pytest.raises(OutputError, match=r"--out '.*link/out' is inside the input '.*rec'"):
        check_not_an_input(tmp_path / "link" / "out", [tmp_path / "rec"])


def test_an_output_moves_into_place_only_when_committed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    staged = target(out).stage()
    assert staged.path.parent.parent == tmp_path and staged.path.parent.name.startswith("out.incomplete-")
    staged.path.mkdir()
    (staged.path / "result.txt").write_text("new")
    assert not out.exists()
    assert staged.commit() == out and (out / "result.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # discard: the previous output stays as it was
    with pytest.raises(RuntimeError):
        with target(out, overwrite=True).stage() as staged:
            staged.path.mkdir()
            (staged.path / "result.txt").write_text("half")
            raise RuntimeError("failed")
    assert (out / "result.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_target_changed_during_the_run_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()  # empty at the start: fine without --overwrite
    staged = target(out).stage()
    staged.path.mkdir()
    (staged.path / "result.txt").write_text("new")
    (out / "notes.txt").write_text("written meanwhile")
    with pytest.raises(OutputError, match=r"already exists; .* \(it changed during the run\); the new output is "
                                          r"at '.*out.partial'"):
        staged.commit()
    assert (out / "notes.txt").read_text() == "written meanwhile"
    assert (tmp_path / "out.partial" / "result.txt").read_text() == "new"


def test_partial_outputs_are_numbered_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kept = []
    for text in ("first", "second"):
        staged = target(out).stage()
        staged.path.mkdir()
        (staged.path / "result.txt").write_text(text)
        kept.append(staged.keep_partial())
    assert kept == [tmp_path / "out.partial", tmp_path / "out.partial-2"]
    assert [(k / "result.txt").read_text() for k in kept] == ["first", "second"] and not out.exists()


def test_existing_outputs_need_overwrite_and_must_be_the_tools_own(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.txt").write_text("old")
    with pytest.raises(OutputError, match=r"already exists; remove it, choose another path or pass --overwrite"):
        target(out)
    target(out, overwrite=True)  # its own output: may be replaced
    (out / "a.yaml").write_text("mine")
    (out / "sub").mkdir()
    with pytest.raises(OutputError, match=r"is not test-tool output \(it holds a.yaml, sub, which test-tool does not "
                                          r"write\); refusing to replace it with --overwrite"):
        target(out, overwrite=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"'.*f' is an existing file, not a folder"):
        target(tmp_path / "f", overwrite=True)
    (tmp_path / "ln").symlink_to(out)
    with pytest.raises(OutputError, match=r"'.*ln' is a symbolic link"):
        target(tmp_path / "ln", overwrite=True)


def test_stop_signals_turn_sigint_and_sigterm_into_a_flag_and_restore_the_handlers() -> None:
    before_int, before_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for signum in (signal.SIGTERM, signal.SIGINT):
        received: Optional[str] = None
        with StopSignals() as stop:
            os.kill(os.getpid(), signum)
            for _ in range(100):  # the handler runs in the main thread at the next bytecode boundary
                if stop.received:
                    break
                time.sleep(0.01)
            os.kill(os.getpid(), signum)  # a second signal while stopping is only logged
            time.sleep(0.05)
            received = stop.received
        assert received == signal.Signals(signum).name
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (before_int, before_term)


def test_the_current_folder_or_one_above_it_is_never_an_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "result.txt").write_text("mine")
    monkeypatch.chdir(work)
    for spelling in (".", "..", str(work), "sub/.."):
        with pytest.raises(OutputError, match=r"is or holds the current folder; choose a new folder for the output"):
            target(Path(spelling), overwrite=True)
    staged = target(Path("out")).stage()  # a relative --out is staged beside it, in the current folder
    assert staged.path.parent.parent == work
    staged.path.mkdir()
    assert staged.commit() == Path("out") and (work / "out").is_dir()
    partial = target(Path("run"))
    kept = partial.stage().keep_partial()
    assert kept == Path("run.partial") and (work / "run.partial").is_dir()


def test_a_killed_runs_unfinished_output_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    leftover = tmp_path / "out.incomplete-abc123"  # what SIGKILL leaves: no process can clean it up
    leftover.mkdir()
    staged = target(tmp_path / "out").stage()
    assert f"{leftover}: unfinished output of an earlier run that was killed" in caplog.text
    staged.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.incomplete-abc123"]  # never deleted by us
