"""Any external checkpoint layout, loaded by the classification stage, gives exactly the features of
the torchvision model whose weights it carries; broken files fail with one clear line."""

import pickle
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from core.checkpoints import CheckpointError, load_backbone
from core.data.transforms import to_float
from downstream.classification.features import extract
from tests.core.test_checkpoint_import import LAYOUTS, lightly_layout, torchvision_layout


def torchvision_model(seed: int = 3) -> nn.Module:
    """A plain torchvision ResNet-18 whose every tensor, BN statistics included, is random."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif not name.endswith("num_batches_tracked"):
                tensor.normal_(0, 0.05)
    return model.eval()


class Images(torch.utils.data.Dataset):
    label_names = {"class": 2}

    def __init__(self, n: int = 6):
        self.images = torch.randint(
            0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], {"class": i % 2}


@pytest.fixture(scope="module")
def source():
    return torchvision_model()


@pytest.mark.parametrize("fmt", [*LAYOUTS, "lightly"])
def test_import_then_extract_equals_torchvision(fmt, source, tmp_path):
    builder = lightly_layout if fmt == "lightly" else LAYOUTS[fmt]
    obj, _ = builder(source)
    torch.save(obj, tmp_path / "ck.pt")
    backbone = load_backbone(tmp_path / "ck.pt")
    assert (backbone.arch, backbone.base_width) == ("resnet18", 64)
    data = Images()
    features, labels = extract(backbone.model, data, batch_size=4)
    reference = nn.Sequential(*list(source.children())[:-1], nn.Flatten(1)).eval()
    with torch.no_grad():
        expected = reference(to_float(data.images))
    assert features.shape == (6, 512) and torch.equal(features, expected)
    assert labels["class"].tolist() == [0, 1, 0, 1, 0, 1]


def _one_line_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_backbone(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_and_unexpected_keys_are_listed(source, tmp_path):
    state, _ = torchvision_layout(source)
    missing = dict(state)
    del missing["layer2.0.conv1.weight"]
    torch.save(missing, tmp_path / "missing.pt")
    assert "missing backbone keys [layer2.0.conv1.weight]" in _one_line_error(
        tmp_path / "missing.pt"
    )
    torch.save({**state, "layer5.0.conv1.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    assert "unexpected backbone keys [layer5.0.conv1.weight]" in _one_line_error(
        tmp_path / "extra.pt"
    )


# torch's note on the plain pickle below
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_not_a_checkpoint_and_pickle_only(tmp_path):
    (tmp_path / "notes.pt").write_text("this is not a checkpoint\n")
    assert "not a readable torch checkpoint" in _one_line_error(tmp_path / "notes.pt")
    torch.save({"state_dict": {}, "args": argparse_namespace()}, tmp_path / "pickled.pt")
    message = _one_line_error(tmp_path / "pickled.pt")
    assert "weights_only" in message or "Python objects" in message
    with open(tmp_path / "raw.pkl", "wb") as handle:
        pickle.dump({"weights": [1, 2, 3]}, handle)
    assert "not a readable torch checkpoint" in _one_line_error(tmp_path / "raw.pkl")


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=0.1)


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, repo_root):
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "downstream.classification",
            "--ckpt",
            str(tmp_path / "bad.pt"),
            "--records",
            str(tmp_path / "r.jsonl"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "bad.pt" in errors[0]
        and "not a readable torch checkpoint" in errors[0]
    )
    assert not (tmp_path / "r.jsonl").exists()
