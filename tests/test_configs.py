"""Every shipped config loads strictly, and its name says its method, batch and epochs."""

import re
from pathlib import Path

import pytest

from core.config import BASE_KEY, load_config, read_yaml, to_dict
from pretrain.config import PretrainConfig

ROOT = Path(__file__).resolve().parent.parent
PRETRAIN = sorted((ROOT / "configs" / "pretrain").glob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in PRETRAIN}
    assert {
        "mast_r18w16_b128_16e_shapes",
        "vicreg_r18w16_b128_16e_shapes",
        "vicreg_r50_b512_100e_imagenet",
        "vicreg_r50_b2048_1000e_imagenet",
        "mast_r18_b256_200e_stl10",
    } <= names


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda p: p.stem)
def test_pretrain_config_matches_its_name(path):
    cfg = load_config(PretrainConfig, path)
    method, arch, batch, epochs, data = re.fullmatch(
        r"(\w+?)_(r\d+\w*)_b(\d+)_(\d+)e_(\w+)", path.stem
    ).groups()
    # `<method>_factorized` names the method with factorized views (views.mode is a view policy, not
    # a loss).
    method, factorized = method.removesuffix("_factorized"), method.endswith("_factorized")
    assert (cfg.views.mode == "factorized") == factorized
    assert (cfg.views.mode == "looc") == (method == "looc")  # LooC trains on its own views
    # `mast_and` names MAST with AND-combined subspaces (loss.combine), learned masks and no
    # uncertainty; `mast_and_target` that with subspace targets (loss.target_weight).
    combine_and = method in ("mast_and", "mast_and_target")
    assert (cfg.loss.combine == "and") == combine_and
    assert (cfg.loss.target_weight > 0) == (method == "mast_and_target")
    assert cfg.method == ("mast_nounc" if combine_and else method) and not (
        combine_and and cfg.uses_uncertainty
    )
    assert cfg.train.batch_size == int(batch) and cfg.train.epochs == int(epochs)
    depth = re.match(r"r(\d+)", arch).group(1)
    assert cfg.model.arch == f"resnet{depth}"
    assert {"shapes": "factorshapes", "imagenet": "folder", "imagenet100": "folder"}.get(
        data, data
    ) == cfg.data.dataset
    # VICReg's pairs (every op sampled afresh) except under MAST's OR loss
    assert (cfg.views.resample == "all") == (not cfg.uses_masks or combine_and)


CLASSIFICATION = sorted((ROOT / "configs" / "classification").glob("*.yaml"))


@pytest.mark.parametrize("path", CLASSIFICATION, ids=lambda p: p.stem)
def test_classification_config_matches_its_name(path):
    """``<protocols>_<data>.yaml``: the protocols and the data set the name promises."""
    from downstream.classification.config import ClassificationConfig

    cfg = load_config(ClassificationConfig, path)
    found = re.fullmatch(r"(linear_knn|linear-sgd|finetune|transfer)_(\w+)", path.stem)
    protocols, data = found.groups()
    assert (
        cfg.protocols
        == {
            "linear_knn": ["linear-lbfgs", "knn"],
            "linear-sgd": ["linear-sgd"],
            "finetune": ["finetune"],
            "transfer": ["linear-lbfgs"],
        }[protocols]
    )
    assert {"shapes": "factorshapes", **FOLDER_SETS}.get(data, data) == cfg.data.dataset


#: Data sets read as image folders, by the name their configs use.
FOLDER_SETS = {
    name: "folder"
    for name in (
        "in1k",
        "food101",
        "mit67",
        "sun397",
        "dtd",
        "cub",
        "pets",
        "flowers",
        "caltech101",
    )
}
#: AugSelf's metric per transfer data set (mean per-class accuracy where test classes are uneven).
CLASS_AVERAGED = {"pets", "flowers", "caltech101"}


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs" / "classification").glob("transfer_*.yaml")),
    ids=lambda p: p.stem,
)
def test_transfer_configs_follow_augself(path):
    from downstream.classification.config import ClassificationConfig

    cfg = load_config(ClassificationConfig, path)
    assert cfg.data.image_size == 96 and cfg.protocols == ["linear-lbfgs"]
    grid = cfg.lbfgs.l2_grid
    assert len(grid) == 45 and grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
    assert grid[1] / grid[0] == pytest.approx(10 ** (11 / 44))  # log-spaced
    data = path.stem.removeprefix("transfer_")
    assert cfg.lbfgs.metric == ("class_avg" if data in CLASS_AVERAGED else "top1")


MISSING = object()


def _leaves(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize(
    "path", [p for p in PRETRAIN if BASE_KEY in read_yaml(p)], ids=lambda p: p.stem
)
def test_a_variant_writes_only_its_differences(path):
    """A config with ``base:`` sets only keys whose values differ from the base's, so a variant
    reads as what makes it one."""
    raw = read_yaml(path)
    base = _leaves(to_dict(load_config(PretrainConfig, path.parent / raw.pop(BASE_KEY))))
    for key, value in _leaves(raw).items():
        # a key the base lacks (an option of another method's loss) is a difference too
        assert base.get(key, MISSING) != value, f"{path.name}: {key} repeats its base's value"


def test_the_shapes_variants_inherit():
    """Each embedded MAST variant is the default plus its differences, not a copy."""
    variants = [p for p in PRETRAIN if p.stem.endswith("_shapes") and p.stem.startswith("mast")]
    assert len(variants) >= 4
    assert all(BASE_KEY in read_yaml(p) for p in variants)
