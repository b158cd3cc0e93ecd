"""Image folders (real photos in mixed sizes and modes, one corrupt file) and STL-10 binaries."""

import logging
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from core.config import DataConfig
from core.data import DataError, base, build_dataset
from core.data.base import decode_on
from core.data.folder import ImageFolderDataset
from core.data.stl10 import IMAGE_BYTES, STL10Dataset
from core.data.transforms import resize_center_crop, to_float

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"


@pytest.fixture
def photo_folder(tmp_path):
    """ImageNet layout: two classes of real photos (matplotlib's sample photos) in several modes and
    sizes."""
    hopper = Image.open(SAMPLES / "grace_hopper.jpg")  # RGB JPEG, 512 x 600
    pack = Image.open(SAMPLES / "Minduka_Present_Blue_Pack.png")  # RGBA PNG, 128 x 128
    a, b = tmp_path / "train" / "class_a", tmp_path / "train" / "class_b"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    hopper.save(a / "rgb.jpg")
    hopper.convert("L").resize((300, 256)).save(a / "gray.png")
    hopper.convert("P", palette=Image.Palette.ADAPTIVE).resize((97, 113)).save(a / "palette.gif")
    hopper.convert("CMYK").resize((64, 80)).save(a / "cmyk.jpg")
    pack.save(b / "rgba.png")
    Image.fromarray(np.asarray(hopper.convert("L"), np.uint16) * 200).resize((50, 70)).save(
        b / "gray16.png"
    )
    # truncated JPEG
    (b / "corrupt.jpg").write_bytes((SAMPLES / "grace_hopper.jpg").read_bytes()[:300])
    (b / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_reads_real_photos_and_skips_the_corrupt_one(photo_folder, caplog):
    caplog.set_level(logging.WARNING, logger="core.data")
    dataset = ImageFolderDataset(photo_folder, part="train")
    assert dataset.classes == ["class_a", "class_b"] and dataset.label_names == {"class": 2}
    assert len(dataset) == 7  # .txt ignored; the corrupt file is found only when read
    items = {}
    for index in range(len(dataset)):
        image, target = dataset[index]
        items[dataset.samples[index][0].name] = (image, target)
        assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert (
        dataset.n_skipped == 1
        and "corrupt.jpg" in caplog.text
        and "1 skipped so far" in caplog.text
    )
    # The corrupt file's slot was filled by the next readable image (same batch size, no crash).
    assert torch.equal(items["corrupt.jpg"][0], items["gray16.png"][0])
    assert items["rgb.jpg"][0].shape == (3, 600, 512) and items["gray.png"][0].shape == (
        3,
        256,
        300,
    )
    assert items["palette.gif"][0].shape == (3, 113, 97) and items["rgba.png"][0].shape == (
        3,
        128,
        128,
    )
    gray = items["gray.png"][0]
    # grayscale replicated to RGB
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert items["gray16.png"][0].max() > 200  # 16-bit values rescaled, not clipped to 255 blobs
    assert items["rgb.jpg"][1] == {"class": 0} and items["rgba.png"][1] == {"class": 1}


def test_verify_drops_unreadable_files_up_front(photo_folder, caplog):
    caplog.set_level(logging.WARNING, logger="core.data")
    dataset = ImageFolderDataset(photo_folder / "train", verify=True)
    assert len(dataset) == 6 and dataset.n_skipped == 1
    assert "1 unreadable image(s) skipped, 6 kept" in caplog.text


def test_bad_image_is_an_error_when_asked(photo_folder):
    dataset = ImageFolderDataset(photo_folder, part="train", on_bad_image="error")
    corrupt = [i for i, (p, _) in enumerate(dataset.samples) if p.name == "corrupt.jpg"][0]
    with pytest.raises(DataError, match=r"unreadable image .*corrupt.jpg.*data.on_bad_image: skip"):
        dataset[corrupt]


def test_jpegs_left_for_the_device_decode_as_pil_does(photo_folder):
    # data.decode: device: the loader hands a JPEG's bytes and header size; decode_on (here on the
    # CPU, nvJPEG on CUDA) gives PIL's pixels. Other files stay with the loader.
    a = photo_folder / "train" / "class_a"
    Image.open(SAMPLES / "grace_hopper.jpg").convert("L").resize((90, 77)).save(a / "grey.jpg")
    dataset = ImageFolderDataset(photo_folder, part="train")
    index = {p.name: i for i, (p, _) in enumerate(dataset.samples)}
    decoded = []
    for name in ("rgb.jpg", "grey.jpg"):
        data, height, width = dataset.encoded(index[name])
        assert data.dim() == 1 and data.dtype == torch.uint8
        decoded.append((data, dataset[index[name]][0], (height, width)))
    # one batched call, mixed with an image the loader decoded
    loader_decoded = dataset[index["gray.png"]][0]
    out = decode_on(torch.device("cpu"), [decoded[0][0], loader_decoded, decoded[1][0]])
    for image, (_, pil, size) in zip((out[0], out[2]), decoded):
        assert image.shape == (3, *size) and torch.equal(image, pil)
    assert torch.equal(out[1], loader_decoded)
    for name in ("cmyk.jpg", "gray.png", "palette.gif", "rgba.png"):
        assert dataset.encoded(index[name]) is None
    # a header that does not read is skipped as the loader skips it (the next file takes its place)
    assert dataset.encoded(index["corrupt.jpg"]) is None and dataset.n_skipped == 1
    # a body that does not decode: one line naming the cure
    body = (SAMPLES / "grace_hopper.jpg").read_bytes()
    broken = torch.frombuffer(bytearray(body[:2000] + bytes(4000)), dtype=torch.uint8)
    with pytest.raises(DataError, match=r"does not decode on cpu \(.*\), nor with PIL: .*loader"):
        decode_on(torch.device("cpu"), [broken])


def test_a_jpeg_the_device_refuses_is_decoded_by_pil_as_the_loader_would(
    photo_folder, monkeypatch, caplog
):
    """nvJPEG refuses some files libjpeg reads (e.g. unusual chroma subsampling): the batch is then
    decoded file by file, and PIL decodes the refused one instead of stopping the run."""
    a = photo_folder / "train" / "class_a"
    Image.open(SAMPLES / "grace_hopper.jpg").convert("L").resize((90, 77)).save(a / "grey.jpg")
    dataset = ImageFolderDataset(photo_folder, part="train")
    index = {p.name: i for i, (p, _) in enumerate(dataset.samples)}
    refused, grey = (dataset.encoded(index[name])[0] for name in ("rgb.jpg", "grey.jpg"))
    real = base.decode_jpeg
    calls = []

    def picky(data, **kwargs):
        calls.append("batch" if isinstance(data, list) else "one")
        if isinstance(data, list) or torch.equal(data, refused):
            raise RuntimeError("nvjpeg: unsupported chroma subsampling")
        return real(data, **kwargs)

    monkeypatch.setattr(base, "decode_jpeg", picky)
    with caplog.at_level(logging.WARNING, logger="core.data"):
        out = decode_on(torch.device("cpu"), [refused, grey])
    assert calls == ["batch", "one", "one"]
    assert torch.equal(out[0], dataset[index["rgb.jpg"]][0])
    assert torch.equal(out[1], dataset[index["grey.jpg"]][0]) and out[1].shape[0] == 3
    assert "unsupported chroma subsampling" in caplog.text and "PIL decoded it" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_jpegs_decoded_by_nvjpeg_match_pil(photo_folder):
    dataset = ImageFolderDataset(photo_folder, part="train")
    rgb = [i for i, (p, _) in enumerate(dataset.samples) if p.name == "rgb.jpg"][0]
    [image] = decode_on(torch.device("cuda"), [dataset.encoded(rgb)[0]])
    diff = (image.cpu().int() - dataset[rgb][0].int()).abs().float()
    # nvJPEG's IDCT and upsampling round differently from libjpeg-turbo's
    assert image.shape == (3, 600, 512) and diff.mean() <= 1.0 and diff.max() <= 16


def test_unlabelled_flat_folder_and_batches(photo_folder):
    cfg = DataConfig(dataset="folder", root=str(photo_folder / "train" / "class_a"), image_size=48)
    dataset = build_dataset(cfg, part="train", transform=resize_center_crop(48, 256 / 224))
    assert dataset.label_names == {} and len(dataset) == 4
    images, targets = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 3, 48, 48) and images.dtype == torch.uint8 and targets == {}
    normalised = to_float(images)
    assert normalised.dtype == torch.float32 and -3 < normalised.mean() < 3


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match=f"image folder not found: {tmp_path / 'nope'}"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="has no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty", labels="subfolders")
    with pytest.raises(DataError, match="data.root is required"):
        build_dataset(DataConfig(dataset="folder"))


def write_stl10(folder: Path, n_train=3, n_test=2, n_unlabeled=4) -> dict[str, np.ndarray]:
    """Tiny files in STL-10's layout: each image [3, 96, 96] stored column-major per channel."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    images = {}
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        x = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)  # [N, C, row, col]
        x.transpose(0, 1, 3, 2).tofile(folder / f"{part}_X.bin")
        images[part] = x
        if part != "unlabeled":
            np.arange(1, n + 1, dtype=np.uint8).tofile(folder / f"{part}_y.bin")
    return images


def test_stl10_binary_layout(tmp_path):
    images = write_stl10(tmp_path / "stl10_binary")
    train = STL10Dataset(tmp_path, "train")
    assert len(train) == 3 and train.label_names == {"class": 10}
    image, target = train[1]
    assert torch.equal(image, torch.from_numpy(images["train"][1])) and target == {"class": 1}
    both = build_dataset(
        DataConfig(dataset="stl10", root=str(tmp_path / "stl10_binary")), part="train+unlabeled"
    )
    assert len(both) == 7 and both.label_names == {}
    assert torch.equal(both[5][0], torch.from_numpy(images["unlabeled"][2])) and both[5][1] == {}
    with pytest.raises(IndexError):
        both[7]


def test_stl10_errors(tmp_path):
    write_stl10(tmp_path / "stl10_binary")
    with pytest.raises(
        DataError, match="unknown STL-10 part 'val'; valid parts: train, test, unlabeled"
    ):
        STL10Dataset(tmp_path, "val")
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(b"\0" * (IMAGE_BYTES + 5))
    with pytest.raises(DataError, match="is not an STL-10 image file"):
        STL10Dataset(tmp_path, "test")
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(DataError, match="does not match train_X.bin"):
        STL10Dataset(tmp_path, "train")
    with pytest.raises(DataError, match="STL-10 folder not found"):
        STL10Dataset(tmp_path / "missing", "train")
