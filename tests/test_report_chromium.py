"""Render a report in headless Chromium and check the screenshot is a real page, not a blank one.

Runs where Debian's ``chromium`` (or ``chromium-browser``) is on PATH — CI installs it first; ``make
test`` installs nothing system-wide, so elsewhere it skips with a reason.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from robustgsl.report import write_report

from report_fixtures import make_evaluation

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; CI installs it)")
def test_report_screenshot_in_headless_chromium_is_not_blank(tmp_path):
    from PIL import Image

    # A baseline that leaves one relative CE_c undefined, so the page carries its marks and footnotes too.
    page = write_report(make_evaluation(tmp_path / "data", flat_baseline=("shot_noise",)))
    shot = tmp_path / "shot.png"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,4000",
        f"--screenshot={shot}", page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), f"no screenshot; chromium said:\n{result.stderr[-2000:]}"

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (4000, 1280)
    assert pixels.std() > 20  # a blank or single-colour page has (almost) none
    colours = np.unique(pixels[::4, ::4].reshape(-1, 3), axis=0)
    assert len(colours) > 200  # text, tables, heat maps, plots and images
    # The page's CSS was applied: a dark masthead above a light body.
    luminance = pixels @ np.array([0.2126, 0.7152, 0.0722])
    assert luminance[:120].mean() < 90
    assert luminance[700:].mean() > 170
    # The heat maps drew their warm cells (red clearly above blue somewhere on the page).
    warm = (pixels[..., 0] > 200) & (pixels[..., 2] < 90) & (pixels[..., 1] < 170)
    assert warm.sum() > 500
