import numpy as np
import pytest
import torchvision
from PIL import Image

from robustgsl.errors import InputError
from robustgsl.imagefolder import imagefolder_classes, imagefolder_dataset_info, load_imagefolder

# Upper case sorts first and "10" before "2": the order torchvision uses (code points), not a natural one.
CLASSES = ("Zebra", "apple", "bird")
FILES = ("10.png", "2.png", "a.PNG", "deeper/b.png")


def write_folder(root, seed=0, splits=("train", "test"), classes=CLASSES):
    """PNGs of known pixels, in several modes; returns {path: the RGB array torchvision should read}."""
    rs = np.random.RandomState(seed)
    expected = {}
    for split in splits:
        for c, name in enumerate(classes):
            for f, file_name in enumerate(FILES):
                path = root / split / name / file_name
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = rs.randint(0, 256, (32, 32, 3), dtype=np.uint8)
                mode = ("RGB", "L", "RGBA", "P")[(c + f) % 4]
                if mode == "L":
                    image = Image.fromarray(pixels[..., 0])
                elif mode == "RGBA":
                    image = Image.fromarray(np.dstack([pixels, pixels[..., :1]]))
                elif mode == "P":
                    image = Image.fromarray(pixels).quantize(16)
                else:
                    image = Image.fromarray(pixels)
                image.save(path)
                expected[str(path)] = np.asarray(image.convert("RGB"))
            (root / split / name / "notes.txt").write_text("not an image")
    return expected


def test_same_images_labels_and_order_as_torchvision(tmp_path):
    expected = write_folder(tmp_path)
    for split in ("train", "test"):
        images, labels, info = load_imagefolder(tmp_path, split)
        reference = torchvision.datasets.ImageFolder(str(tmp_path / split))
        assert images.dtype == np.uint8 and images.shape == (len(reference), 32, 32, 3)
        assert labels.dtype == np.int64
        for i, (image, label) in enumerate(reference):
            assert np.array_equal(images[i], np.asarray(image)) and labels[i] == label
        assert reference.classes == list(CLASSES) and info.classes == CLASSES
        # The pixels written, in the order sorted class names and sorted paths give.
        paths = [str(tmp_path / split / name / file_name) for name in CLASSES for file_name in sorted(FILES)]
        assert np.array_equal(images, np.stack([expected[p] for p in paths]))
        assert labels.tolist() == [c for c in range(3) for _ in FILES]
        assert info.num_images == 12 and info.num_resized == 0
    assert imagefolder_classes(tmp_path) == list(CLASSES)


def test_other_sizes_are_an_error_naming_the_file_or_resized_on_request(tmp_path):
    write_folder(tmp_path)
    big = tmp_path / "test/apple/2.png"
    pixels = np.random.RandomState(1).randint(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(big)
    with pytest.raises(InputError) as error:
        load_imagefolder(tmp_path, "test")
    assert str(big) in str(error.value) and "40x48" in str(error.value) and "--resize" in str(error.value)
    images, _, info = load_imagefolder(tmp_path, "test", resize=True)
    index = [str(p) for p, _ in torchvision.datasets.ImageFolder(str(tmp_path / "test")).samples].index(str(big))
    assert np.array_equal(images[index], np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BICUBIC)))
    assert info.num_resized == 1 and info.original_sizes == ((40, 48),)
    assert "1 resized (PIL bicubic" in info.describe() and "from 40x48" in info.describe()


def test_class_sets_must_agree(tmp_path):
    write_folder(tmp_path, splits=("train",))
    write_folder(tmp_path, splits=("test",), classes=("apple", "bird", "cat"))
    with pytest.raises(InputError, match=r"only in train: \['Zebra'\], only in test: \['cat'\]"):
        load_imagefolder(tmp_path, "train")


def test_layout_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_imagefolder(tmp_path / "absent", "train")
    write_folder(tmp_path, splits=("train",))
    with pytest.raises(InputError, match="has no test/ folder"):
        load_imagefolder(tmp_path, "train")
    (tmp_path / "test/apple").mkdir(parents=True)
    with pytest.raises(InputError, match="no valid file for the classes apple"):
        load_imagefolder(tmp_path, "train")
    with pytest.raises(InputError, match="split must be 'train' or 'test', got 'val'"):
        load_imagefolder(tmp_path, "val")


def test_an_unreadable_image_is_named(tmp_path):
    write_folder(tmp_path)
    broken = tmp_path / "train/bird/a.PNG"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError) as error:
        load_imagefolder(tmp_path, "train")
    assert str(broken) in str(error.value) and "not a readable image" in str(error.value)


def test_dataset_info_statistics(tmp_path):
    write_folder(tmp_path)
    images, _, info = load_imagefolder(tmp_path, "train")
    dataset = imagefolder_dataset_info(tmp_path, images, info.classes)
    pixels = images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(dataset.mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(dataset.std, pixels.std(axis=0), rtol=1e-12)
    assert dataset.num_classes == 3 and dataset.name == "imagefolder" and dataset.flip
