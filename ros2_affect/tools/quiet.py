"""Keep the native libraries' own log lines off the terminal unless ``--verbose`` is given.

LiteRT/TFLite (Face Mesh, BlazeFace through MediaPipe), glog/absl, ONNX Runtime and OpenCV
write straight to file descriptor 2 from C++, bypassing Python's logging: about 15 lines
(``INFO: Created TensorFlow Lite XNNPACK delegate``, ``W0000 ... inference_runner_litert``,
``[ WARN:0@0.1] global loadsave.cpp``...) before the first line of the tool's own output.
None of them can be switched off through an API or environment variable of the versions
pinned here, so :func:`quiet_native_logs` puts a pipe in front of fd 2 and a thread that
passes every line on except those in the native libraries' log formats. Whatever Python
writes (our messages, warnings, tracebacks, the progress bar) goes through unchanged.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from typing import Optional

#: The start of a line a native library logged (and only such lines).
NATIVE_LOG_LINE = re.compile(
    rb"^(?:"
    rb"(?:INFO|WARNING|ERROR|VERBOSE): (?:\[|Created TensorFlow Lite|Initialized TensorFlow Lite|Replacing \d|"
    rb"Logging before InitGoogle)"  # LiteRT / TFLite / absl
    rb"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"  # glog / absl: W0000 00:00:1795910258.330827 7720 f.cc:14]
    rb"|(?:\x1b\[[0-9;]*m)?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[VIWEF]:onnxruntime"  # ONNX Runtime
    rb"|\[ ?(?:WARN|INFO|ERROR|DEBUG|VERBOSE):\d+@"  # OpenCV's logger
    rb"|\[[\w.-]+ @ 0x[0-9a-fA-F]+\] "  # FFmpeg inside OpenCV: [h264_v4l2m2m @ 0x55a5...] Could not find a device
    rb"|libpng (?:warning|error): |Corrupt JPEG data: |Premature end of JPEG file"  # image codecs inside OpenCV
    rb"|\x1b\[m\s*$"  # ONNX Runtime's colour reset after its message
    rb")"
)

#: First bytes of those lines: a partial line starting like this waits for its end.
_PREFIXES = (
    b"INFO: ", b"WARNING: ", b"ERROR: ", b"VERBOSE: ", b"I0", b"W0", b"E0", b"\x1b[", b"[", b"libpng ",
    b"Corrupt JPEG", b"Premature end", b"19", b"20",
)

_active: Optional[_Filter] = None


def _may_be_native(partial: bytes) -> bool:
    return any(p.startswith(partial[: len(p)]) for p in _PREFIXES)


class _Filter:
    def __init__(self) -> None:
        sys.stderr.flush()
        self.original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.read_end = read_end
        self.dropped = 0
        self.thread = threading.Thread(target=self._pump, name="native-log-filter", daemon=True)
        self.thread.start()

    def _emit(self, data: bytes) -> None:
        while data:
            written = os.write(self.original, data)
            data = data[written:]

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                if pending and not NATIVE_LOG_LINE.match(pending):
                    self._emit(pending)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = []
            for line in lines:
                if NATIVE_LOG_LINE.match(line):
                    self.dropped += 1
                else:
                    out.append(line + b"\n")
            if pending and not _may_be_native(pending.lstrip(b"\r")[:16] or pending):
                out.append(pending)  # e.g. the progress bar's "\r 40%|..." updates: show them now
                pending = b""
            if out:
                self._emit(b"".join(out))

    def stop(self) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.original, 2)  # closes the pipe's last write end: the thread sees its end
        self.thread.join(timeout=2.0)
        os.close(self.read_end)


def quiet_native_logs() -> None:
    """Filter the native libraries' log lines out of fd 2 for the rest of the process
    (idempotent). Python's own output on stderr is passed on unchanged."""
    global _active
    if _active is not None:
        return
    try:
        _active = _Filter()
    except OSError:  # no usable fd 2 (a daemon): nothing to keep quiet
        return
    atexit.register(restore_native_logs)


def restore_native_logs() -> None:
    """Put fd 2 back as it was (after passing on what the filter still holds)."""
    global _active
    if _active is not None:
        active, _active = _active, None
        active.stop()
