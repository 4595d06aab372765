"""Writing a corruption data set: layout, manifest, resume, refusals, failures, workers, CLI."""

import hashlib
import json
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import robustgsl.corruptions as corruptions
from robustgsl.cli import main
from robustgsl.corruptions import corrupt
from robustgsl.corruptions.dataset import default_out_dir, verify_corruption_dataset, write_corruption_dataset
from robustgsl.errors import InputError
from corruption_schema_checks import array_problems, corruption_folder_problems, manifest_problems
from robustgsl.schema import corruption as schema

RS = np.random.RandomState(0)
IMAGES = RS.randint(0, 256, (7, 32, 32, 3)).astype(np.uint8)
LABELS = RS.randint(0, 10, 7)
NAMES = ("gaussian_noise", "contrast")


def write(out, **kwargs):
    options = dict(corruptions=NAMES, seed=3, workers=1, dataset_name="synthetic", quiet=True, chunk_size=3)
    options.update(kwargs)
    images = options.pop("images", IMAGES)
    labels = options.pop("labels", LABELS)
    return write_corruption_dataset(images, labels, out, **options)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_layout_labels_and_manifest(tmp_path):
    manifest = write(tmp_path)
    n = len(IMAGES)
    for name in NAMES:
        data = np.load(tmp_path / f"{name}.npy")
        assert data.dtype == np.uint8 and data.shape == (5 * n, 32, 32, 3)
        for severity in range(1, 6):  # block k holds severity k + 1, in test-set order
            np.testing.assert_array_equal(data[(severity - 1) * n:severity * n], corrupt(IMAGES, name, severity, seed=3))
    labels = np.load(tmp_path / "labels.npy")
    assert labels.dtype == np.uint8 and labels.shape == (5 * n,)
    np.testing.assert_array_equal(labels, np.concatenate([LABELS] * 5))
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["seed"] == 3 and on_disk["dataset"] == "synthetic" and on_disk["n_images"] == n
    assert on_disk["severities"] == [1, 2, 3, 4, 5]
    assert on_disk["generator_version"] == corruptions.GENERATOR_VERSION
    assert "make_cifar_c.py" in on_disk["constants_source"]
    for file_name in ["labels.npy", "gaussian_noise.npy", "contrast.npy"]:
        assert on_disk["files"][file_name]["sha256"] == sha256(tmp_path / file_name)
    assert on_disk["files"]["contrast.npy"]["constants"] == [0.75, 0.5, 0.4, 0.3, 0.15]
    assert verify_corruption_dataset(tmp_path, NAMES, "all") == []
    assert leftovers(tmp_path) == []


def test_manifest_states_how_exact_each_corruption_is(tmp_path):
    import cv2

    exactness = write(tmp_path)["exactness"]
    assert exactness["opencv"] == cv2.__version__ == json.loads((tmp_path / "manifest.json").read_text())[
        "versions"]["opencv"]
    assert "make_cifar_c.py" in exactness["reference"]
    assert set(exactness["corruptions"]) == set(corruptions.ALL_CORRUPTIONS)
    elastic = exactness["corruptions"]["elastic_transform"]
    assert "OpenCV 4.10-4.14" in elastic and "OpenCV 5.0" in elastic and "85-90 %" in elastic
    assert "scikit-image 0.14" in exactness["corruptions"]["impulse_noise"]
    assert exactness["corruptions"]["contrast"] == "bit-exact against the reference"


def test_written_folder_matches_the_schema(tmp_path):
    write(tmp_path, severities="2,5")
    assert corruption_folder_problems(tmp_path) == []
    manifest = json.loads((tmp_path / schema.MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {schema.LABELS_FILE} | {schema.data_file(name) for name in NAMES}
    data = np.load(tmp_path / schema.data_file("contrast"))
    rows = schema.severity_rows(manifest["severities"], 5, len(IMAGES))
    np.testing.assert_array_equal(data[rows], corrupt(IMAGES, "contrast", 5, seed=3))
    labels = np.load(tmp_path / schema.LABELS_FILE)
    np.testing.assert_array_equal(labels[rows], LABELS)


def test_schema_checks_catch_a_drifted_folder(tmp_path):
    manifest = write(tmp_path)
    drifted = {**manifest, "severities": [3, 1], "extra": 1}
    del drifted["seed"]
    drifted["files"] = {**manifest["files"], "contrast.npy": {"sha256": "0", "bytes": 1}}
    problems = manifest_problems(drifted)
    assert "missing field 'seed'" in problems and "unknown field 'extra'" in problems
    assert any("severities [3, 1]" in p for p in problems)
    assert any(p.startswith("files['contrast.npy'] has ['bytes', 'sha256'], the schema") for p in problems)
    wrong = np.zeros((5 * len(IMAGES), 32, 32, 3), np.float32)
    assert array_problems(wrong, "contrast.npy", manifest) == [
        f"contrast.npy: float32 {wrong.shape}, the layout says uint8 {wrong.shape}"]
    assert array_problems(np.zeros(3, np.uint8), schema.LABELS_FILE, manifest) == [
        f"labels.npy: uint8 (3,), the layout says uint8 ({5 * len(IMAGES)},)"]
    np.save(tmp_path / "contrast.npy", np.zeros((2, 32, 32, 3), np.uint8))
    assert any(p.startswith("contrast.npy: uint8 (2, 32, 32, 3)") for p in corruption_folder_problems(tmp_path))


def test_severity_subset_is_stacked_in_order_and_recorded(tmp_path):
    write(tmp_path, severities="4,2")
    data = np.load(tmp_path / "contrast.npy")
    assert data.shape == (14, 32, 32, 3)
    np.testing.assert_array_equal(data[:7], corrupt(IMAGES, "contrast", 2))
    np.testing.assert_array_equal(data[7:], corrupt(IMAGES, "contrast", 4))
    assert json.loads((tmp_path / "manifest.json").read_text())["severities"] == [2, 4]
    assert verify_corruption_dataset(tmp_path, NAMES, "2") == []
    assert any("severities [5]" in p for p in verify_corruption_dataset(tmp_path, NAMES, "2,5"))


def test_bytes_do_not_depend_on_workers_or_chunks(tmp_path):
    write(tmp_path / "one", workers=1, chunk_size=7)
    write(tmp_path / "two", workers=2, chunk_size=2)
    for name in NAMES:
        assert sha256(tmp_path / "one" / f"{name}.npy") == sha256(tmp_path / "two" / f"{name}.npy")


def test_resume_skips_verified_files_and_redoes_damaged_ones(tmp_path):
    write(tmp_path)
    contrast = tmp_path / "contrast.npy"
    good = sha256(contrast)
    first_mtime = (tmp_path / "gaussian_noise.npy").stat().st_mtime_ns
    raw = bytearray(contrast.read_bytes())
    raw[-1] ^= 0xFF
    contrast.write_bytes(bytes(raw))
    problems = verify_corruption_dataset(tmp_path, NAMES)
    assert problems == ["contrast.npy: SHA-256 differs from the manifest (file changed or damaged)"]
    messages = []
    write(tmp_path, log=messages.append)
    assert any("gaussian_noise" in m and "skipped" in m for m in messages)
    assert any("contrast: wrote" in m for m in messages)
    assert (tmp_path / "gaussian_noise.npy").stat().st_mtime_ns == first_mtime
    assert sha256(contrast) == good
    (tmp_path / "gaussian_noise.npy").unlink()
    assert verify_corruption_dataset(tmp_path, NAMES) == ["gaussian_noise.npy: missing"]


@pytest.mark.parametrize("change, message", [
    (dict(seed=4), "seed: folder has 3, this run 4"),
    (dict(dataset_name="cifar10"), "dataset: folder has 'synthetic', this run 'cifar10'"),
    (dict(images=IMAGES[:5], labels=LABELS[:5]), "n_images: folder has 7, this run 5"),
    (dict(images=255 - IMAGES), "the images differ"),
    (dict(severities="1,2"), "severities: folder has"),
])
def test_folder_from_another_run_is_refused_unless_overwrite(tmp_path, change, message):
    write(tmp_path)
    before = {p.name: sha256(p) for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=message + ".*--overwrite"):
        write(tmp_path, **change)
    assert {p.name: sha256(p) for p in tmp_path.iterdir()} == before  # nothing touched
    write(tmp_path, corruptions=["contrast"], overwrite=True, **change)
    assert not (tmp_path / "gaussian_noise.npy").exists()  # the old run's data is gone, not mixed in
    assert verify_corruption_dataset(tmp_path, ["contrast"], change.get("severities", "all")) == []


def test_npy_files_without_manifest_are_refused(tmp_path):
    np.save(tmp_path / "fog.npy", np.zeros(3))
    with pytest.raises(InputError, match=r"no manifest.json \(fog.npy\).*--overwrite"):
        write(tmp_path)
    assert verify_corruption_dataset(tmp_path, NAMES)[0].endswith("missing (not made by robustgsl corrupt, "
                                                                   "or interrupted before start)")


def test_failure_mid_run_leaves_only_whole_verified_files(tmp_path, monkeypatch):
    def broken(images, severity, rngs):
        if severity == 4:
            raise RuntimeError("simulated crash")
        return images.copy()

    monkeypatch.setitem(corruptions._registry()[0], "contrast", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write(tmp_path)
    assert not (tmp_path / "contrast.npy").exists() and leftovers(tmp_path) == []
    assert verify_corruption_dataset(tmp_path, ["gaussian_noise"]) == []
    assert verify_corruption_dataset(tmp_path, NAMES) == ["contrast.npy: not recorded in manifest.json"]
    monkeypatch.undo()
    messages = []
    write(tmp_path, log=messages.append)  # resumes: only contrast is computed
    assert [m.split(":")[0] for m in messages] == ["gaussian_noise", "contrast"] and "skipped" in messages[0]
    assert verify_corruption_dataset(tmp_path, NAMES) == []


def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    write(tmp_path, corruptions=["gaussian_noise"])

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    with pytest.raises(OSError, match="(?i)no space left") as raised:
        write(tmp_path)
    assert str(tmp_path / "contrast.npy") in str(raised.value)  # the message names the file
    monkeypatch.undo()
    assert not (tmp_path / "contrast.npy").exists() and leftovers(tmp_path) == []
    assert verify_corruption_dataset(tmp_path, ["gaussian_noise"]) == []


def test_killed_worker_leaves_no_partial_file(tmp_path):
    images = np.random.RandomState(1).randint(0, 256, (400, 32, 32, 3)).astype(np.uint8)
    outcome = {}

    def run():
        try:
            write(tmp_path, images=images, labels=np.zeros(400, int), corruptions=["shot_noise", "gaussian_noise"],
                  workers=2, chunk_size=20)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 60
    while not multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.01)
    children = multiprocessing.active_children()
    assert children, "no worker process started"
    os.kill(children[0].pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    assert "worker process died" in str(outcome.get("error")), outcome
    assert not (tmp_path / "shot_noise.npy").exists() and leftovers(tmp_path) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="unknown corruption 'blurr'"):
        write(tmp_path, corruptions="blurr")
    with pytest.raises(InputError, match="got 0"):
        write(tmp_path, severities=[0, 1])
    with pytest.raises(InputError, match="labels must be 7 integers"):
        write(tmp_path, labels=LABELS[:3])
    with pytest.raises(InputError, match="workers must be a positive integer, got 0"):
        write(tmp_path, workers=0)
    with pytest.raises(InputError, match="dtype uint8"):
        write(tmp_path, images=IMAGES.astype(float))
    assert list(tmp_path.iterdir()) == []


def test_default_out_dir():
    assert str(default_out_dir("cifar10")) == os.path.join("corruptions", "CIFAR-10-C")
    assert str(default_out_dir("cifar100")) == os.path.join("corruptions", "CIFAR-100-C")
    assert str(default_out_dir("digits")) == os.path.join("corruptions", "DIGITS-C")


# ---------------------------------------------------------------- CLI


def test_cli_writes_a_tiny_digits_set_and_a_grid(tmp_path, monkeypatch):
    import robustgsl.data

    images, labels = robustgsl.data.load_test_images("digits")
    monkeypatch.setattr(robustgsl.data, "load_test_images", lambda *a, **k: (images[:6], labels[:6]))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["corrupt", "--dataset", "digits", "--corruptions", "contrast,impulse_noise",
                                  "--workers", "1", "--seed", "2"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "corruptions" / "DIGITS-C"
    assert np.load(folder / "impulse_noise.npy").shape == (30, 32, 32, 3)
    assert "impulse_noise: wrote" in result.output
    assert verify_corruption_dataset(folder, "contrast,impulse_noise", seed=2, dataset="digits", n_images=6) == []
    again = runner.invoke(main, ["corrupt", "--dataset", "digits", "--corruptions", "contrast", "--seed", "5"])
    assert again.exit_code == 2 and "seed: folder has 2, this run 5" in again.output
    grid = runner.invoke(main, ["corrupt", "--dataset", "digits", "--corruptions", "contrast,pixelate", "--grid",
                                "--grid-image", "3", "--out", "g"])
    assert grid.exit_code == 0, grid.output
    assert (tmp_path / "g" / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--corruptions", "fogg"], "unknown corruption 'fogg'"),
    (["--severities", "0,1"], "severity must be an integer from 1 to 5, got 0"),
    (["--dataset", "imagenet"], "--dataset must be one of cifar10, cifar100, digits, imagefolder, got 'imagenet'"),
])
def test_cli_bad_input_exits_2_with_a_message(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["corrupt", "--dataset", "digits", *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "corruptions").exists()


def test_jobs_splitting_corruptions_into_one_folder_keep_every_manifest_entry(tmp_path, monkeypatch):
    """Job A reads the manifest, job B writes and records its file, then A records: both entries stay."""
    from robustgsl.corruptions import schedule
    from robustgsl.data import load_dataset

    images, labels = load_dataset("digits", "test")
    images, labels = images[:30], labels[:30]
    original = schedule.corrupt
    other_job_done = []

    def corrupt_while_another_job_runs(batch, name, severity, seed, indices=None):
        if name == "contrast" and not other_job_done:
            other_job_done.append(True)
            write_corruption_dataset(images, labels, tmp_path, corruptions="gaussian_noise", seed=0, workers=1,
                                     dataset_name="digits", quiet=True)
        return original(batch, name, severity, seed, indices=indices)

    monkeypatch.setattr(schedule, "corrupt", corrupt_while_another_job_runs)
    write_corruption_dataset(images, labels, tmp_path, corruptions="contrast", seed=0, workers=1,
                             dataset_name="digits", quiet=True)
    assert other_job_done
    assert verify_corruption_dataset(tmp_path, ["contrast", "gaussian_noise"], seed=0, dataset="digits",
                                     n_images=30) == []


# ---------------------------------------------------------------- faults: kills, concurrent jobs, disks

from pathlib import Path  # noqa: E402

from robustgsl.io import is_temporary  # noqa: E402

from fault_helpers import Child, child_pids, small_disk, wait_until_gone  # noqa: E402


def _save_images(folder: Path, n: int) -> Path:
    path = folder / "images.npy"
    np.save(path, np.random.RandomState(1).randint(0, 256, (n, 32, 32, 3)).astype(np.uint8))
    return path


def test_workers_die_when_the_main_process_is_killed_and_a_rerun_cleans_up(tmp_path):
    """Issue 13, items 2 and 9: kill -9 of the main process, here half-way through writing its second file,
    used to leave its workers running under PID 1 and the partial file behind. The rerun gives the bytes
    of an uninterrupted run."""
    images_path = _save_images(tmp_path, 200)
    names = "gaussian_noise,shot_noise,contrast"
    out = tmp_path / "out"
    child = Child(f"""
import numpy as np
from robustgsl.corruptions import dataset
from robustgsl.io import atomic_path
original = dataset.save_npy_atomic
def save_and_stop_half_way_through_the_second(path, array):
    if path.name in ("labels.npy", "gaussian_noise.npy"):
        return original(path, array)
    with atomic_path(path) as tmp:
        tmp.write_bytes(array.tobytes()[: array.nbytes // 2])
        ready()  # the workers are computing the third corruption meanwhile
dataset.save_npy_atomic = save_and_stop_half_way_through_the_second
images = np.load({str(images_path)!r})
dataset.write_corruption_dataset(images, np.zeros(len(images), int), {str(out)!r}, corruptions={names!r},
                                 workers=2, chunk_size=20, quiet=True)
""", cwd=tmp_path)
    child.wait_ready()
    workers = child_pids(child.pid)
    assert len(workers) >= 2, workers  # the two workers (and multiprocessing's resource tracker)
    child.kill()
    survivors = wait_until_gone(workers)
    for pid in survivors:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    assert [p.name for p in out.iterdir() if is_temporary(p)] and (out / "gaussian_noise.npy").is_file()
    images = np.load(images_path)
    write_corruption_dataset(images, np.zeros(len(images), int), out, corruptions=names, workers=1, quiet=True)
    assert not [p for p in out.iterdir() if is_temporary(p)]
    straight = tmp_path / "straight"
    write_corruption_dataset(images, np.zeros(len(images), int), straight, corruptions=names, workers=1, quiet=True)
    for name in names.split(",") + ["labels"]:
        assert (out / f"{name}.npy").read_bytes() == (straight / f"{name}.npy").read_bytes(), name


def test_a_job_starting_while_another_records_keeps_every_entry(tmp_path):
    """Issue 13, item 3: job A reads the manifest (labels.npy verifies) and pauses; job B then records a
    file; A's start-up write of the manifest, and its own records, must not erase B's entry."""
    images_path = _save_images(tmp_path, 30)
    images, labels = np.load(images_path), np.zeros(30, int)
    folder = tmp_path / "out"
    common = dict(seed=0, workers=1, dataset_name="digits", quiet=True)
    write_corruption_dataset(images, labels, folder, corruptions="contrast", **common)
    go = tmp_path / "go"
    job_a = Child(f"""
import os, time
import numpy as np
from robustgsl.corruptions import dataset
original = dataset.read_manifest
calls = []
def read_then_pause(out_dir):
    manifest = original(out_dir)
    if not calls:  # the start-up read: job A now holds its copy of the manifest
        calls.append(1)
        signal_ready()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.02)
    return manifest
dataset.read_manifest = read_then_pause
dataset.write_corruption_dataset(np.load({str(images_path)!r}), np.zeros(30, int), {str(folder)!r},
                                 corruptions="gaussian_noise", seed=0, workers=1, dataset_name="digits", quiet=True)
""", cwd=tmp_path)
    job_a.wait_ready()
    write_corruption_dataset(images, labels, folder, corruptions="shot_noise", **common)  # job B
    go.write_text("")
    output = job_a.process.communicate(timeout=300)[0].decode()
    assert job_a.process.returncode == 0, output
    assert verify_corruption_dataset(folder, ["contrast", "shot_noise", "gaussian_noise"], seed=0,
                                     dataset="digits", n_images=30) == []


def _tiny_digits(monkeypatch):
    import robustgsl.data

    images, labels = robustgsl.data.load_test_images("digits")
    monkeypatch.setattr(robustgsl.data, "load_test_images", lambda *a, **k: (images[:6], labels[:6]))


def test_cli_on_a_full_disk_names_the_file_and_the_cause(tmp_path, monkeypatch):
    _tiny_digits(monkeypatch)
    disk = tmp_path / "disk"
    with small_disk(disk, "64k"):  # labels and manifest fit; contrast.npy (92 KB) does not
        out = disk / "c"
        result = CliRunner().invoke(main, ["corrupt", "--dataset", "digits", "--corruptions", "contrast",
                                           "--workers", "1", "--quiet", "--out", str(out)])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"Error: cannot write {out / 'contrast.npy'}: no space left on the device" in result.output
        assert not [p for p in out.iterdir() if is_temporary(p)]
        assert verify_corruption_dataset(out, ["contrast"]) == ["contrast.npy: not recorded in manifest.json"]


def test_cli_refuses_a_read_only_out_before_computing(tmp_path, monkeypatch):
    _tiny_digits(monkeypatch)
    monkeypatch.setattr("robustgsl.corruptions.dataset.make_scheduler", lambda *a: pytest.fail("computing began"))
    with small_disk(tmp_path / "disk", "64k", read_only=True):
        result = CliRunner().invoke(main, ["corrupt", "--dataset", "digits", "--corruptions", "contrast",
                                           "--out", str(tmp_path / "disk" / "c")])
    assert result.exit_code == 2 and "read-only file system" in result.output, result.output


def test_a_stale_copy_of_the_manifest_never_rolls_back_another_jobs_newer_entry(tmp_path):
    """Two jobs hold the manifest; B renews an entry (say, on a machine whose libraries give other bytes);
    A, saving later from its older copy, must keep B's entry: the disk wins for entries A did not record."""
    from robustgsl.corruptions.manifest import CorruptionManifest, read_manifest

    write(tmp_path, corruptions=["contrast"])
    job_a = CorruptionManifest(tmp_path, read_manifest(tmp_path))
    job_b = CorruptionManifest(tmp_path, read_manifest(tmp_path))
    np.save(tmp_path / "contrast.npy", np.ones((35, 32, 32, 3), np.uint8))
    job_b.record("contrast.npy", shape=[35, 32, 32, 3], corruption="contrast")
    job_a.save()
    assert read_manifest(tmp_path)["files"]["contrast.npy"] == job_b.data["files"]["contrast.npy"]
    assert job_a.problem("contrast.npy") is None
