import pickle

import numpy as np
import pytest
import torch

from robustgsl.data import augment_batch, load_dataset, render_digits
from robustgsl.errors import InputError

from dataset_files import write_cifar10, write_cifar100, write_svhn


def test_cifar10_released_format(tmp_path):
    written = write_cifar10(tmp_path)
    images, labels = load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:4], written["data_batch_1"][0])
    np.testing.assert_array_equal(labels[-4:], written["data_batch_5"][1])
    test_images, test_labels = load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(test_images, written["test_batch"][0])


def test_cifar100_released_format(tmp_path):
    expected = write_cifar100(tmp_path, {"train": 6, "test": 6})
    images, labels = load_dataset("cifar100", "test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(images, expected["test"][0])
    assert labels.tolist() == expected["test"][1]


def test_svhn_released_format(tmp_path):
    labels = np.array([10, 1, 2, 10, 9])
    images = write_svhn(tmp_path, {"train": labels, "test": labels})
    loaded, loaded_labels = load_dataset("svhn", "test", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(loaded, images["test"])
    assert loaded_labels.tolist() == [0, 1, 2, 0, 9]  # SVHN's label 10 is the digit 0


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(InputError) as error:
        load_dataset("cifar10", "train", data_dir=tmp_path / "nowhere", download=False)
    assert "nowhere" in str(error.value) and "--data-dir" in str(error.value)


def test_corrupt_file_is_reported(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError) as error:
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert "corrupt" in str(error.value) and str(tmp_path) in str(error.value)


def test_pickle_with_code_is_refused(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": []}, handle)
    with pytest.raises(InputError) as error:
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert "refusing" in str(error.value)


def test_unknown_dataset():
    with pytest.raises(InputError) as error:
        load_dataset("mnist", "train")
    assert "mnist" in str(error.value) and "cifar10" in str(error.value)


def test_digits_split_is_fixed_and_rendered():
    train_images, train_labels = load_dataset("digits", "train")
    test_images, test_labels = load_dataset("digits", "test")
    assert train_images.shape == (1257, 32, 32, 3) and test_images.shape == (540, 32, 32, 3)
    assert train_images.dtype == np.uint8
    assert np.array_equal(train_images[..., 0], train_images[..., 2])  # grey rendered as RGB
    assert set(np.bincount(test_labels)) <= set(range(50, 60))  # stratified
    again, _ = load_dataset("digits", "test")
    np.testing.assert_array_equal(again, test_images)
    test_images[:] = 0  # each load is the caller's own copy: the rendered set kept by the process is unchanged
    np.testing.assert_array_equal(load_dataset("digits", "test")[0], again)
    # The 8x8 value 16 renders as white, 0 as black.
    block = render_digits(np.full((1, 8, 8), 16.0))
    assert block.min() == 255
    assert render_digits(np.zeros((1, 8, 8))).max() == 0


def test_augmentation_is_a_padded_crop_with_optional_flip():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(images, generator, padding=4, flip=True)
    flips = 0
    for index in range(16):
        candidates = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                      if torch.equal(out[index], (lambda w: w.flip(-1) if flip else w)(
                          padded[index, :, dy:dy + 32, dx:dx + 32]))]
        assert candidates, f"image {index} is not a crop of the padded image"
        flips += candidates[0][2]
    assert 0 < flips < 16
    again = augment_batch(images, torch.Generator().manual_seed(0), padding=4, flip=True)
    assert torch.equal(out, again)
    unflipped = augment_batch(images, torch.Generator().manual_seed(0), padding=0, flip=False)
    assert torch.equal(unflipped, images)
