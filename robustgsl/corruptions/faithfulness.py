"""How exactly each corruption reproduces the script that made CIFAR-10-C, and under which conditions.

The reference is ``make_cifar_c.py`` (hendrycks/robustness, 2019), patched to draw each image's random
numbers from the stream robustgsl gives that image. Checked independently on 400 CIFAR-10 test images at
every severity (issue 11 of this project): 18 of the 19 corruptions give the reference's bytes under the
libraries installed today; ``elastic_transform`` gives the reference's bytes as it ran with OpenCV 4.x,
whose fixed-point ``warpAffine`` robustgsl reimplements (robustgsl/corruptions/digital.py), and which
OpenCV 5.0 changed. ``exactness()`` is what a corruption folder's manifest.json records
(robustgsl/schema/corruption.py, ``EXACTNESS_FIELDS``).
"""

from __future__ import annotations

from robustgsl.corruptions import ALL_CORRUPTIONS

REFERENCE = ("hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py (2019), fed the same per-image random "
             "streams")
BIT_EXACT = "bit-exact against the reference"
CONDITIONS = {
    "elastic_transform": (
        "bit-exact against the reference run with OpenCV 4.10-4.14, whose fixed-point warpAffine (the 2019 "
        "behaviour) robustgsl reimplements, whatever OpenCV is installed; against the reference run with "
        "OpenCV 5.0 (what installs today) it agrees on only 85-90 % of values (max difference 3-4)"),
    "impulse_noise": (
        "bit-exact against the reference: it replays scikit-image 0.14's random_noise(mode='s&p') draws (the "
        "2019 environment); scikit-image >= 0.18 draws from a generator of its own that no seed replays"),
    "motion_blur": (
        "bit-exact against the reference: ImageMagick 6's MotionBlurImage is reimplemented (checked against "
        "ImageMagick 6.9.11 Q16 through Wand), so no ImageMagick is needed"),
    "snow": (
        "bit-exact against the reference: the snow layer's ImageMagick 6 motion blur is reimplemented "
        "(checked against ImageMagick 6.9.11 Q16 through Wand)"),
}


def exactness() -> dict:
    """manifest.json's ``exactness``: the reference, the installed OpenCV, and each corruption's condition."""
    import cv2

    return {"reference": REFERENCE, "opencv": cv2.__version__,
            "corruptions": {name: CONDITIONS.get(name, BIT_EXACT) for name in ALL_CORRUPTIONS}}
