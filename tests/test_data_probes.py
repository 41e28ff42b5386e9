import io
import pickle
import struct
import warnings
import zlib
from urllib.error import URLError

import numpy as np
import pytest
from PIL import Image

from falcon_core.data import probes
from falcon_core.data.probes import (ArrayProbe, ImageFolderProbe, TorchvisionProbe,
                                     create_probe, load_image_file, register_probe)
from falcon_core.errors import BadImageError, FalconError, OfflineError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_big_grey_png(path, w, h, value=128, rows=None):
    """A w x h 8-bit grey PNG written row by row (never w*h bytes in memory)."""
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * w
    idat = []
    for _ in range(h if rows is None else rows):
        idat.append(comp.compress(row))
    idat.append(comp.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)))
        f.write(_png_chunk(b"IDAT", b"".join(idat)))
        f.write(_png_chunk(b"IEND", b""))


def _noise(w, h, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    (root / "cat" / "deep" / "deeper").mkdir(parents=True)
    (root / "Great_White-shark").mkdir()
    (root / "n01440764").mkdir()
    (root / "unknown thing").mkdir()
    (root / ".hidden_dir").mkdir()
    Image.fromarray(_noise(40, 30)).save(root / "cat" / "a.jpg", quality=90)
    Image.fromarray(_noise(20, 20, 1)).save(root / "cat" / "deep" / "b.PNG")
    Image.fromarray(_noise(16, 12, 2)).save(root / "cat" / "deep" / "deeper" / "c.webp")
    Image.fromarray(_noise(10, 10, 3)).save(root / "Great_White-shark" / "d.bmp")
    Image.new("L", (8, 8), 77).save(root / "Great_White-shark" / "grey.png")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(root / "n01440764" / "rgba.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(root / "n01440764" / "palette.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(root / "unknown thing" / "cmyk.jpg")
    Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)).save(root / "unknown thing" /
                                                                  "sixteen.png")
    Image.new("RGB", (1, 1), (1, 2, 3)).save(root / "one.png")
    (root / "corrupt.jpg").write_bytes(b"this is not an image at all" * 10)
    (root / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_noise(200, 150, 4)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("not an image")
    (root / ".secret.png").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(root / ".hidden_dir" / "x.png")
    return root


def test_scan_sorted_recursive_and_filtered(folder):
    p = ImageFolderProbe(folder)
    assert p.ids == sorted(p.ids)
    assert "cat/deep/deeper/c.webp" in p.ids and "cat/deep/b.PNG" in p.ids
    assert not any(i.startswith(".") or "/." in i for i in p.ids)
    assert "notes.txt" not in p.ids
    assert len(p) == 13
    assert p.labels is None and p.class_names is None
    assert p.describe()["skipped_files"] == 1
    assert p.folder_classes == ["Great_White-shark", "cat", "n01440764", "unknown thing"]


def test_loads_convert_to_rgb(folder):
    p = ImageFolderProbe(folder)
    by_id = {i: k for k, i in enumerate(p.ids)}
    for name in ["cat/a.jpg", "cat/deep/b.PNG", "cat/deep/deeper/c.webp",
                 "Great_White-shark/d.bmp", "Great_White-shark/grey.png",
                 "n01440764/rgba.png", "n01440764/palette.png", "unknown thing/cmyk.jpg",
                 "unknown thing/sixteen.png", "one.png"]:
        im = p.load(by_id[name])
        assert isinstance(im, Image.Image) and im.mode == "RGB", name
    assert p.load(by_id["Great_White-shark/grey.png"]).getpixel((0, 0)) == (77, 77, 77)
    rgba = p.load(by_id["n01440764/rgba.png"])
    assert rgba.getpixel((1, 1)) == (255, 255, 255)  # transparent -> white
    assert rgba.getpixel((0, 0)) == (0, 0, 255)
    assert p.load(by_id["n01440764/palette.png"]).getpixel((3, 3)) == (10, 200, 30)
    assert p.load(by_id["unknown thing/sixteen.png"]).getpixel((0, 0)) == (255, 255, 255)
    one = p.load(by_id["one.png"])
    assert one.size == (1, 1) and one.getpixel((0, 0)) == (1, 2, 3)
    assert p.load(by_id["cat/a.jpg"]).size == (40, 30)


@pytest.mark.parametrize("name,reason", [("corrupt.jpg", "not a recognised image"),
                                         ("empty.png", "empty"),
                                         ("truncated.jpg", "truncated")])
def test_bad_images_raise_bad_image_error(folder, name, reason):
    p = ImageFolderProbe(folder)
    i = p.ids.index(name)
    with pytest.raises(BadImageError) as e:
        p.load(i)
    assert name in e.value.message and reason in e.value.message
    assert name in p.describe()["bad_images"]
    assert p.describe()["skipped"] == 1


def test_huge_image_downscaled_without_warning(tmp_path):
    path = tmp_path / "huge.png"
    write_big_grey_png(path, 10_000, 10_000, value=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im = load_image_file(path)
    assert im.mode == "RGB" and max(im.size) == 1024 and im.size == (1024, 1024)
    assert im.getpixel((500, 500)) == (200, 200, 200)


def test_large_jpeg_uses_draft(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (10, 120, 250)).save(path, quality=90)
    im = load_image_file(path)
    assert im.size == (1024, 683)
    r, g, b = im.getpixel((10, 10))
    assert abs(r - 10) < 6 and abs(g - 120) < 6 and abs(b - 250) < 6
    assert load_image_file(path, max_side=None).size == (3000, 2000)


def test_pixel_limit_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    write_big_grey_png(path, 30_000, 20_000, rows=1)  # header says 600 M pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadImageError) as e:
            load_image_file(path)
    assert "limit of 200,000,000" in e.value.message
    # our own check, before any decoding (the IDAT holds only one row)
    small = tmp_path / "small.png"
    write_big_grey_png(small, 2_000, 1_000, rows=1)
    with pytest.raises(BadImageError) as e:
        load_image_file(small, max_pixels=1_000_000)
    assert "2000x1000" in e.value.message and "limit of 1,000,000" in e.value.message


def test_labels_from_subfolders(folder):
    classes = ["tench", "great white shark", "Cat", "dog"]
    p = ImageFolderProbe(folder, class_names_for_labels=classes,
                         wnid_to_index={"n01440764": 0})
    lab = dict(zip(p.ids, p.labels.tolist()))
    assert lab["cat/deep/deeper/c.webp"] == 2
    assert lab["Great_White-shark/d.bmp"] == 1
    assert lab["n01440764/rgba.png"] == 0
    assert lab["unknown thing/cmyk.jpg"] == -1
    assert lab["one.png"] == -1
    assert p.class_names == classes
    assert p.unmatched_folders == ["unknown thing"]
    # nothing matches -> no labels
    assert ImageFolderProbe(folder, class_names_for_labels=["zebra"]).labels is None


def test_fingerprint_tracks_files(folder):
    fp = ImageFolderProbe(folder).fingerprint
    assert fp == ImageFolderProbe(folder).fingerprint
    Image.new("RGB", (3, 3)).save(folder / "new.png")
    assert ImageFolderProbe(folder).fingerprint != fp


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FalconError) as e:
        ImageFolderProbe(tmp_path / "empty")
    assert "no images" in e.value.message and e.value.hint
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(FalconError, match="no images with a supported extension"):
        ImageFolderProbe(tmp_path / "texts")
    with pytest.raises(FalconError, match="does not exist") as e:
        create_probe(str(tmp_path / "nope"))
    assert e.value.hint
    with pytest.raises(FalconError):
        create_probe("not-a-known-set")


def test_torchvision_offline(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    def offline(*a, **k):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    monkeypatch.setattr(tvd, "Imagenette", offline)
    for name in ["cifar10", "imagenette"]:
        with pytest.raises(OfflineError) as e:
            create_probe(name, root=tmp_path / "ds")
        assert str(tmp_path / "ds") in e.value.message
        assert "cannot download" in e.value.hint


def test_fake_cifar10_on_disk(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    folder = tmp_path / "ds" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": [3, 1, 4, 1, 5]}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    # the real files carry md5s the fake cannot match
    import torchvision.datasets.cifar as cifar_module

    monkeypatch.setattr(cifar_module, "check_integrity", lambda *a, **k: True)
    p = TorchvisionProbe("cifar10", root=tmp_path / "ds")
    assert len(p) == 5 and p.labels.tolist() == [3, 1, 4, 1, 5]
    assert p.class_names == names
    im = p.load(2)
    assert im.mode == "RGB" and im.size == (32, 32)
    expected = data[2].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(im), expected)
    fp = p.fingerprint
    assert p.describe()["split"] == "test"
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes() + b"x")
    assert TorchvisionProbe("cifar10", root=tmp_path / "ds").fingerprint != fp
    # files present but damaged: not an offline problem
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(FalconError) as e:
        TorchvisionProbe("cifar10", root=tmp_path / "ds")
    assert not isinstance(e.value, OfflineError) and "damaged" in e.value.message


def test_array_probe_and_registry():
    imgs = np.random.default_rng(0).integers(0, 256, (4, 8, 9, 3), dtype=np.uint8)
    p = ArrayProbe(imgs, labels=[0, 1, -1, 1], class_names=["a", "b"])
    assert len(p) == 4 and p.ids[0] == "000000"
    np.testing.assert_array_equal(np.asarray(p.load(1)), imgs[1])
    assert p.fingerprint == ArrayProbe(imgs.copy(), labels=[0, 1, -1, 1]).fingerprint
    imgs2 = imgs.copy()
    imgs2[3, 0, 0, 0] ^= 1
    assert ArrayProbe(imgs2, labels=[0, 1, -1, 1]).fingerprint != p.fingerprint
    assert ArrayProbe(imgs, fingerprint="given").fingerprint == "given"
    with pytest.raises(FalconError):
        ArrayProbe(imgs.astype(np.float32))
    register_probe("unit-test-set", lambda **kw: ArrayProbe(imgs, **kw))
    try:
        q = create_probe("unit-test-set", description="x")
        assert isinstance(q, ArrayProbe) and q.describe()["description"] == "x"
    finally:
        probes.PROBES.unregister("unit-test-set")


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "RGBA")])
def test_exif_orientation_turns_the_image_upright(tmp_path, fmt, mode):
    """Orientation 6 means "rotate 90° clockwise to display": a 40 x 20 picture whose top-left
    corner is red becomes 20 x 40 with the red corner at the top right. (An RGBA PNG is
    composited on white first, which drops the EXIF block of the converted copy.)"""
    arr = np.full((20, 40, 3), 255, np.uint8)
    arr[:8, :8] = (255, 0, 0)
    im = Image.fromarray(arr).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"turned.{fmt.lower()}"
    im.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))
    out = load_image_file(path)
    assert out.size == (20, 40)
    r, g, b = out.getpixel((17, 2))  # top right: the red corner
    assert r > 200 and g < 60 and b < 60
    r, g, b = out.getpixel((2, 2))  # top left: white
    assert min(r, g, b) > 200
    exif[0x0112] = 1
    im.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {}))
    assert load_image_file(path).size == (40, 20)  # upright already
