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
