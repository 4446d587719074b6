"""segdeck samples: real photos from our dependencies plus the odd files real folders hold."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segdeck.core import imageio, samples


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("s") / "samples"
    result = samples.write_samples(dest)
    assert all(written for _, written in result)
    return dest


def test_sample_folder_contents(sample_dir):
    files = samples.sample_files()
    photos = [f for f in files if f.kind == "photo"]
    assert len(photos) >= 8
    found = {p.relative_to(sample_dir).as_posix() for p in imageio.discover(sample_dir)}
    assert found == {f.name for f in files}
    for path in imageio.discover(sample_dir):
        img = imageio.load_rgb(path)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.std() > 5


def test_odd_files(sample_dir):
    import skimage.data
    import tifffile

    exif = sample_dir / samples.EXIF_NAME
    with Image.open(exif) as im:
        assert im.getexif()[samples.EXIF_ORIENTATION] == 6
        assert im.size == (427, 640)  # stored rotated
    upright = imageio.load_rgb(exif)
    assert upright.shape == skimage.data.rocket().shape
    assert np.abs(upright.astype(int) - skimage.data.rocket()).mean() < 5

    with tifffile.TiffFile(sample_dir / samples.TIFF16_NAME) as tif:
        assert tif.pages[0].dtype == np.uint16
    assert np.abs(imageio.load_rgb(sample_dir / samples.TIFF16_NAME).astype(int) - skimage.data.coffee()).max() == 0

    with Image.open(sample_dir / samples.GRAY_NAME) as im:
        assert im.mode == "L"
    with Image.open(sample_dir / samples.RGBA_NAME) as im:
        assert im.mode == "RGBA"
        alpha = np.asarray(im)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255

    nested = sample_dir / samples.NESTED_NAME
    assert nested.is_file() and " " in nested.parent.name and not nested.name.isascii()


def test_idempotent(sample_dir):
    before = {p: p.stat().st_mtime_ns for p in sample_dir.rglob("*") if p.is_file()}
    again = samples.write_samples(sample_dir)
    assert not any(written for _, written in again)
    after = {p: p.stat().st_mtime_ns for p in sample_dir.rglob("*") if p.is_file()}
    assert before == after


def test_cli(tmp_path, capsys):
    from segdeck.cli import main

    assert main(["samples", str(tmp_path / "x"), "-q"]) == 0
    assert imageio.count_images(tmp_path / "x") == len(samples.sample_files())
    (tmp_path / "file").write_text("x")
    assert main(["samples", str(tmp_path / "file")]) == 2
