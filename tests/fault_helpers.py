"""Fault injection for tests: a child process killed with SIGKILL at a chosen moment, and small real disks.

``Child`` runs Python code in a fresh interpreter (with this checkout first on the path). The code calls
``ready()`` at the moment the test wants it killed (typically from a monkeypatched function, which then
sleeps), or ``signal_ready()`` to hand over to the test and go on; the test blocks on a pipe until then,
so no timing is guessed. ``small_disk`` mounts a tmpfs of
a given size (a real full disk, or a read-only one) and skips the test where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Prepended to the child's code: ready() tells the test "kill me now" and waits to be killed;
# signal_ready() only tells the test that the moment has come (the child goes on).
_PRELUDE = """
import os as _os, time as _time
def signal_ready():
    _os.write(int(_os.environ["FAULT_READY_FD"]), b"x")
    _os.close(int(_os.environ["FAULT_READY_FD"]))
def ready():
    signal_ready()
    _time.sleep(3600)
"""


class Child:
    """``python -c code`` in ``cwd``; ``wait_ready()`` returns once the code has called ``ready()``."""

    def __init__(self, code: str, cwd: Path):
        read_end, write_end = os.pipe()
        env = dict(os.environ, FAULT_READY_FD=str(write_end),
                   PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.process = subprocess.Popen([sys.executable, "-c", _PRELUDE + textwrap.dedent(code)], cwd=cwd, env=env,
                                        pass_fds=(write_end,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.close(write_end)
        self.ready_fd = read_end

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 300) -> None:
        readable, _, _ = select.select([self.ready_fd], [], [], timeout)
        signalled = bool(readable) and os.read(self.ready_fd, 1) == b"x"
        os.close(self.ready_fd)
        if not signalled:
            self.process.kill()
            output = self.process.communicate()[0].decode(errors="replace")
            raise AssertionError(f"the child never reached its moment (exit {self.process.returncode}):\n{output}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the child."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(60)
        self.process.stdout.close()


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_gone(pids, timeout: float = 30) -> list[int]:
    """The pids still running after ``timeout`` seconds (they were given that long to exit)."""
    deadline = time.time() + timeout
    alive = [pid for pid in pids if is_running(pid)]
    while alive and time.time() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if is_running(pid)]
    return alive


@contextlib.contextmanager
def small_disk(path: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` (e.g. "300k") mounted at ``path`` (read-only from the start when asked).

    Yields a function that remounts it read-only, so that files can be put in first. Skips the test
    where mounting is not permitted.
    """
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def make_read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)

    try:
        if read_only:
            make_read_only()
        yield make_read_only
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (subfolders included), by path relative to it: the state a failed command
    must leave unchanged."""
    folder = Path(folder)
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
