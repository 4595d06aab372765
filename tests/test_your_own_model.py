"""A model robustgsl did not train, through `robustgsl evaluate --model` and through `robustgsl.benchmark`.

The model is a torchvision resnet18 with 10 outputs and random weights; its errors are recomputed here by
a plain loop (logits from the model, features from a forward hook, scikit-learn's 1-NN), independent of
robustgsl's inference, feature extractor and heads.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from click.testing import CliRunner
from sklearn.neighbors import KNeighborsClassifier

import robustgsl
from robustgsl.cli import main
from robustgsl.corruptions import corrupt
from robustgsl.corruptions.dataset import write_corruption_dataset
from robustgsl.data import load_dataset
from robustgsl.errors import InputError
from robustgsl.external import ExternalModel

from corruption_helpers import DIGITS_C_CORRUPTIONS
from external_helpers import MODEL_FILE, trained_like
from schema_checks import evaluation_folder_problems

CORRUPTIONS = DIGITS_C_CORRUPTIONS
SEVERITIES = (1, 5)
N = 200  # test images evaluated (of the 540 digits)
MEAN, STD = (0.3, 0.3, 0.3), (0.32, 0.32, 0.32)
NORMALIZE = "0.3,0.3,0.3/0.32,0.32,0.32"
BATCH = 100


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """(model file, weights file as RobustBench would wrap them, the model with those weights)."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "models.py").write_text(MODEL_FILE)
    model = trained_like(torchvision.models.resnet18(num_classes=10), seed=3)
    torch.save({"state_dict": {f"module.{key}": value for key, value in model.state_dict().items()}, "epoch": 7},
               folder / "rn18.pt")
    return folder / "models.py", folder / "rn18.pt", model


def _batches(images: np.ndarray):
    for start in range(0, len(images), BATCH):
        yield torch.from_numpy(images[start:start + BATCH]).permute(0, 3, 1, 2).float() / 255


def independent_errors(model, digits_corruptions, normalize: bool) -> dict:
    """(head, corruption, severity) -> error of the first N test images, by a plain loop."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    captured = []
    hook = model.avgpool.register_forward_hook(lambda module, inputs, output: captured.append(output.flatten(1)))

    def run(images):
        captured.clear()
        with torch.no_grad():
            logits = torch.cat([model((x - mean) / std if normalize else x) for x in _batches(images)])
        return logits.numpy(), torch.cat(captured).numpy()

    model.eval()
    train_images, train_labels = load_dataset("digits", "train")
    test_images, test_labels = load_dataset("digits", "test")
    knn = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(run(train_images)[1], train_labels)
    sets = {("clean", 0): test_images[:N]}
    for name in CORRUPTIONS:
        data = np.load(digits_corruptions / f"{name}.npy")
        sets.update({(name, s): data[(s - 1) * len(test_labels):(s - 1) * len(test_labels) + N] for s in SEVERITIES})
    errors = {}
    for (corruption, severity), images in sets.items():
        logits, features = run(images)
        errors[("argmax", corruption, severity)] = float((logits.argmax(1) != test_labels[:N]).mean())
        errors[("1nn", corruption, severity)] = float((knn.predict(features) != test_labels[:N]).mean())
    hook.remove()
    return errors


def evaluate_cli(*args):
    return CliRunner().invoke(main, ["evaluate", *map(str, args), "--device", "cpu", "--quiet",
                                     "--batch-size", str(BATCH), "--bootstrap", "50"])


# --- robustgsl evaluate --model -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_evaluation(resnet, digits_corruptions, tmp_path_factory):
    model_file, weights, _ = resnet
    out = tmp_path_factory.mktemp("eval") / "rn18"
    result = evaluate_cli("--model", f"{model_file}:resnet18_cifar", "--weights", weights, "--normalize", NORMALIZE,
                          "--features", "flatten", "--model-name", "rn18", "--dataset", "digits",
                          "--corruption-dir", digits_corruptions, "--corruptions", ",".join(CORRUPTIONS),
                          "--severities", ",".join(map(str, SEVERITIES)), "--heads", "argmax,1nn",
                          "--n-examples", N, "--out", out, "--no-report")
    assert result.exit_code == 0, result.output
    return out


def test_cli_errors_match_an_independent_loop(cli_evaluation, resnet, digits_corruptions):
    expected = independent_errors(resnet[2], digits_corruptions, normalize=True)
    errors = pd.read_csv(cli_evaluation / "errors.csv")
    assert set(errors["model"]) == {"rn18"} and len(errors) == len(expected)
    for row in errors.itertuples():
        assert row.error == pytest.approx(expected[(row.head, row.corruption, row.severity)], abs=1e-12), row
    assert errors["error"].nunique() > 2  # a model that is not constant: the comparison means something


def test_cli_evaluation_folder_names_the_model(cli_evaluation, resnet):
    model_file, weights, model = resnet
    assert evaluation_folder_problems(cli_evaluation) == []
    meta = json.loads((cli_evaluation / "evaluation.json").read_text())
    entry, = meta["models"]
    assert entry["kind"] == "external" and entry["name"] == "rn18" and "run_dir" not in entry
    assert entry["factory"] == f"{model_file}:resnet18_cifar" and entry["weights_file"] == str(weights.resolve())
    assert entry["architecture"] == "ResNet" and entry["parameters"] == sum(p.numel() for p in model.parameters())
    import hashlib

    assert entry["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert entry["normalize"] == {"mean": list(MEAN), "std": list(STD)} and entry["feature_layer"] == "flatten"
    assert meta["n_test"] == N and meta["n_examples"] == N and meta["baseline"] is None
    report = CliRunner().invoke(main, ["report", str(cli_evaluation)])
    assert report.exit_code == 0, report.output
    header = (cli_evaluation / "index.html").read_text()
    for text in ("rn18", "ResNet", f"{entry['parameters']:,} parameters", entry["weights_sha256"][:12],
                 "robustgsl did not train it"):
        assert text in header, text


def test_several_models_and_any_model_as_the_baseline(resnet, digits_corruptions, tmp_path):
    model_file, weights, _ = resnet
    out = tmp_path / "two"
    result = evaluate_cli("--model", f"{model_file}:resnet18_cifar", "--weights", weights, "--model-name", "rn18",
                          "--normalize", NORMALIZE,
                          "--model", f"{model_file}:TinyNet", "--weights", "-", "--model-name", "tiny",
                          "--normalize", "-",
                          "--dataset", "digits", "--corruption-dir", digits_corruptions, "--corruptions", "contrast",
                          "--severities", "1,5", "--heads", "argmax", "--n-examples", N,
                          "--baseline", "rn18/argmax", "--out", out, "--no-report")
    assert result.exit_code == 0, result.output
    assert evaluation_folder_problems(out) == []
    errors = pd.read_csv(out / "errors.csv").set_index(["model", "corruption", "severity"])["error"]
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert summary.loc["rn18", "mce"] == pytest.approx(100) and summary.loc["tiny", "baseline"] == "rn18/argmax"
    ce = sum(errors[("tiny", "contrast", s)] for s in (1, 5)) / sum(errors[("rn18", "contrast", s)] for s in (1, 5))
    assert summary.loc["tiny", "mce"] == pytest.approx(100 * ce)
    assert summary.loc["tiny", "mce_low"] <= summary.loc["tiny", "mce"] <= summary.loc["tiny", "mce_high"]
    entries = json.loads((out / "evaluation.json").read_text())["models"]
    assert [(e["name"], e["weights_file"], e["normalize"]) for e in entries] == [
        ("rn18", str(weights.resolve()), {"mean": list(MEAN), "std": list(STD)}), ("tiny", None, None)]


@pytest.mark.parametrize("args, message", [
    (["--model", "{file}:resnet18_cifar", "--weights", "a.pt", "--weights", "b.pt"],
     "--weights is given 2 times for 1 --model"),
    (["--model", "{file}:tiny_100"], "outputs shape (2, 100) for 2 images, but digits has 10 classes"),
    (["--model", "{file}:resnet18_cifar", "--heads", "1nn"], "no embedding: name a --features layer"),
    (["--model", "{file}:TinyNet", "--model", "{file}:TinyNet"], "two models are called 'TinyNet'"),
    (["--model", "{file}:resnet18_cifar", "--normalize", "1,2/3"], "--normalize '1,2/3' has 2 means"),
])
def test_bad_external_models_are_refused_before_any_work(resnet, digits_corruptions, tmp_path, args, message):
    model_file = resnet[0]
    result = evaluate_cli(*[a.format(file=model_file) for a in args], "--dataset", "digits", "--corruption-dir",
                          digits_corruptions, "--corruptions", "contrast", "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


# --- robustgsl.benchmark --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def benchmarked(resnet, digits_corruptions, tmp_path_factory):
    model = resnet[2].train()  # left in training mode: benchmark evaluates in eval mode, then restores it
    out = tmp_path_factory.mktemp("bench") / "rn18"
    result = robustgsl.benchmark(ExternalModel(model, normalize=(MEAN, STD), feature_layer="flatten"),
                                 dataset="digits", corruptions=CORRUPTIONS, severities=SEVERITIES,
                                 heads=("argmax", "1nn"), n_examples=N, corruption_dir=digits_corruptions, out_dir=out,
                                 device="cpu", batch_size=BATCH, model_name="rn18", n_bootstrap=50)
    assert model.training
    return result


def test_benchmark_matches_the_independent_loop(benchmarked, resnet, digits_corruptions):
    expected = independent_errors(resnet[2], digits_corruptions, normalize=True)
    result = benchmarked
    assert list(result.errors.index) == [("clean", 0)] + [(c, s) for c in CORRUPTIONS for s in SEVERITIES]
    assert list(result.errors.columns) == ["argmax", "1nn"]
    for (corruption, severity), row in result.errors.iterrows():
        for head in ("argmax", "1nn"):
            assert row[head] == pytest.approx(expected[(head, corruption, severity)], abs=1e-12)
    assert result.head == "argmax" and result.n_examples == N and result.model == "rn18"
    assert result.clean_accuracy == pytest.approx(1 - expected[("argmax", "clean", 0)])
    corrupted = [1 - expected[("argmax", c, s)] for c in CORRUPTIONS for s in SEVERITIES]
    assert result.robust_accuracy == pytest.approx(np.mean(corrupted))  # RobustBench's headline
    assert result.mce is None and result.baseline is None


def test_benchmark_writes_what_evaluate_writes(benchmarked, cli_evaluation):
    out = benchmarked.out_dir
    assert evaluation_folder_problems(out) == [] and (out / "index.html").is_file()
    cli_files = {path.name for path in cli_evaluation.iterdir()}
    assert {path.name for path in out.iterdir()} == cli_files | {"index.html"}
    # The same model, data and heads give the same tables through either door.
    for name in ("errors.csv", "robustbench.csv", "robustbench_summary.csv", "corruption_summary.csv"):
        assert (out / name).read_bytes() == (cli_evaluation / name).read_bytes(), name
    assert CliRunner().invoke(main, ["report", str(out)]).exit_code == 0


def test_a_result_or_an_errors_table_as_the_baseline(benchmarked, resnet, digits_corruptions, tmp_path):
    from robustgsl.external import load_external_model, ExternalSpec

    tiny = load_external_model(ExternalSpec(f"{resnet[0]}:TinyNet"))
    options = dict(dataset="digits", corruptions=CORRUPTIONS, severities=SEVERITIES, n_examples=N,
                   corruption_dir=digits_corruptions, device="cpu", n_bootstrap=50)
    paired = robustgsl.benchmark(tiny, baseline=benchmarked, out_dir=tmp_path / "paired", **options)
    argmax_rows = benchmarked.errors_table().query("head == 'argmax'")  # e.g. read from another errors.csv
    table = robustgsl.benchmark(tiny, baseline=argmax_rows, **options)
    own, base = paired.errors["argmax"], benchmarked.errors["argmax"]
    ce = [sum(own[(c, s)] for s in SEVERITIES) / sum(base[(c, s)] for s in SEVERITIES) for c in CORRUPTIONS]
    # Relative CE_c averages the corruptions where the baseline's errors do not sum to its clean error.
    relative = [sum(own[(c, s)] - own[("clean", 0)] for s in SEVERITIES)
                / sum(base[(c, s)] - base[("clean", 0)] for s in SEVERITIES) for c in CORRUPTIONS
                if abs(sum(base[(c, s)] - base[("clean", 0)] for s in SEVERITIES)) > 1e-12]
    for result in (paired, table):
        assert result.baseline == "rn18/argmax"
        assert result.mce == pytest.approx(100 * np.mean(ce))
        assert result.relative_mce == pytest.approx(100 * np.mean(relative) if relative else np.nan, nan_ok=True)
    # Paired on the same test images: bootstrap intervals; from error rates only: none.
    assert paired.summary.loc["argmax", "mce_low"] <= paired.mce <= paired.summary.loc["argmax", "mce_high"]
    assert np.isnan(table.summary.loc["argmax", "mce_low"])
    assert evaluation_folder_problems(tmp_path / "paired") == []
    entries = json.loads((tmp_path / "paired" / "evaluation.json").read_text())["models"]
    assert [e["kind"] for e in entries] == ["external", "reference"]
    assert entries[1]["evaluated_as"]["name"] == "rn18" and entries[1]["source"] == "benchmark result"


def test_bad_baselines_and_models(benchmarked, digits_corruptions):
    options = dict(dataset="digits", corruptions="contrast", severities=(1,), n_examples=20,
                   corruption_dir=digits_corruptions, device="cpu")
    argmax_rows = benchmarked.errors_table().query("head == 'argmax'")
    two = pd.concat([argmax_rows, argmax_rows.assign(model="other")])
    with pytest.raises(InputError, match="must hold one model/head, got 2: rn18/argmax, other/argmax"):
        robustgsl.benchmark(torchvision.models.resnet18(num_classes=10), baseline=two, **options)
    without_fog = argmax_rows
    with pytest.raises(InputError, match="has no error rate for fog 1"):
        robustgsl.benchmark(torchvision.models.resnet18(num_classes=10), baseline=without_fog,
                            **(options | {"corruptions": "fog"}))
    with pytest.raises(InputError, match="must be a torch.nn.Module or a run folder"):
        robustgsl.benchmark(lambda x: x, **options)


# --- robustgsl.load_corruptions -------------------------------------------------------------------

def test_load_corruptions_follows_robustbenchs_load_cifar10c(digits_corruptions, tmp_path):
    n = 540
    x, y = robustgsl.load_corruptions("digits", CORRUPTIONS, severity=5, n_examples=7, corruption_dir=digits_corruptions)
    # RobustBench: the first ceil(7 / 2) = 4 images of each corruption at that severity, concatenated, cut to 7.
    first = [np.load(digits_corruptions / f"{name}.npy")[4 * n:4 * n + math.ceil(7 / 2)] for name in CORRUPTIONS]
    expected = np.concatenate(first)[:7]
    labels = load_dataset("digits", "test")[1]
    assert x.dtype == torch.float32 and x.shape == (7, 3, 32, 32) and y.dtype == torch.int64
    torch.testing.assert_close(x, torch.from_numpy(expected.transpose(0, 3, 1, 2).astype(np.float32) / 255))
    assert y.tolist() == np.concatenate([labels[:4], labels[:4]])[:7].tolist()
    shuffled, shuffled_y = robustgsl.load_corruptions("digits", CORRUPTIONS, 5, 7, digits_corruptions, shuffle=True, seed=4)
    order = np.random.RandomState(4).permutation(8)[:7]
    torch.testing.assert_close(shuffled, torch.from_numpy(
        np.concatenate(first)[order].transpose(0, 3, 1, 2).astype(np.float32) / 255))
    assert shuffled_y.tolist() == np.concatenate([labels[:4], labels[:4]])[order].tolist()
    everything, _ = robustgsl.load_corruptions("digits", "contrast", 2, corruption_dir=digits_corruptions)
    assert everything.shape == (n, 3, 32, 32)
    # A folder holding severities 2 and 5 only, and a released-style folder without a manifest.
    images, image_labels = load_dataset("digits", "test")
    write_corruption_dataset(images[:6], image_labels[:6], tmp_path / "sub", corruptions=["contrast"],
                             severities="2,5", seed=0, workers=1, dataset_name="digits", quiet=True)
    sub, _ = robustgsl.load_corruptions("digits", "contrast", 5, corruption_dir=tmp_path / "sub")
    torch.testing.assert_close(sub, torch.from_numpy(
        corrupt(images[:6], "contrast", 5).transpose(0, 3, 1, 2).astype(np.float32) / 255))
    with pytest.raises(InputError, match="severities \\[1\\] not in the folder"):
        robustgsl.load_corruptions("digits", "contrast", 1, corruption_dir=tmp_path / "sub")
    released = tmp_path / "released"
    released.mkdir()
    for name in ("contrast", "labels"):
        (released / f"{name}.npy").write_bytes((digits_corruptions / f"{name}.npy").read_bytes())
    again, _ = robustgsl.load_corruptions("digits", "contrast", 5, 7, released)
    torch.testing.assert_close(again, robustgsl.load_corruptions("digits", "contrast", 5, 7, digits_corruptions)[0])
    with pytest.raises(InputError, match="lacks gaussian_noise.npy"):
        robustgsl.load_corruptions("digits", "gaussian_noise", 5, 7, released)


def test_import_robustgsl_stays_light():
    code = ("import sys, robustgsl; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert callable(robustgsl.benchmark) and 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_readmes_python_example_runs(tmp_path):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Your own model"):readme.index("### Your own data")]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    env = {"PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    clean, robust = map(float, done.stdout.splitlines()[0].split())
    assert 0 <= clean <= 1 and 0 <= robust <= 1
    assert evaluation_folder_problems(tmp_path / "reports/my-model") == []
    assert (tmp_path / "reports/my-model/index.html").is_file()
