import os

import numpy as np
import pytest

from robustgsl.io import atomic_path, save_npy_atomic, sha256_file, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_written_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_npy_round_trip_and_hash(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    save_npy_atomic(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)
    import hashlib

    assert sha256_file(tmp_path / "a.npy") == hashlib.sha256((tmp_path / "a.npy").read_bytes()).hexdigest()


# --- faults: modes, write errors, temporaries of killed writers, folders written whole --------------------

import errno  # noqa: E402
from pathlib import Path  # noqa: E402

from robustgsl import io as rio  # noqa: E402
from robustgsl.errors import InputError, WriteError  # noqa: E402

from fault_helpers import Child, small_disk  # noqa: E402


def test_a_writer_that_replaces_the_temporary_still_gives_ordinary_permissions(tmp_path):
    """safetensors' save_file replaces the file it is given with a new 0600 one; the result is still 0644."""
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, b"weights")
            os.close(fd)
    finally:
        os.umask(umask)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("code,cause", [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied"),
])
def test_write_errors_name_the_file_and_the_cause_and_keep_the_old_file(tmp_path, monkeypatch, code, cause):
    target = tmp_path / "summary.csv"
    write_text_atomic(target, "old\n")

    def failing_write(self, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with pytest.raises(WriteError) as raised:
        write_text_atomic(target, "new\n")
    monkeypatch.undo()
    assert str(raised.value) == f"cannot write {target}: {cause}"
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv"]


def test_a_short_write_on_a_real_full_disk_says_the_disk_is_full(tmp_path):
    """numpy's short writes raise an OSError without errno ("N requested and M written")."""
    disk = tmp_path / "disk"
    with small_disk(disk, "64k"):
        with pytest.raises(WriteError) as raised:
            save_npy_atomic(disk / "big.npy", np.zeros(1 << 20, np.uint8))
        assert str(raised.value).startswith(f"cannot write {disk / 'big.npy'}: no space left on the device")
        assert list(disk.iterdir()) == []


def test_a_read_only_disk_is_refused_before_any_work(tmp_path):
    disk = tmp_path / "disk"
    with small_disk(disk, "64k", read_only=True):
        with pytest.raises(InputError, match="read-only file system"):
            rio.check_writable_folder(disk / "runs" / "ce", "run folder")
        with pytest.raises(WriteError, match="read-only file system"):
            write_text_atomic(disk / "a.txt", "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        rio.check_writable_folder(tmp_path / "file")
    with pytest.raises(InputError, match=f"cannot be made: {tmp_path / 'file'} is a file"):
        rio.check_writable_folder(tmp_path / "file" / "sub")


def _killed_inside_a_write(folder: Path) -> None:
    """A real writer process killed (SIGKILL) with half a file written into its temporary."""
    child = Child(f"""
        from robustgsl.io import atomic_path
        with atomic_path({str(folder / 'checkpoint.pt')!r}) as tmp:
            tmp.write_bytes(b"half a checkpoint")
            ready()
    """, cwd=folder)
    child.wait_ready()
    child.kill()


def test_temporaries_of_a_killed_writer_are_removed_and_those_of_a_live_one_kept(tmp_path):
    _killed_inside_a_write(tmp_path)
    (dead,) = [p for p in tmp_path.iterdir() if rio.is_temporary(p)]
    assert dead.name.startswith(".checkpoint.pt.")
    legacy = tmp_path / ".metrics.jsonl.ab12cd34.tmp"  # an older robustgsl's name: no writer in it
    legacy.write_text("old")
    os.utime(legacy, (0, 0))
    fresh_legacy = tmp_path / ".config.json.zz99yy88.tmp"
    fresh_legacy.write_text("maybe another machine's, being written")
    with atomic_path(tmp_path / "mine.txt") as mine:  # this live process's
        mine.write_text("x")
        removed = rio.remove_stale_temporaries(tmp_path)
        assert sorted(removed) == sorted([dead, legacy])
        assert mine.exists() and fresh_legacy.exists()
    assert not rio.is_temporary(tmp_path / "checkpoint.pt") and rio.is_temporary(dead)


def _evaluation(folder: Path, text: str) -> None:
    folder.mkdir()
    (folder / "evaluation.json").write_text(text)
    (folder / "errors.csv").write_text(text)


def test_a_folder_is_replaced_as_a_whole_or_not_at_all(tmp_path):
    target = tmp_path / "report"
    _evaluation(target, "old")
    with rio.atomic_folder(target) as staging:
        (staging / "evaluation.json").write_text("new")
        assert (target / "errors.csv").read_text() == "old"  # nothing visible before the end
    assert sorted(p.name for p in target.iterdir()) == ["evaluation.json"]  # no file of the old set is left
    with pytest.raises(RuntimeError):
        with rio.atomic_folder(target) as staging:
            (staging / "evaluation.json").write_text("newer")
            raise RuntimeError("failed half-way")
    assert (target / "evaluation.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # the temporary folder is gone


def test_a_folder_of_other_files_or_a_file_is_refused_before_the_work(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="thesis.tex"):
        with rio.atomic_folder(notes, may_replace=lambda folder: False):
            raise AssertionError("the work must not start")
    (tmp_path / "a-file").write_text("keep me")
    with pytest.raises(InputError, match="is a file"):
        with rio.atomic_folder(tmp_path / "a-file"):
            raise AssertionError("the work must not start")
    assert (notes / "thesis.tex").read_text() == "keep me" and (tmp_path / "a-file").read_text() == "keep me"


@pytest.mark.parametrize("moment", ["before the swap", "between the two renames"])
def test_a_writer_killed_during_the_swap_leaves_a_folder_the_next_run_recovers(tmp_path, moment):
    target = tmp_path / "report"
    _evaluation(target, "old")
    hook = "ready()" if moment == "before the swap" else ""
    child = Child(f"""
        import os
        from robustgsl import io
        renames = []
        real_rename = os.rename
        def rename_then_wait(source, destination):
            real_rename(source, destination)
            renames.append(destination)
            if len(renames) == 1 and {moment == "between the two renames"!r}:
                ready()  # the old folder is aside, the new one not yet in place
        io.os.rename = rename_then_wait
        with io.atomic_folder({str(target)!r}) as staging:
            with open(os.path.join(staging, "evaluation.json"), "w") as handle:
                handle.write("new")
            {hook}
    """, cwd=tmp_path)
    child.wait_ready()
    child.kill()
    if moment == "between the two renames":
        assert not target.exists()  # the crash window: only the old folder, moved aside, is left
    rio.recover_folder(target)
    assert (target / "evaluation.json").read_text() == "old" and (target / "errors.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    with rio.atomic_folder(target) as staging:
        (staging / "evaluation.json").write_text("rerun")
    assert (target / "evaluation.json").read_text() == "rerun"
