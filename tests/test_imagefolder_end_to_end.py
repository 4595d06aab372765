"""Bring-your-own data set: an image folder written here, trained (tiny), corrupted and evaluated through the CLI."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from robustgsl import runs
from robustgsl.cli import main
from robustgsl.data import load_dataset

from external_helpers import MODEL_FILE
from schema_checks import evaluation_folder_problems, run_folder_problems

CLASSES = ("circle", "square", "stripes")  # sorted, as ImageFolder labels them
PER_CLASS = {"train": 40, "test": 12}
LARGE = 3  # test images per class saved at 40x48, resized by --resize


def _picture(kind: int, rs: np.random.RandomState, size=(32, 32)) -> np.ndarray:
    """A noisy picture of one of three shapes, so that a tiny network learns something."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1) * 32
    if kind == 0:
        mask = (x - 16 + rs.uniform(-4, 4)) ** 2 + (y - 16 + rs.uniform(-4, 4)) ** 2 < rs.uniform(40, 90)
    elif kind == 1:
        mask = ((x + rs.randint(0, 8)) // 4) % 2 == 0
    else:
        left, top = rs.randint(4, 14, size=2)
        mask = (x > left) & (x < left + 14) & (y > top) & (y < top + 14)
    colour = rs.randint(120, 256, size=3)
    image = np.where(mask[..., None], colour, 30) + rs.normal(0, 12, size=(height, width, 3))
    return image.clip(0, 255).astype(np.uint8)


def write_image_folder(root: Path) -> None:
    rs = np.random.RandomState(0)
    for split, count in PER_CLASS.items():
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                size = (48, 40) if split == "test" and i < LARGE else (32, 32)
                Image.fromarray(_picture(label, rs, size)).save(root / split / name / f"{i:03d}.png")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("byod")
    write_image_folder(root / "shapes")
    (root / "models.py").write_text(MODEL_FILE)
    runner = CliRunner()
    train = runner.invoke(main, ["train-both", "--dataset", "imagefolder", "--data-dir", str(root / "shapes"),
                                 "--resize", "--preset", "demo", "--epochs", "2", "--width", "0.0625",
                                 "--batch-size", "30", "--out", str(root / "runs/shapes"), "--device", "cpu",
                                 "--no-compile", "--quiet"])
    assert train.exit_code == 0, train.output
    corrupt = runner.invoke(main, ["corrupt", "--dataset", "imagefolder", "--data-dir", str(root / "shapes"),
                                   "--resize", "--corruptions", "contrast,gaussian_noise", "--workers", "1",
                                   "--out", str(root / "shapes-C"), "--quiet"])
    assert corrupt.exit_code == 0, corrupt.output
    # No --data-dir: the runs' config.json names their image folder. A model robustgsl did not train joins them.
    evaluate = runner.invoke(main, ["evaluate", str(root / "runs/shapes/ce"), str(root / "runs/shapes/gsl"),
                                    "--model", f"{root / 'models.py'}:tiny_3", "--model-name", "tiny",
                                    "--corruption-dir", str(root / "shapes-C"), "--corruptions", "contrast",
                                    "--severities", "1,3", "--bootstrap", "20", "--device", "cpu", "--quiet",
                                    "--out", str(root / "report")])
    assert evaluate.exit_code == 0, evaluate.output
    return root


def test_the_run_records_what_rebuilding_its_model_needs(folder_run):
    root = folder_run
    images, _ = load_dataset("imagefolder", "train", data_dir=root / "shapes")
    pixels = images.reshape(-1, 3).astype(np.float64) / 255
    for loss in ("ce", "gsl"):
        run_dir = root / "runs/shapes" / loss
        assert run_folder_problems(run_dir) == []
        config = json.loads((run_dir / "config.json").read_text())
        folder = config["image_folder"]
        assert config["dataset"] == "imagefolder" and config["num_classes"] == 3
        assert folder["classes"] == list(CLASSES) and folder["root"] == str((root / "shapes").resolve())
        np.testing.assert_allclose(folder["mean"], pixels.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(folder["std"], pixels.std(axis=0), rtol=1e-12)
        assert folder["resize"] is True and folder["resized_images"] == LARGE * len(CLASSES)
        assert folder["original_sizes"] == [[40, 48]]
        model, _ = runs.load_model(run_dir)  # rebuilt from config.json alone
        torch.testing.assert_close(model.mean.flatten(), torch.tensor(folder["mean"], dtype=torch.float32))
    assert json.loads((root / "runs/shapes/gsl/config.json").read_text())["embedding_dim"] == 3


def test_corruption_folder_is_made_from_the_resized_test_images(folder_run):
    root = folder_run
    manifest = json.loads((root / "shapes-C/manifest.json").read_text())
    assert manifest["dataset"] == "imagefolder" and manifest["n_images"] == PER_CLASS["test"] * len(CLASSES)
    assert np.load(root / "shapes-C/contrast.npy").shape == (5 * 36, 32, 32, 3)


def test_evaluation_of_the_folder(folder_run):
    root = folder_run
    out = root / "report"
    assert evaluation_folder_problems(out) == []
    meta = json.loads((out / "evaluation.json").read_text())
    assert meta["dataset"] == "imagefolder" and meta["image_folder"]["classes"] == list(CLASSES)
    assert meta["n_test"] == 36 and meta["baseline"] == "ce/argmax"
    assert [m["kind"] for m in meta["models"]] == ["run", "run", "external"]
    errors = pd.read_csv(out / "errors.csv").set_index(["model", "head", "corruption", "severity"])["error"]
    assert {key[:2] for key in errors.index} >= {("ce", "argmax"), ("gsl", "1nn"), ("tiny", "argmax")}
    # The CE run's argmax errors, recomputed from its weights and the folder's (resized) test images.
    model, _ = runs.load_model(root / "runs/shapes/ce")
    images, labels = load_dataset("imagefolder", "test", data_dir=root / "shapes", resize=True)
    contrast = np.load(root / "shapes-C/contrast.npy")
    with torch.no_grad():
        for corruption, severity, batch in (("clean", 0, images), ("contrast", 3, contrast[2 * 36:3 * 36])):
            predictions = model(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
            assert errors[("ce", "argmax", corruption, severity)] == pytest.approx((predictions != labels).mean())
    html = (out / "index.html").read_text()
    assert "resized" in html and "PIL bicubic" in html  # the results say what they are
    assert "true class: circle" in html or "true class: stripes" in html or "true class: square" in html
    assert "not trained by robustgsl" in html


def test_a_changed_folder_is_not_evaluated_with_stale_corruptions(folder_run, tmp_path):
    """The corruption folder names the images it was made from; other images are refused."""
    root = folder_run
    result = CliRunner().invoke(main, ["evaluate", str(root / "runs/shapes/ce"), "--data-dir", str(root / "shapes"),
                                       "--corruption-dir", str(root / "shapes-C"), "--corruptions", "contrast",
                                       "--device", "cpu", "--quiet", "--no-report", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output  # the same folder, resized as the run recorded: accepted
    other = tmp_path / "shapes"
    write_image_folder(other)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(other / "test/circle/000.png")
    result = CliRunner().invoke(main, ["evaluate", str(root / "runs/shapes/ce"), "--data-dir", str(other),
                                       "--corruption-dir", str(root / "shapes-C"), "--corruptions", "contrast",
                                       "--device", "cpu", "--quiet", "--no-report", "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "made from other clean test images" in result.output
    missing = CliRunner().invoke(main, ["train", "--loss", "ce", "--dataset", "imagefolder", "--out",
                                        str(tmp_path / "r"), "--device", "cpu"])
    assert missing.exit_code == 2 and "needs --data-dir DIR" in missing.output
