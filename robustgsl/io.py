"""Writing files and folders so that nothing already written is lost or left half-written.

Every file is written into a temporary file beside it, flushed to disk and renamed over the destination
(rename is atomic on POSIX within one file system); a whole folder is written into a temporary sibling
folder and swapped in once complete (``atomic_folder``). A temporary is named
``.<name>.<pid>-<host>.<random>.tmp`` after its destination and its writer, so the next start can remove
the temporaries of a writer that was killed (``remove_stale_temporaries``). An OSError while writing
becomes a ``WriteError`` naming the file and the cause (full disk, read-only file system, ...). Files get
the permissions a plain ``open()`` gives (0666 less the umask), whatever the library that wrote them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from robustgsl.errors import InputError, WriteError

# Who wrote a temporary: the process, and the machine (a hash of its name: several machines may share
# a file system, and a process id means something only on its own machine).
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(
    r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.)?[a-z0-9_]{8}\.(?P<kind>tmp|old)$")
# A temporary of another machine (or of an older robustgsl, without a writer in its name) is stale when
# it is this old: a file is written in one go right after it is created; a folder fills for as long as
# its evaluation runs.
STALE_FILE_SECONDS = 600
STALE_FOLDER_SECONDS = 24 * 3600
_LOW_SPACE_BYTES = 1 << 20

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a folder on its path is a file",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "a file is in the way",
    errno.ENAMETOOLONG: "the name is too long",
}


def _owner() -> str:
    return f"{os.getpid()}-{_HOST}"


def _plain_mode(directory: bool = False) -> int:
    """What open() (0o666) or mkdir() (0o777) would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


# --- errors ---------------------------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_error_message(path: str | os.PathLike, error: OSError) -> str:
    """'cannot write PATH: CAUSE', the cause in words (numpy's short writes carry no errno: then the
    free space says whether the disk is full)."""
    cause = _CAUSES.get(error.errno)
    if cause is None and error.errno is None:
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(_nearest_existing(Path(path))).free
            if free < _LOW_SPACE_BYTES:
                cause = f"no space left on the device ({free} bytes free; {error})"
    return f"cannot write {path}: {cause or error.strerror or error}"


def check_writable_folder(path: str | os.PathLike, what: str = "folder", replace: bool = False) -> None:
    """InputError now, before any long work, unless ``path`` is a folder this process can write into
    (or can create): not a file, not on a read-only file system, not forbidden. ``replace``: the folder
    is to be replaced as a whole, so its parent is what must be writable."""
    path = Path(path)
    existing = _nearest_existing(path.parent if replace else path)
    if not existing.is_dir():
        where = "is a file" if existing == Path(os.path.abspath(path)) else f"cannot be made: {existing} is a file"
        raise InputError(f"{what} {path} {where}; choose another")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        cause = "is on a read-only file system" if read_only else "is not writable (permission denied)"
        raise InputError(f"cannot write {what} {path}: {existing} {cause}; choose another")


# --- temporaries ----------------------------------------------------------------------------------

def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary (or swapped-out old folder) of this module's writers."""
    return _TEMPORARY.match(Path(path).name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_stale(path: Path, match: re.Match, now: float) -> bool:
    if match["host"] == _HOST:
        return not _alive(int(match["pid"]))
    try:
        age = now - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > (STALE_FOLDER_SECONDS if path.is_dir() else STALE_FILE_SECONDS)


def _stale_entries(folder: Path, names=None, kinds=("tmp",)) -> list[tuple[Path, re.Match]]:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    found = []
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and match["kind"] in kinds and (names is None or match["name"] in names) \
                and _is_stale(entry, match, now):
            found.append((entry, match))
    return found


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # best effort: a later write says what is wrong with the disk
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike, names=None) -> list[Path]:
    """Remove the temporaries in ``folder`` (only those of the destinations ``names``, when given) whose
    writer is dead: a process of this machine that no longer runs, or, for another machine's, one older
    than STALE_FILE_SECONDS (a file) or STALE_FOLDER_SECONDS (a folder). Returns what was removed."""
    removed = []
    for path, _ in _stale_entries(Path(folder), names):
        _remove(path)
        removed.append(path)
    return removed


# --- files ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    On any error the temporary is removed and ``path`` is unchanged; an OSError becomes a WriteError
    naming ``path`` and the cause.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        # After the block: some writers (safetensors) replace the file and leave it 0600.
        os.chmod(tmp, _plain_mode())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(write_error_message(path, error)) from error
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz archive of named arrays (``np.savez``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def write_csv_atomic(path: str | os.PathLike, frame, **to_csv_kwargs) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, **to_csv_kwargs)
    write_text_atomic(path, buffer.getvalue())


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- folders --------------------------------------------------------------------------------------

def recover_folder(path: str | os.PathLike) -> None:
    """Undo what a writer killed inside ``atomic_folder`` left beside ``path``: its old folder, moved
    aside for the swap, is put back when the new one had not been moved in yet (and deleted when it
    had); its unfinished new folder is deleted."""
    path = Path(os.path.abspath(path))
    backups = _stale_entries(path.parent, names=[path.name], kinds=("old",))
    for backup, _ in sorted(backups, key=lambda item: item[0].lstat().st_mtime, reverse=True):
        if path.exists() or path.is_symlink():
            _remove(backup)
        else:
            os.rename(backup, path)
    remove_stale_temporaries(path.parent, names=[path.name])


def check_replaceable_folder(path: str | os.PathLike, may_replace: Callable[[Path], bool] | None = None) -> None:
    """InputError unless ``atomic_folder(path, may_replace)`` may replace ``path`` (its checks, made early
    by callers that write it only after long work)."""
    path = Path(os.path.abspath(path))
    recover_folder(path)
    check_writable_folder(path, replace=True)
    if path.exists() and not path.is_dir():
        raise InputError(f"folder {path} is a file; choose another")
    if path.is_dir() and may_replace is not None and any(not is_temporary(p) for p in path.iterdir()) \
            and not may_replace(path):
        sample = sorted(p.name for p in path.iterdir() if not is_temporary(p))[:3]
        raise InputError(f"{path} already holds other files ({', '.join(sample)}, ...), which writing it would "
                         f"delete; choose another folder or empty it")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, may_replace: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside ``path``; when the block succeeds it replaces ``path``
    as a whole, so ``path`` holds the old set of files or the new one, never a mix.

    Checked before the block runs: ``path`` is not a file, can be written, and, if it exists and is not
    empty, ``may_replace(path)`` allows replacing it. On an error the temporary folder is removed and
    ``path`` is unchanged. The swap is two renames (old aside, new in); a writer killed between them
    leaves the old folder aside, and the next ``atomic_folder`` (or ``recover_folder``) on ``path`` puts
    it back.
    """
    path = Path(os.path.abspath(path))
    check_replaceable_folder(path, may_replace)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent))
        os.chmod(staging, _plain_mode(directory=True))
    except OSError as error:
        raise WriteError(write_error_message(path, error)) from error
    try:
        yield staging
        _swap_in(staging, path)
    except WriteError as error:
        _remove(staging)
        # Name the file as the user knows it, not its place in the temporary folder.
        raise WriteError(f"{str(error).replace(str(staging), str(path))} ({path} is unchanged)") from error
    except BaseException:
        _remove(staging)
        raise


def _swap_in(staging: Path, path: Path) -> None:
    backup = None
    try:
        if path.exists() or path.is_symlink():
            backup = path.with_name(f".{path.name}.{_owner()}.{secrets.token_hex(4)}.old")
            os.rename(path, backup)
        os.rename(staging, path)
    except OSError as error:
        if backup is not None and not path.exists():
            os.rename(backup, path)
        raise WriteError(write_error_message(path, error)) from error
    if backup is not None:
        _remove(backup)
