"""core.imageio on every odd file a real folder holds, each built here."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from segdeck.core import imageio
from segdeck.core.errors import ImageError
from segdeck.core.samples import exif_rotated_jpeg


def upright_image():
    """(40, 60, 3) asymmetric image: red top-left block, blue bottom-right block."""
    img = np.full((40, 60, 3), 128, np.uint8)
    img[:10, :15] = (255, 0, 0)
    img[-10:, -15:] = (0, 0, 255)
    return img


def png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied(tmp_path, orientation):
    up = upright_image()
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(exif_rotated_jpeg(up, orientation))
    with Image.open(path) as im:  # stored pixels really are rotated
        assert im.getexif()[0x0112] == orientation
        stored_size = im.size
    got = imageio.load_rgb(path)
    assert got.shape == up.shape
    assert np.abs(got.astype(int) - up).mean() < 6
    assert got[2, 2, 0] > 200 and got[2, 2, 2] < 60  # red block back at the top left
    assert imageio.image_size(path) == (60, 40)
    if orientation in (6, 8):
        assert stored_size == (40, 60)


def test_16bit_tiff_and_png(tmp_path):
    import cv2
    import tifffile

    arr16 = np.zeros((8, 8, 3), np.uint16)
    arr16[..., 0] = 65535
    arr16[..., 1] = 32896  # 128 * 257
    arr16[..., 2] = 257
    tifffile.imwrite(tmp_path / "a.tif", arr16, photometric="rgb")
    got = imageio.load_rgb(tmp_path / "a.tif")
    assert got.dtype == np.uint8 and got.shape == (8, 8, 3)
    assert tuple(got[0, 0]) == (255, 128, 1)
    gray16 = np.full((6, 7), 65535, np.uint16)
    gray16[0, 0] = 0
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    got = imageio.load_rgb(tmp_path / "g16.png")
    assert got.shape == (6, 7, 3) and got[1, 1].tolist() == [255, 255, 255] and got[0, 0].tolist() == [0, 0, 0]
    cv2.imwrite(str(tmp_path / "c16.PNG"), arr16[..., ::-1].copy())  # BGR on disk
    got = imageio.load_rgb(tmp_path / "c16.PNG")
    assert tuple(got[0, 0]) == (255, 128, 1)


def test_float_tiff(tmp_path):
    import tifffile

    unit = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    tifffile.imwrite(tmp_path / "f.tif", unit)
    got = imageio.load_rgb(tmp_path / "f.tif")
    assert got[0, 0, 0] == 0 and got[-1, -1, 0] == 255 and got[0, 1, 0] == round(255 / 15)
    wide = unit * 1000 - 200  # not in [0, 1]: min-max scaled
    tifffile.imwrite(tmp_path / "w.tiff", wide)
    got = imageio.load_rgb(tmp_path / "w.tiff")
    assert got.min() == 0 and got.max() == 255


def test_gray_rgba_palette_cmyk(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    (tmp_path / "g.png").write_bytes(png_bytes(gray))
    got = imageio.load_rgb(tmp_path / "g.png")
    assert got.shape == (6, 8, 3) and (got[..., 0] == gray).all() and (got[..., 2] == gray).all()

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # opaque red-ish
    rgba[2:, :, 3] = 0  # fully transparent -> white
    (tmp_path / "a.png").write_bytes(png_bytes(rgba))
    got = imageio.load_rgb(tmp_path / "a.png")
    assert tuple(got[0, 0]) == (200, 0, 0) and tuple(got[3, 3]) == (255, 255, 255)

    pal = Image.fromarray(upright_image()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.save(tmp_path / "p.png")
    got = imageio.load_rgb(tmp_path / "p.png")
    assert got.shape == (40, 60, 3) and got[2, 2, 0] > 200 and got[-2, -2, 2] > 200

    cmyk = Image.new("CMYK", (5, 5), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "c.jpg", quality=95)
    got = imageio.load_rgb(tmp_path / "c.jpg")
    assert got.shape == (5, 5, 3) and got[2, 2, 0] > 200 and got[2, 2, 1] < 60
    cmyk.save(tmp_path / "c.tif")
    got = imageio.load_rgb(tmp_path / "c.tif")
    assert got[2, 2, 0] > 200 and got[2, 2, 1] < 60 and got[2, 2, 2] < 60


def test_bad_files_raise_one_line_errors(tmp_path):
    good = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    cases = {
        "truncated.jpg": good[: len(good) // 2],
        "empty.png": b"",
        "text.png": b"this is not an image\n",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")  # unreadable: points nowhere
    reasons = {}
    for name in [*cases, "dangling.jpg", "missing.png"]:
        with pytest.raises(ImageError) as info:
            imageio.load_rgb(tmp_path / name)
        msg = str(info.value)
        assert "\n" not in msg and name in msg
        reasons[name] = info.value.reason
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.png"]
    assert "broken symbolic link" in reasons["dangling.jpg"] and "not found" in reasons["missing.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; the dangling-symlink case covers unreadable files")
def test_permission_denied(tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    path.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        imageio.load_rgb(path)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError):
        imageio.load_rgb(fifo)


def test_decompression_bomb_guard(tmp_path):
    import tifffile

    arr = np.zeros((100, 120, 3), np.uint8)
    (tmp_path / "big.png").write_bytes(png_bytes(arr))
    tifffile.imwrite(tmp_path / "big.tif", arr, photometric="rgb")
    for name in ("big.png", "big.tif"):
        with pytest.raises(ImageError, match="over the"):
            imageio.load_rgb(tmp_path / name, max_pixels=100 * 119)
        assert imageio.load_rgb(tmp_path / name, max_pixels=100 * 120).shape == (100, 120, 3)


def test_discovery(tmp_path):
    root = tmp_path / "photos"
    (root / "Sub Dir" / "deeper").mkdir(parents=True)
    files = ["a.JPG", "b.jpeg", "c.PnG", "d.Tif", "e.tiff", "Sub Dir/f.jpg", "Sub Dir/deeper/g.png"]
    for f in files:
        (root / f).write_bytes(b"x")
    for f in ["notes.txt", "anim.gif", ".hidden.png", "noext"]:
        (root / f).write_bytes(b"x")
    # output folders: a *.segdeck root and a job folder (job.toml) inside the input
    (root / "photos.segdeck" / "run").mkdir(parents=True)
    (root / "photos.segdeck" / "run" / "x.png").write_bytes(b"x")
    (root / "job1").mkdir()
    (root / "job1" / "job.toml").write_text("job = 'segment'\n")
    (root / "job1" / "y.png").write_bytes(b"x")
    # a symlink loop back to the root
    os.symlink(root, root / "Sub Dir" / "loop")
    found = [p.relative_to(root).as_posix() for p in imageio.discover(root)]
    assert found == sorted(files)
    assert imageio.count_images(root) == len(files)
    assert [p.name for p in imageio.discover(root, recursive=False)] == ["a.JPG", "b.jpeg", "c.PnG", "d.Tif", "e.tiff"]
    assert imageio.discover(root / "a.JPG") == [root / "a.JPG"]
    with pytest.raises(FileNotFoundError):
        imageio.discover(tmp_path / "nope")


def test_atomic_write_leaves_nothing_when_the_writer_raises(tmp_path):
    dest = tmp_path / "out" / "r.png"
    with pytest.raises(RuntimeError):
        with imageio.atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []
    # an existing file is untouched by a failed rewrite
    imageio.write_bytes_atomic(dest, b"old")
    with pytest.raises(RuntimeError):
        with imageio.atomic_path(dest) as tmp:
            tmp.write_bytes(b"new")
            raise RuntimeError
    assert dest.read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["r.png"]
    # an encoder failure is an ImageError and leaves no temp file
    with pytest.raises(ImageError):
        imageio.write_image(tmp_path / "out" / "bad.xyz", np.zeros((4, 4, 3), np.uint8))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["r.png"]


def test_atomic_write_gets_umask_permissions_not_mkstemp_private(tmp_path):
    dest = imageio.write_bytes_atomic(tmp_path / "shared.csv", b"x")
    assert dest.stat().st_mode & 0o777 == 0o666 & ~imageio._UMASK


def test_label_map_round_trip(tmp_path):
    small = np.arange(12, dtype=np.int32).reshape(3, 4)
    imageio.write_label_map(tmp_path / "s.png", small)
    assert Image.open(tmp_path / "s.png").mode == "L"
    many = np.arange(600, dtype=np.int32).reshape(20, 30)
    imageio.write_label_map(tmp_path / "m.png", many)
    assert Image.open(tmp_path / "m.png").mode.startswith("I")
    np.testing.assert_array_equal(imageio.read_label_map(tmp_path / "m.png"), many)
    with pytest.raises(ValueError):
        imageio.write_label_map(tmp_path / "x.png", np.full((2, 2), 70000))


def test_flatten_name(tmp_path):
    (tmp_path / "a" / "b c").mkdir(parents=True)
    assert imageio.flatten_name(tmp_path / "a" / "b c" / "ü.jpg", tmp_path) == "a__b c__ü.jpg"


def test_flat_item_name_never_collides():
    items = ["a/b.jpg", "a__b.jpg", "a_/b.jpg", "a/_b.jpg", "x/y/z.png", "x__y/z.png", "x/y__z.png", "plain.png", "c__"]
    names = [imageio.flat_item_name(i) for i in items]
    assert len(set(names)) == len(items), names
    assert names[0] == "a__b.jpg" and names[4] == "x__y__z.png" and names[7] == "plain.png"  # ordinary names unchanged
    assert names[1].startswith("a__b~") and names[1].endswith(".jpg")  # the suffix stays last
    assert imageio.flat_item_name("a__b.jpg") == names[1]  # deterministic


def test_flatten_name_keeps_symlink_names_apart(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to("a.jpg")
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    (outside / "a.jpg").write_bytes(b"y")
    (tmp_path / "sub").symlink_to(outside)
    names = [imageio.flatten_name(p, tmp_path) for p in (tmp_path / "a.jpg", tmp_path / "link.jpg", tmp_path / "sub" / "a.jpg")]
    assert names == ["a.jpg", "link.jpg", "sub__a.jpg"]
