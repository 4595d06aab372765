"""CIFAR-10-C corruptions: 15 corruptions (plus 4 extra) x 5 severities, seeded and vectorised.

The algorithms and severity constants follow the script that made CIFAR-10-C,
``ImageNet-C/create_c/make_cifar_c.py`` in hendrycks/robustness (Apache-2.0, 2019), with its CIFAR
constants (not ImageNet-C's). Each image draws its random numbers from its own legacy
``RandomState`` seeded from (seed, corruption, severity, image index), so the output depends on
neither batch size, worker count nor order. Names, families and ``get_corruption_names`` are those of
the ``imagecorruptions`` package; ``corrupt`` takes its keywords too.

    >>> from robustgsl.corruptions import corrupt, get_corruption_names
    >>> corrupted = corrupt(images, "gaussian_noise", severity=3, seed=0)   # uint8 (N, 32, 32, 3)
    >>> one = corrupt(image, corruption_name="fog", severity=3)             # uint8 (32, 32, 3)
    >>> get_corruption_names("noise")
    ['gaussian_noise', 'shot_noise', 'impulse_noise']
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from robustgsl.corruptions.rng import image_seed
from robustgsl.errors import InputError

# The four families of the 15 benchmark corruptions (Hendrycks & Dietterich 2019, "Benchmarking Neural
# Network Robustness to Common Corruptions and Perturbations", Fig. 1), in the reference's order; the
# same lists as imagecorruptions' get_corruption_names("noise" | "blur" | "weather" | "digital").
CORRUPTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
# The 15 corruptions of CIFAR-10-C, in the reference's order (noise, blur, weather, digital).
CORRUPTIONS = tuple(name for family in CORRUPTION_FAMILIES.values() for name in family)
# The reference's 4 extra corruptions, released separately for validation (imagecorruptions' "validation").
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
# The family each extra corruption resembles, for tables that group all 19.
EXTRA_FAMILIES = {"speckle_noise": "noise", "gaussian_blur": "blur", "spatter": "weather", "saturate": "digital"}
# imagecorruptions' order: its corruption_number i names ALL_CORRUPTIONS[i].
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
CORRUPTION_SUBSETS = ("common", "validation", "all", *CORRUPTION_FAMILIES)
# A corruption outside the 19 (a function registered by the user) in tables grouped by family.
OTHER_FAMILY = "other"
SEVERITIES = (1, 2, 3, 4, 5)
IMAGE_SIZE = (32, 32)

# Bump when any corruption's output bytes change for the same input and seed: data sets made with
# another generator version are not the same data.
GENERATOR_VERSION = "1"
CONSTANTS_SOURCE = (
    "hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py (CIFAR-10-C severity constants, 2019)"
)

_MODULES = ("noise", "digital", "blur", "weather")


@functools.cache
def _registry() -> tuple[dict[str, Callable], frozenset[str], dict[str, tuple]]:
    """(name -> function, names that accept any image size, name -> severity constants)."""
    functions: dict[str, Callable] = {}
    any_size: set[str] = set()
    params: dict[str, tuple] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        functions.update(module.FUNCTIONS)
        any_size.update(getattr(module, "ANY_SIZE", ()))
        params.update({name: module.SEVERITY_PARAMS[name] for name in module.FUNCTIONS})
    return functions, frozenset(any_size), params


def family_of(name: str) -> str:
    """The family of a corruption (of the 15, or the one an extra corruption resembles; else OTHER_FAMILY)."""
    return next((family for family, members in CORRUPTION_FAMILIES.items() if name in members),
                EXTRA_FAMILIES.get(name, OTHER_FAMILY))


def by_family(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``names`` in their order, gathered under their family, families in CORRUPTION_FAMILIES order (empty
    ones dropped)."""
    grouped = {family: [name for name in names if family_of(name) == family]
               for family in (*CORRUPTION_FAMILIES, OTHER_FAMILY)}
    return [(family, members) for family, members in grouped.items() if members]


def severity_params(name: str) -> tuple:
    """The 5 severity constants of one corruption, as the module's table holds them."""
    _function(name)
    return _registry()[2][name]


def _unknown(name: object) -> InputError:
    return InputError(
        f"unknown corruption {name!r}; valid names are 'all' (the 15), 'extra' (the 4 extra), a family "
        f"({', '.join(CORRUPTION_FAMILIES)}) or any of: "
        + ", ".join(ALL_CORRUPTIONS)
    )


def _function(name: str) -> Callable:
    if name not in ALL_CORRUPTIONS:
        raise _unknown(name)
    return _registry()[0][name]


def get_corruption_names(subset: str = "common") -> list[str]:
    """The corruption names of ``subset``, as imagecorruptions' ``get_corruption_names`` gives them:
    "common" (the 15 of CIFAR-10-C), "validation" (the 4 extra), "all" (the 19), or one family
    ("noise", "blur", "weather", "digital"; see ``CORRUPTION_FAMILIES``)."""
    subsets = {"common": CORRUPTIONS, "validation": EXTRA_CORRUPTIONS, "all": ALL_CORRUPTIONS, **CORRUPTION_FAMILIES}
    if subset not in subsets:
        raise InputError(f"unknown corruption subset {subset!r}; valid: {', '.join(CORRUPTION_SUBSETS)}")
    return list(subsets[subset])


def resolve_corruptions(spec: str | Iterable[str]) -> tuple[str, ...]:
    """'all' -> the 15, 'extra' -> the 4 extra, a family ('noise', 'blur', 'weather', 'digital') -> its
    corruptions, 'a,b' -> those; duplicates dropped, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        item = str(item).strip().lower().replace("-", "_")
        if not item:
            continue
        expanded = {"all": CORRUPTIONS, "extra": EXTRA_CORRUPTIONS, **CORRUPTION_FAMILIES}.get(item, (item,))
        for name in expanded:
            if name not in ALL_CORRUPTIONS:
                raise _unknown(name)
            if name not in names:
                names.append(name)
    if not names:
        raise InputError(f"no corruption given in {spec!r}; use 'all', 'extra', a family or names separated by commas")
    return tuple(names)


def check_severity(severity: object) -> int:
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise InputError(f"severity must be an integer from 1 to 5, got {severity!r}")
    return int(severity)


def parse_severities(spec: str | Iterable[int]) -> tuple[int, ...]:
    """'1,2,3' or 'all' (or integers) -> sorted distinct severities, each checked to be in 1..5."""
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return SEVERITIES
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                items.append(int(part))
            except ValueError:
                raise InputError(f"severity must be an integer from 1 to 5, got {part!r} in {spec!r}") from None
    else:
        items = list(spec)
    severities = tuple(sorted({check_severity(s) for s in items}))
    if not severities:
        raise InputError(f"no severity given in {spec!r}; use e.g. '1,2,3,4,5'")
    return severities


def check_images(images: object, name: str | None = None) -> np.ndarray:
    """Refuse anything but a uint8 RGB batch (N, H, W, 3); 32x32 unless ``name`` accepts any size."""
    if not isinstance(images, np.ndarray):
        raise InputError(f"images must be a numpy uint8 array of shape (N, 32, 32, 3), got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise InputError(
            f"images must have dtype uint8 (values 0..255), got dtype {images.dtype} with shape {images.shape}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(
            f"images must be an RGB batch of shape (N, H, W, 3), got shape {images.shape}"
            + (" (a single image? add a batch axis: images[None])" if images.ndim == 3 else "")
        )
    if images.shape[1:3] != IMAGE_SIZE and (name is None or name not in _registry()[1]):
        raise InputError(
            f"images must be 32x32 (CIFAR size) for {name or 'this corruption'}, got {images.shape[1]}x{images.shape[2]} "
            f"(shape {images.shape}); resize them first"
        )
    return images


def check_seed(seed: object) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class _FixedSeedSequence(np.random.bit_generator.ISeedSequence):
    """A constant seed source: builds an MT19937 without asking the OS for entropy (faster:
    benchmarks/corruption_kernels.py)."""

    def generate_state(self, n_words, dtype=np.uint32):
        return np.ones(n_words, dtype=dtype)


_FIXED = _FixedSeedSequence()
# Generators no longer referenced by anyone after a corrupt() call, kept for reseeding: a reseeded
# RandomState is the same as a new one and costs less than building one (benchmarks/corruption_kernels.py).
_SPARE_RNGS: list[np.random.RandomState] = []
_MAX_SPARE_RNGS = 4096


class ImageRngs(Sequence):
    """The per-image generators of one (seed, corruption, severity) call, built when first used.

    Item i is ``RandomState(robustgsl.corruptions.rng.image_seed(seed, name, severity, indices[i]))``
    (same stream), made lazily and kept, so deterministic corruptions pay nothing and repeated access
    returns the same generator.
    """

    def __init__(self, seed: int, name: str, severity: int, indices: np.ndarray):
        self.seed, self.name, self.severity = seed, name, severity
        self.indices = indices
        self._made: dict[int, np.random.RandomState] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = self._made.get(i)
        if rng is None:
            try:
                rng = _SPARE_RNGS.pop()
            except IndexError:
                rng = np.random.RandomState(np.random.MT19937(_FIXED))
            # Legacy seeding (and a cleared Gaussian cache): the stream of RandomState(image_seed(...)).
            rng.seed(image_seed(self.seed, self.name, self.severity, int(self.indices[i])))
            self._made[i] = rng
        return rng

    def recycle(self) -> None:
        """Keep for reuse the generators that nobody but this object refers to any more."""
        getrefcount = getattr(sys, "getrefcount", None)
        for i in list(self._made):
            rng = self._made.pop(i)
            # References: ``rng`` here and getrefcount's argument; any more means someone kept it.
            if getrefcount is not None and getrefcount(rng) <= 2 and len(_SPARE_RNGS) < _MAX_SPARE_RNGS:
                _SPARE_RNGS.append(rng)


def corrupt(image: np.ndarray, corruption_name: str | None = None, severity: int = 1, seed: int = 0,
            indices: int | Iterable[int] | None = None, *, corruption_number: int | None = None) -> np.ndarray:
    """Apply one corruption at one severity to one uint8 image (H, W, 3) or a batch (N, H, W, 3).

    Returns the same shape and dtype. The corruption is named by ``corruption_name`` or, as in
    imagecorruptions, by ``corruption_number`` (its position in ``ALL_CORRUPTIONS``, 0..18). The old
    positional form ``corrupt(images, "fog", 3)`` and imagecorruptions' keywords
    ``corrupt(image, corruption_name="fog", severity=3)`` both work; imagecorruptions' positional order
    ``corrupt(image, 3, "fog")`` (severity first) is refused with a message, never guessed.

    Each image draws its random numbers from its own stream, seeded by (``seed``, corruption, severity,
    its index). ``indices`` are the images' positions in the full test set (default 0..N-1; a single
    image's default is 0): a batch cut from the middle of the test set gets the same bytes as in a
    full run only with its indices. So ``corrupt(batch[4], ...)`` equals ``corrupt(batch, ...)[4]`` only
    with ``indices=4``.
    """
    name = _chosen_corruption(corruption_name, severity, corruption_number)
    severity = check_severity(severity)
    seed = check_seed(seed)
    single = isinstance(image, np.ndarray) and image.ndim == 3
    images = check_images(image[None] if single else image, name)
    indices = _image_indices(indices, len(images), single)
    rngs = ImageRngs(seed, name, severity, indices)
    try:
        out = _function(name)(np.ascontiguousarray(images), severity, rngs)
    finally:
        rngs.recycle()
    assert out.dtype == np.uint8 and out.shape == images.shape, (name, out.dtype, out.shape)
    return out[0] if single else out


def _chosen_corruption(corruption_name: object, severity: object, corruption_number: object) -> str:
    """The corruption's name from ``corruption_name`` or ``corruption_number``, or a clear refusal."""
    if isinstance(severity, str) and not isinstance(corruption_name, str):
        raise InputError(
            f"corrupt(image, {corruption_name!r}, {severity!r}) reads like imagecorruptions' argument order "
            f"(image, severity, corruption_name); robustgsl's is corrupt(image, corruption_name, severity): "
            f"call corrupt(image, corruption_name={severity!r}, severity={corruption_name!r})")
    if corruption_number is not None:
        if corruption_name is not None:
            raise InputError(f"give corruption_name or corruption_number, not both (got {corruption_name!r} and "
                             f"{corruption_number!r})")
        if isinstance(corruption_number, (bool, np.bool_)) or not isinstance(corruption_number, (int, np.integer)) \
                or not 0 <= corruption_number < len(ALL_CORRUPTIONS):
            raise InputError(f"corruption_number must be an integer from 0 to {len(ALL_CORRUPTIONS) - 1} "
                             f"(a position in ALL_CORRUPTIONS), got {corruption_number!r}")
        return ALL_CORRUPTIONS[int(corruption_number)]
    if corruption_name is None:
        raise InputError("give corruption_name (e.g. 'fog') or corruption_number (0..18)")
    if not isinstance(corruption_name, str):
        raise InputError(f"corruption_name must be a corruption name such as 'fog', got {corruption_name!r}; "
                         f"pass the severity as severity=...")
    _function(corruption_name)
    return corruption_name


def _image_indices(indices: object, n: int, single: bool) -> np.ndarray:
    """The test-set index of each image (default 0..n-1); one image may take a plain integer."""
    if indices is None:
        return np.arange(n)
    if single and isinstance(indices, (int, np.integer)) and not isinstance(indices, (bool, np.bool_)):
        indices = [indices]
    array = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
    if array.shape != (n,) or (array.size and (array.dtype.kind not in "iu" or array.min() < 0)):
        raise InputError(
            f"indices must be {n} non-negative integers (one per image{'; or one integer' if single else ''}), "
            f"got shape {array.shape} and dtype {array.dtype}"
        )
    return array


__all__ = [
    "ALL_CORRUPTIONS", "CORRUPTIONS", "CORRUPTION_FAMILIES", "CORRUPTION_SUBSETS", "CONSTANTS_SOURCE",
    "EXTRA_CORRUPTIONS", "EXTRA_FAMILIES", "GENERATOR_VERSION", "SEVERITIES", "ImageRngs", "check_images",
    "check_severity", "corrupt", "get_corruption_names", "parse_severities", "resolve_corruptions",
    "severity_params",
]
