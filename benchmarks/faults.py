"""Fault table: kill -9 at random moments and resume, and bad inputs, on tiny digits runs (about 15 min on 2 cores).

    python benchmarks/faults.py                     # 8 training kills, 4 corrupt kills, 4 evaluate kills, bad inputs
    python benchmarks/faults.py --kills 2 --no-bad-inputs

Kills: each job is started as its own process (`python -m robustgsl ...`) and killed with SIGKILL after a
random delay (seeded) within the time an uninterrupted run of it takes, then run again (with --resume for
training) until it finishes; its files are compared with those of the uninterrupted run, the baseline of
the same script. Also counted: temporaries left after the rerun, `corrupt` workers still running after
their main process was killed, and evaluation folders found mixed (neither the old set nor a complete new
one) right after a kill. Bad inputs: each command must exit non-zero with an `Error: ...` line, no
traceback, and leave the files it was given unchanged (their SHA-256 before and after). Read-only and full
disks are small tmpfs mounts (skipped where mounting is not permitted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "demo", "--width", "0.0625", "--device", "cpu", "--quiet"]
CORRUPTIONS = "gaussian_noise,shot_noise,contrast,fog"


def robustgsl(args, cwd: Path, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "robustgsl", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def run(args, cwd: Path) -> tuple[int, str, float]:
    started = time.time()
    process = robustgsl(args, cwd)
    output = process.communicate()[0].decode(errors="replace")
    return process.returncode, output, time.time() - started


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_after(args, cwd: Path, delay: float) -> list[int]:
    """Start, SIGKILL after ``delay`` seconds; the processes it had started that are still alive 10 s later."""
    process = robustgsl(args, cwd)
    deadline = time.time() + delay
    spawned: set[int] = set()
    while time.time() < deadline and process.poll() is None:
        spawned.update(children(process.pid))
        time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate()
    survivors = [pid for pid in spawned if running(pid)]
    for _ in range(100):  # they get 10 s to exit
        if not survivors:
            break
        time.sleep(0.1)
        survivors = [pid for pid in survivors if running(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


def digests(folder: Path, names) -> dict[str, str]:
    """SHA-256 per file name; a folder's (snapshots/) covers every file under it, with its relative path."""
    def digest(path: Path) -> str:
        if path.is_dir():
            parts = [f"{p.relative_to(path)}:{digest(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
            return hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return {name: digest(folder / name) for name in names if (folder / name).exists()}


def temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))]


# --- kills ----------------------------------------------------------------------------------------

def training_kills(work: Path, n: int, rng: random.Random, rows: list) -> Path:
    command = ["train", "--loss", "gsl", *TINY, "--epochs", "3"]
    code, output, seconds = run([*command, "--out", "runs/straight"], work)
    assert code == 0, output
    files = ("model.safetensors", "checkpoint.pt", "config.json")
    reference = digests(work / "runs/straight", files)
    identical = left = 0
    for k in range(n):
        out = f"runs/killed-{k}"
        kill_after([*command, "--out", out], work, rng.uniform(0.2, seconds))
        code, output, _ = run([*command, "--out", out, "--resume"], work)
        identical += code == 0 and digests(work / out, files) == reference
        left += len(temporaries(work / out))
    rows.append(("train -> kill -9 -> --resume", n, identical, f"{left} temporaries left"))
    return work / "runs/straight"


def corrupt_kills(work: Path, n: int, rng: random.Random, rows: list) -> Path:
    command = ["corrupt", "--dataset", "digits", "--corruptions", CORRUPTIONS, "--workers", "2", "--quiet"]
    code, output, seconds = run([*command, "--out", "c/straight"], work)
    assert code == 0, output
    files = [f"{name}.npy" for name in CORRUPTIONS.split(",")] + ["labels.npy"]
    reference = digests(work / "c/straight", files)
    identical = orphans = left = 0
    for k in range(n):
        out = f"c/killed-{k}"
        orphans += len(kill_after([*command, "--out", out], work, rng.uniform(0.5, seconds)))
        code, output, _ = run([*command, "--out", out], work)
        identical += code == 0 and digests(work / out, files) == reference
        left += len(temporaries(work / out))
    rows.append(("corrupt --workers 2 -> kill -9 -> rerun", n, identical,
                 f"{orphans} workers left running, {left} temporaries left"))
    return work / "c/straight"


def evaluate_kills(work: Path, n: int, rng: random.Random, rows: list, run_dir: Path, corruption_dir: Path) -> None:
    command = ["evaluate", run_dir, "--corruption-dir", corruption_dir, "--corruptions", "contrast,fog",
               "--heads", "1nn,10nn", "--bootstrap", "50", "--device", "cpu", "--quiet"]
    code, output, seconds = run([*command, "--out", "e/straight"], work)
    assert code == 0, output
    older = [*command[:5], "contrast", *command[6:]]  # an earlier evaluation in the folder
    files = ("errors.csv", "summary.csv", "corruption_summary.csv", "robustbench.csv", "embeddings.npz")
    reference = digests(work / "e/straight", files)
    identical = mixed = left = 0
    for k in range(n):
        out = work / f"e/killed-{k}"
        code, output, _ = run([*older, "--out", out], work)
        assert code == 0, output
        before = digests(out, sorted(p.name for p in out.iterdir()))
        kill_after([*command, "--out", out], work, rng.uniform(0.5, seconds))
        after = digests(out, sorted(p.name for p in out.iterdir())) if out.is_dir() else {}
        mixed += after != before and digests(out, files) != reference
        code, output, _ = run([*command, "--out", out], work)
        identical += code == 0 and digests(out, files) == reference
        left += len(temporaries(out.parent))
    rows.append(("evaluate -> kill -9 -> rerun", n, identical, f"{mixed} folders mixed after the kill, "
                                                               f"{left} temporaries left"))


# --- bad inputs -----------------------------------------------------------------------------------

class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _mount(path: Path, size: str, read_only: bool) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        return False
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
    return True


def bad_inputs(work: Path, run_dir: Path, corruption_dir: Path, evaluation: Path, rows: list) -> list[str]:
    """(label, command, folder whose files must not change) for each bad input; returns the failures."""
    bad = work / "bad"
    bad.mkdir()
    (bad / "a-file").write_text("keep")
    disks = {"ro": _mount(bad / "ro", "64k", True), "full": _mount(bad / "full", "300k", False)}

    def run_copy(name: str, damage=None) -> Path:
        copy = bad / name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cache"))
        if damage:
            damage(copy)
        return copy

    def corruption_copy(name: str, damage) -> Path:
        copy = bad / name
        copy.mkdir()
        for file_name in ("contrast.npy", "labels.npy", "manifest.json"):
            shutil.copy(corruption_dir / file_name, copy / file_name)
        damage(copy)
        return copy

    def torch_bytes(obj) -> bytes:
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    def checkpoint(data):
        return lambda copy: (copy / "checkpoint.pt").write_bytes(data(copy))

    def truncate(path: Path, size: int) -> None:
        path.write_bytes(path.read_bytes()[:size])

    def released(copy: Path) -> Path:
        (copy / "manifest.json").unlink()
        return copy

    def flip_last_byte(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))

    train = ["train", "--loss", "gsl", *TINY, "--epochs", "4"]
    resume = [*train, "--resume", "--out"]
    evaluate = ["evaluate", "--device", "cpu", "--quiet", "--corruptions", "contrast", "--heads", "1nn",
                "--bootstrap", "20"]
    on = ["--corruption-dir", corruption_dir]
    corrupt = ["corrupt", "--dataset", "digits", "--quiet", "--corruptions", "contrast", "--workers", "1"]
    other_files = bad / "notes"
    other_files.mkdir()
    (other_files / "thesis.tex").write_text("keep")
    cases = [
        ("train --loss hinge", ["train", "--loss", "hinge", *TINY, "--out", bad / "r"], None),
        *[(f"train {' '.join(extra)}", [*train, *extra, "--out", bad / "r"], None) for extra in (
            ["--k", "0"], ["--alpha", "-1"], ["--dataset", "mnist"], ["--preset", "fast"], ["--optimizer", "rmsprop"],
            ["--momentum", "-1"], ["--seed", "-1"], ["--device", "tpu"], ["--batch-size", "5000"], ["--epochs", "0"],
            ["--lr", "0"], ["--width", "0"], ["--milestones", "a,b"], ["--val-size", "99999"], ["--gamma", "2"])],
        ("train --out <a file>", [*train, "--out", bad / "a-file"], bad),
        ("train --out <read-only disk>", [*train, "--out", bad / "ro" / "r"], None) if disks["ro"] else None,
        ("train --out <full disk>", [*train, "--out", bad / "full" / "r"], None) if disks["full"] else None,
        ("train into an existing run without --resume", [*train, "--out", run_copy("exists")], bad / "exists"),
        ("train --resume, other --lr", [*resume, run_copy("lr"), "--lr", "0.5"], bad / "lr"),
        ("train --resume, fewer epochs than the checkpoint", [*train[:-1], "1", "--resume", "--out",
                                                                run_copy("shrink")], bad / "shrink"),
        *[(f"train --resume, checkpoint {what}", [*resume, run_copy(f"ckpt-{what}", checkpoint(data))],
           bad / f"ckpt-{what}") for what, data in (
            ("truncated", lambda c: (c / "checkpoint.pt").read_bytes()[:5000]),
            ("garbage", lambda c: os.urandom(4096)), ("empty", lambda c: b""),
            ("pickled class", lambda c: pickle.dumps(Payload())),
            ("wrong keys", lambda c: torch_bytes({"weights": 1})),
            ("another width", lambda c: torch_bytes(_wider_checkpoint(c))))],
        ("train --resume, environment.json not JSON", [*resume, run_copy(
            "env", lambda c: (c / "environment.json").write_text("{"))], bad / "env"),
        ("train --resume, config.json not JSON", [*resume, run_copy(
            "cfg", lambda c: (c / "config.json").write_text("{"))], bad / "cfg"),
        ("evaluate <missing run>", [*evaluate, *on, bad / "nowhere", "--out", bad / "e1"], None),
        ("evaluate <unfinished run>", [*evaluate, *on, run_copy(
            "unfinished", lambda c: (c / "model.safetensors").unlink()), "--out", bad / "e2"], bad / "unfinished"),
        ("evaluate <truncated weights>", [*evaluate, *on, run_copy(
            "weights", lambda c: truncate(c / "model.safetensors", 999)), "--out", bad / "e3"], bad / "weights"),
        *[(f"evaluate {' '.join(extra)}", [*evaluate, *on, run_dir, *extra, "--out", bad / "e4"], None) for extra in (
            ["--corruptions", "rain"], ["--severities", "6"], ["--baseline", "gsl/argmax"], ["--heads", "3nn"],
            ["--grid-image", "99999"], ["--bootstrap", "0"], ["--baseline", "nonsense"])],
        ("evaluate --out <a file>", [*evaluate, *on, run_dir, "--out", bad / "a-file"], bad),
        ("evaluate --out <folder of other files>", [*evaluate, *on, run_dir, "--out", other_files], other_files),
        ("evaluate --out <read-only disk>", [*evaluate, *on, run_dir, "--out", bad / "ro" / "e"], None)
        if disks["ro"] else None,
        ("evaluate --corruption-dir <missing>", [*evaluate, run_dir, "--corruption-dir", bad / "nowhere",
                                                 "--out", bad / "e5"], None),
        *[(f"evaluate --corruption-dir <{what}>", [*evaluate, run_dir, "--corruption-dir",
                                                   corruption_copy(f"c-{what}", damage), "--out", bad / "e6"],
           bad / f"c-{what}") for what, damage in (
            ("tampered contrast.npy", lambda c: flip_last_byte(c / "contrast.npy")),
            ("manifest of another data set", lambda c: (c / "manifest.json").write_text(
                json.dumps(json.loads((c / "manifest.json").read_text()) | {"dataset": "cifar10"}))),
            ("manifest not JSON", lambda c: (c / "manifest.json").write_text("{")),
            ("released, truncated labels.npy", lambda c: truncate(released(c) / "labels.npy", 100)),
            ("released, object labels.npy", lambda c: np.save(
                released(c) / "labels.npy", np.array([1, "a"], dtype=object), allow_pickle=True)),
            ("released, truncated contrast.npy", lambda c: truncate(released(c) / "contrast.npy", 5000)))],
        *[(f"corrupt {' '.join(extra)}", [*corrupt, *extra, "--out", bad / "c1"], None) for extra in (
            ["--corruptions", "fogg"], ["--severities", "0,1"], ["--dataset", "imagenet"], ["--workers", "0"],
            ["--grid", "--grid-image", "99999"], ["--seed", "-1"])],
        ("corrupt --out <a file>", [*corrupt, "--out", bad / "a-file"], bad),
        ("corrupt --out <read-only disk>", [*corrupt, "--out", bad / "ro" / "c"], None) if disks["ro"] else None,
        ("corrupt --out <full disk>", [*corrupt, "--out", bad / "full" / "c"], None) if disks["full"] else None,
        ("corrupt into a folder of another seed", [*corrupt, "--seed", "5", "--out",
                                                   corruption_copy("c-seed", lambda c: None)], bad / "c-seed"),
        ("corrupt into a folder of .npy files without manifest", [*corrupt, "--out", corruption_copy(
            "c-stray", lambda c: (c / "manifest.json").unlink())], bad / "c-stray"),
        ("report <missing folder>", ["report", bad / "nowhere"], None),
        ("report <folder without tables>", ["report", other_files], other_files),
        ("report <summary.csv with text>", ["report", _copy_with(evaluation, bad / "r1", "summary.csv",
                                                                 "model,head,clean_error\nce,argmax,abc\n")], None),
        ("report <evaluation.json not JSON>", ["report", _copy_with(evaluation, bad / "r2", "evaluation.json", "{")],
         None),
    ]
    cases = [case for case in cases if case is not None]
    failures = []
    for label, command, kept in cases:
        before = _tree_digest(kept)
        code, output, _ = run(command, work)
        clear = (code != 0 and any(line.startswith("Error: ") for line in output.splitlines())
                 and "Traceback" not in output and _tree_digest(kept) == before and not (work / "PWNED").exists())
        if not clear:
            failures.append(f"{label}: exit {code}: {output.strip()[-300:]}")
    rows.append(("bad inputs", len(cases), len(cases) - len(failures), "Error: line, no traceback, files kept"))
    for mount in ("ro", "full"):
        subprocess.run(["umount", "-l", str(bad / mount)], capture_output=True)
    return failures


def _wider_checkpoint(copy: Path) -> dict:
    """The run's checkpoint with the weights of a model twice as wide."""
    import torch

    from robustgsl import runs

    state = torch.load(copy / "checkpoint.pt", weights_only=True)
    return state | {"model": runs.build_model_from_config(runs.read_config(copy) | {"width": 0.125}).state_dict()}


def _copy_with(folder: Path, copy: Path, name: str, text: str) -> Path:
    shutil.copytree(folder, copy)
    (copy / name).write_text(text)
    return copy


def _tree_digest(folder: Path | None) -> dict | None:
    if folder is None or not folder.is_dir():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.stat().st_size < 50 << 20
            and not p.is_relative_to(folder / "ro") and not p.is_relative_to(folder / "full")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8, help="training kills (half as many corrupt and evaluate kills)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--no-bad-inputs", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards [a temporary folder, removed]")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="robustgsl-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    rows: list[tuple] = []
    try:
        run_dir = training_kills(work, args.kills, rng, rows)
        corruption_dir = corrupt_kills(work, max(1, args.kills // 2), rng, rows)
        evaluate_kills(work, max(1, args.kills // 2), rng, rows, run_dir, corruption_dir)
        failures = [] if args.no_bad_inputs else bad_inputs(work, run_dir, corruption_dir, work / "e/straight", rows)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'what':<42} {'tried':>5} {'good':>5}  notes")
    for what, tried, good, notes in rows:
        print(f"{what:<42} {tried:>5} {good:>5}  {notes}")
    for failure in failures:
        print("NOT CLEAR:", failure)


if __name__ == "__main__":
    main()
