"""What the frameworks print when a `ferry` command imports them.

TensorFlow logs 7-17 lines at import and first run (oneDNN and CPU notes, CUDA probes
on CPU machines: "failed call to cuInit"), and none of them is about the user's model;
they bury ferry's own lines. TF_CPP_MIN_LOG_LEVEL quiets TF's own logger, but TF >= 2.16
also logs through absl, which ignores it (measured with TF 2.21: the same 7 lines at
levels 2 and 3). So the model verbs (`save`, `lite`, `optimize`) also pass the process's
native stderr (file descriptor 2, where C++ writes) through a filter that drops lines
in TF's and absl's log format; Python's own stderr stays the terminal, untouched.

`--debug` (or FERRY_DEBUG=1) shows everything, and so does a TF_CPP_MIN_LOG_LEVEL the
user set. `ferry serve` gets the variable only: a server's stderr is its log, and a
filter thread there would lose a crashing process's last lines.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

QUIET_TF_LEVEL = "2"
_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# Python loggers of the frameworks whose warnings are about their own internals.
_CHATTY_LOGGERS = ("absl", "tensorflow", "h5py")
# A native log line: glog/absl's `I0000 00:00:1796182721.051820   29332 port.cc:153] ...`
# (levels I, W, E; F, a fatal error, is never dropped), and absl's one-time preamble.
NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    rb"STDERR)\r?$"
)

_state = {"quiet": False}


def quiet_tensorflow(debug: bool) -> None:
    """Quiet TensorFlow's start-up logs unless `debug` or the user set the level."""
    if debug or _LEVEL_VARIABLE in os.environ:
        os.environ.setdefault(_LEVEL_VARIABLE, "0")
        return
    os.environ[_LEVEL_VARIABLE] = QUIET_TF_LEVEL
    if not _own_process_stderr():
        return
    _state["quiet"] = True
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _own_process_stderr() -> bool:
    """Whether `ferry` runs as its own process: its sys.stderr is the process's. Called
    in-process (click's CliRunner, pytest's capture), stderr is theirs, and neither the
    loggers nor file descriptor 2 of the host process are ferry's to change."""
    return sys.stderr is sys.__stderr__


def filter_native_logs() -> None:
    """For a model verb: drop native log lines from fd 2 from now on (see the module
    docstring); a no-op with --debug, a user-set level, or when already filtering."""
    if not _state["quiet"] or _state.get("filtering") or not _own_process_stderr():
        return
    _state["filtering"] = True
    sys.stderr.flush()
    terminal = os.dup(2)
    # Python's stderr keeps the terminal (so rich still sees a tty); fd 2 becomes a pipe.
    sys.stderr = open(  # noqa: SIM115 - lives as long as the process
        os.dup(terminal), "w", buffering=1, encoding="utf-8", errors="backslashreplace"
    )
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(
        target=_forward, args=(read_end, terminal), name="ferry-native-stderr", daemon=True
    )
    pump.start()

    def restore() -> None:
        os.dup2(terminal, 2)  # closes the pipe's last write end: the pump sees EOF
        pump.join(timeout=2.0)

    atexit.register(restore)


def _forward(read_end: int, terminal: int) -> None:
    """Copy the pipe to the terminal line by line, without the native log lines."""
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = [line + b"\n" for line in lines if not NATIVE_LOG_LINE.match(line)]
            if kept:
                os.write(terminal, b"".join(kept))
    if pending and not NATIVE_LOG_LINE.match(pending):
        os.write(terminal, pending)
