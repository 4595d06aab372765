"""robustgsl.corruptions.corrupt: names, shapes, determinism, severity trend and bad input, for every
corruption."""

import numpy as np
import pytest

from corruption_helpers import image_rng, photo_crops as natural_images
from robustgsl.corruptions import (
    ALL_CORRUPTIONS,
    CORRUPTION_FAMILIES,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    ImageRngs,
    _registry,
    corrupt,
    get_corruption_names,
    parse_severities,
    resolve_corruptions,
)
from robustgsl.errors import InputError


IMAGES = natural_images(8)


def test_names_and_order_are_cifar10c():
    assert CORRUPTIONS == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    functions, _, constants = _registry()
    assert set(functions) == set(constants) == set(ALL_CORRUPTIONS)  # every name has its function and constants


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_shape_dtype_and_batch_independence(name):
    images = IMAGES[:5]
    full = corrupt(images, name, 3, seed=7)
    assert full.dtype == np.uint8 and full.shape == images.shape
    # Other batch sizes and a batch cut from the middle give the same bytes per image.
    parts = [corrupt(images[:2], name, 3, seed=7), corrupt(images[2:3], name, 3, seed=7, indices=[2]),
             corrupt(images[3:], name, 3, seed=7, indices=np.array([3, 4]))]
    np.testing.assert_array_equal(np.concatenate(parts), full)
    # The same seed gives the same bytes; the input is left alone.
    before = images.copy()
    np.testing.assert_array_equal(corrupt(images, name, 3, seed=7), full)
    np.testing.assert_array_equal(images, before)


@pytest.mark.parametrize("name", [
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "elastic_transform", "glass_blur",
    "motion_blur", "snow", "frost", "fog", "spatter"])
def test_random_corruptions_depend_on_seed_and_index(name):
    a = corrupt(IMAGES[:3], name, 5, seed=0)
    b = corrupt(IMAGES[:3], name, 5, seed=1)
    assert not np.array_equal(a, b)
    # The same image at another test-set index draws other numbers.
    c = corrupt(IMAGES[:1], name, 5, seed=0, indices=[5])
    assert not np.array_equal(a[:1], c)


def test_image_rngs_are_the_documented_generators():
    rngs = ImageRngs(3, "shot_noise", 2, np.array([4, 9]))
    assert len(rngs) == 2 and rngs[1] is rngs[1]  # made once, then kept
    np.testing.assert_array_equal(rngs[1].normal(size=20), image_rng(3, "shot_noise", 2, 9).normal(size=20))
    np.testing.assert_array_equal(rngs[-2].randint(0, 1000, 20), image_rng(3, "shot_noise", 2, 4).randint(0, 1000, 20))


# The reference's constants make these not monotonic in severity, so each gets its own check below:
# saturate first desaturates (x0.3, x0.1) then saturates (x1.5, x2 + 0.1, x2.5 + 0.2);
# elastic_transform's affine jitter shrinks (2.56 -> 0.96 px) while the elastic part grows;
# frost's image weight falls (1 -> 0.75) while the texture weight plateaus (0.4, 0.4, 0.45);
# spatter switches from water (1-3) to mud (4-5); glass_blur's 4 and 5 shuffle twice with a
# smaller blur than 3.
NOT_MONOTONIC = {
    "saturate": [(1, 0), (3, 2), (4, 3)],  # (more, less) severity pairs of mean change
    "frost": [(1, 0), (2, 1)],
    "spatter": [(1, 0), (2, 1), (4, 3)],
    "glass_blur": [(3, 2), (4, 0)],
    "elastic_transform": [],
}


def mean_changes(name, images=IMAGES):
    return [np.abs(corrupt(images, name, s).astype(float) - images).mean() for s in range(1, 6)]


@pytest.mark.parametrize("name", [n for n in ALL_CORRUPTIONS if n not in NOT_MONOTONIC])
def test_mean_change_grows_with_severity(name):
    change = mean_changes(name)
    assert change[0] > 0
    assert all(b >= a - 0.02 * a for a, b in zip(change, change[1:])), change  # 2 % slack for random draws
    assert change[4] > change[0]


@pytest.mark.parametrize("name", sorted(NOT_MONOTONIC))
def test_mean_change_follows_the_constants_where_not_monotonic(name):
    change = mean_changes(name)
    assert min(change) > 0
    for more, less in NOT_MONOTONIC[name]:
        assert change[more] > change[less], (more + 1, less + 1, change)


# ---------------------------------------------------------------- bad input


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(InputError, match="gaussian_nois.*valid names.*gaussian_noise.*jpeg_compression"):
        corrupt(IMAGES, "gaussian_nois", 1)
    with pytest.raises(InputError, match="'fogg'.*saturate"):
        resolve_corruptions("fog,fogg")


def test_resolve_corruptions():
    assert resolve_corruptions("all") == CORRUPTIONS
    assert resolve_corruptions("extra") == EXTRA_CORRUPTIONS
    assert resolve_corruptions("noise,fog") == ("gaussian_noise", "shot_noise", "impulse_noise", "fog")
    assert resolve_corruptions(" Contrast, gaussian-noise ,contrast") == ("contrast", "gaussian_noise")
    assert resolve_corruptions("all,extra") == ALL_CORRUPTIONS
    with pytest.raises(InputError, match="no corruption"):
        resolve_corruptions(" , ")


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, True, "3", None])
def test_severity_outside_1_to_5_is_refused(severity):
    with pytest.raises(InputError, match=f"severity must be an integer from 1 to 5, got {severity!r}"):
        corrupt(IMAGES, "contrast", severity)


def test_parse_severities():
    assert parse_severities("3,1, 3") == (1, 3)
    assert parse_severities("all") == (1, 2, 3, 4, 5)
    with pytest.raises(InputError, match="'x'"):
        parse_severities("1,x")
    with pytest.raises(InputError, match="got 7"):
        parse_severities("1,7")


def test_images_that_are_not_uint8_rgb_batches_are_refused():
    with pytest.raises(InputError, match="dtype uint8.*got dtype float32 with shape \\(8, 32, 32, 3\\)"):
        corrupt(IMAGES.astype(np.float32) / 255, "contrast", 1)
    with pytest.raises(InputError, match=r"\(N, H, W, 3\), got shape \(1, 32, 32, 4\)"):
        corrupt(np.dstack([IMAGES[0], IMAGES[0, ..., :1]]), "contrast", 1)  # one RGBA image
    with pytest.raises(InputError, match=r"\(N, H, W, 3\), got shape \(32, 32\)"):
        corrupt(IMAGES[0, ..., 0], "contrast", 1)  # one grey image
    with pytest.raises(InputError, match=r"got shape \(8, 3, 32, 32\)"):
        corrupt(np.ascontiguousarray(IMAGES.transpose(0, 3, 1, 2)), "contrast", 1)
    with pytest.raises(InputError, match="got list"):
        corrupt(IMAGES.tolist(), "contrast", 1)
    with pytest.raises(InputError, match="indices must be 8"):
        corrupt(IMAGES, "gaussian_noise", 1, indices=[0, 1])
    with pytest.raises(InputError, match="seed must be a non-negative integer, got -1"):
        corrupt(IMAGES, "gaussian_noise", 1, seed=-1)


def test_other_sizes_only_where_the_corruption_supports_them():
    big = np.repeat(np.repeat(IMAGES[:2], 2, axis=1), 2, axis=2)  # 64x64
    assert corrupt(big, "gaussian_noise", 2).shape == big.shape
    assert corrupt(big, "pixelate", 2).shape == big.shape
    with pytest.raises(InputError, match="32x32.*elastic_transform, got 64x64"):
        corrupt(big, "elastic_transform", 2)


def test_empty_batch():
    empty = IMAGES[:0]
    for name in ["gaussian_noise", "impulse_noise", "contrast", "elastic_transform", "pixelate"]:
        assert corrupt(empty, name, 1).shape == (0, 32, 32, 3)


# ---------------------------------------------------------------- imagecorruptions-style calls


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "glass_blur", "snow", "elastic_transform",
                                  "contrast", "spatter"])
def test_one_image_equals_its_row_of_the_batch_call_with_its_index(name):
    batch = corrupt(IMAGES[:5], name, 4, seed=2)
    one = corrupt(IMAGES[4], corruption_name=name, severity=4, seed=2, indices=4)
    assert one.shape == (32, 32, 3) and one.dtype == np.uint8
    np.testing.assert_array_equal(one, batch[4])
    np.testing.assert_array_equal(corrupt(IMAGES[4], name, 4, seed=2, indices=[4]), batch[4])
    # Without its index a single image is image 0 of a batch: the first row's stream.
    np.testing.assert_array_equal(corrupt(IMAGES[0], name, 4, seed=2), batch[0])


def test_keywords_positional_form_and_corruption_number_agree():
    expected = corrupt(IMAGES[:3], "fog", 3, 1)
    np.testing.assert_array_equal(corrupt(IMAGES[:3], corruption_name="fog", severity=3, seed=1), expected)
    np.testing.assert_array_equal(corrupt(IMAGES[:3], severity=3, seed=1, corruption_number=9), expected)
    assert ALL_CORRUPTIONS[9] == "fog"
    # imagecorruptions' default severity is 1.
    np.testing.assert_array_equal(corrupt(IMAGES[:3], corruption_name="fog"), corrupt(IMAGES[:3], "fog", 1))


def test_imagecorruptions_positional_order_is_refused_with_the_keyword_call():
    with pytest.raises(InputError) as error:
        corrupt(IMAGES[0], 3, "fog")
    assert "imagecorruptions' argument order" in str(error.value)
    assert "corrupt(image, corruption_name='fog', severity=3)" in str(error.value)
    with pytest.raises(InputError, match="corruption_name must be a corruption name such as 'fog', got 3"):
        corrupt(IMAGES[0], 3)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give corruption_name"),
    ({"corruption_name": "fog", "corruption_number": 9}, "not both"),
    ({"corruption_number": 19}, "from 0 to 18"),
    ({"corruption_number": True}, "from 0 to 18"),
    ({"corruption_name": "fogg"}, "unknown corruption 'fogg'"),
])
def test_bad_corruption_choices(kwargs, message):
    with pytest.raises(InputError, match=message):
        corrupt(IMAGES[0], **kwargs)


def test_a_single_image_takes_one_index():
    with pytest.raises(InputError, match="indices must be 1 non-negative integers .*or one integer"):
        corrupt(IMAGES[0], "gaussian_noise", 1, indices=[1, 2])


# Hendrycks & Dietterich (2019), Fig. 1: the 15 corruptions in four families; the 4 held-out ones.
PAPER_FAMILIES = {
    "noise": ["gaussian_noise", "shot_noise", "impulse_noise"],
    "blur": ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur"],
    "weather": ["snow", "frost", "fog", "brightness"],
    "digital": ["contrast", "elastic_transform", "pixelate", "jpeg_compression"],
}


def test_family_and_subset_names():
    for family, names in PAPER_FAMILIES.items():
        assert get_corruption_names(family) == names
        assert list(CORRUPTION_FAMILIES[family]) == names
    assert get_corruption_names() == get_corruption_names("common") == sum(PAPER_FAMILIES.values(), [])
    assert get_corruption_names("validation") == ["speckle_noise", "gaussian_blur", "spatter", "saturate"]
    assert get_corruption_names("all") == get_corruption_names("common") + get_corruption_names("validation")
    with pytest.raises(InputError, match="unknown corruption subset 'extra'.*common, validation, all, noise"):
        get_corruption_names("extra")


def test_names_and_order_are_those_of_the_imagecorruptions_package():
    """corruption_number indexes imagecorruptions' corruption_tuple: read it from the package's source
    (the package itself needs pkg_resources to import, so its file is parsed, not run)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or spec.origin is None:
        pytest.skip("the imagecorruptions package is not installed")
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    assignment = next(node for node in tree.body if isinstance(node, ast.Assign)
                      and getattr(node.targets[0], "id", None) == "corruption_tuple")
    assert tuple(element.id for element in assignment.value.elts) == ALL_CORRUPTIONS
