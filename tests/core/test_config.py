import dataclasses
from typing import Literal

import pytest

from core.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    apply_overrides,
    dump_config,
    field_names,
    load_config,
    merge,
    read_config,
    read_yaml,
    save_config,
    to_dict,
)


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    name: Literal["sgd", "lars"] = "lars"
    betas: tuple[float, float] = (0.9, 0.99)


@dataclasses.dataclass
class Schema(RunConfig):
    optim: Optim = dataclasses.field(default_factory=Optim)
    tags: list[str] = dataclasses.field(default_factory=list)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config(Schema)
    assert cfg.seed == 0 and cfg.data.dataset == "factorshapes" and cfg.optim.lr == 0.1


def test_yaml_values_are_typed(tmp_path):
    path = write(
        tmp_path,
        "seed: 3\ndata: {root: /x, image_size: 32}\ntrain: {epochs: 5}\noptim: {lr: 1e-3, betas: "
        "[0.5, 0.6]}\n",
    )
    cfg = load_config(Schema, path)
    assert (
        cfg.seed == 3
        and cfg.data.root == "/x"
        and cfg.data.image_size == 32
        and cfg.train.epochs == 5
    )
    # YAML reads 1e-3 as a string
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.5, 0.6)
    assert cfg.train.batch_size == 256  # untouched default


def test_typo_lists_valid_keys(tmp_path):
    path = write(tmp_path, "data:\n  roott: /x\n")
    with pytest.raises(ConfigError) as info:
        load_config(Schema, path)
    message = str(info.value)
    assert "data.roott" in message and "did you mean 'root'" in message
    for key in ("dataset", "root", "image_size", "on_bad_image"):
        assert key in message
    assert str(path) in message


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"unknown config key 'sead'.*valid keys: seed, device, data, train, optim, tags",
    ):
        load_config(Schema, write(tmp_path, "sead: 1\n"))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("seed: 1.5\n", "'seed' must be an integer"),
        ("seed: true\n", "'seed' must be an integer"),
        ("optim: {lr: fast}\n", "'optim.lr' must be a number"),
        ("optim: {name: adam}\n", "choose one of: sgd, lars"),
        ("data: 3\n", "'data' must be a mapping"),
        ("tags: [1]\n", "'tags[0]' must be a string"),
        ("data: {on_bad_image: ignore}\n", "choose one of: skip, error"),
    ],
)
def test_wrong_types_are_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_config(Schema, write(tmp_path, text))


def test_overrides_win_over_file(tmp_path):
    path = write(tmp_path, "seed: 3\ndata: {image_size: 32}\n")
    cfg = load_config(
        Schema,
        path,
        [
            "seed=7",
            "data.root=/data/imagenet",
            "optim.lr=0.5",
            "tags=[a, b]",
            "data.n=null",
            "optim.betas=[0.1, 0.2]",
        ],
    )
    assert cfg.seed == 7 and cfg.data.image_size == 32 and cfg.data.root == "/data/imagenet"
    assert (
        cfg.optim.lr == 0.5
        and cfg.tags == ["a", "b"]
        and cfg.data.n is None
        and cfg.optim.betas == (0.1, 0.2)
    )


def test_override_creates_missing_section():
    cfg = load_config(Schema, None, ["train.epochs=9"])
    assert cfg.train.epochs == 9 and cfg.train.batch_size == 256


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.roott=/x", "did you mean 'root'"),
        ("seed.x=1", "'seed' has no sub-keys"),
        ("novalue", "must look like key.subkey=value"),
        ("seed=[1", "not valid YAML"),
        ("seed=abc", "'seed' must be an integer"),
    ],
)
def test_bad_overrides(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(Schema, None, [override])


def test_override_values_are_never_evaluated():
    cfg = load_config(Schema, None, ["data.root=__import__('os').system('false')"])
    assert cfg.data.root == "__import__('os').system('false')"


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml(write(tmp_path, "- 1\n- 2\n"))


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(Schema, None, ["seed=11", "optim.lr=0.25", "tags=[x]"])
    path = save_config(cfg, tmp_path / "out")
    assert path.name == "config.yaml"
    again = load_config(Schema, path)
    assert again == cfg
    assert to_dict(again)["optim"]["betas"] == [0.9, 0.99]
    assert dump_config(cfg).startswith("seed: 11\n")


def test_field_names_lists_leaves():
    names = field_names(Schema)
    assert (
        "data.root" in names
        and "train.batch_size" in names
        and "optim.lr" in names
        and "data" not in names
    )


def test_names_other_tools_rely_on():
    names = field_names(RunConfig)
    for key in (
        "seed",
        "data.dataset",
        "data.root",
        "data.image_size",
        "train.epochs",
        "train.batch_size",
    ):
        assert key in names
    assert DataConfig().dataset == "factorshapes"


def test_apply_overrides_leaves_input_alone():
    data = {"data": {"root": "/a"}}
    apply_overrides(Schema, data, ["data.root=/b"])
    assert data == {"data": {"root": "/a"}}


def test_base_chain_merges_mappings_and_replaces_the_rest(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text(
        "seed: 3\noptim: {lr: 0.5, name: sgd}\ntags: [a, b]\ntrain: {epochs: 4}\n"
    )
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\noptim: {lr: 0.25}\n")
    leaf = tmp_path / "sub" / "leaf.yaml"
    leaf.write_text("base: mid.yaml\ntags: [c]\ntrain: {batch_size: 8}\n")
    assert read_config(leaf) == {
        "seed": 3,
        "optim": {"lr": 0.25, "name": "sgd"},
        "tags": ["c"],
        "train": {"epochs": 4, "batch_size": 8},
    }
    cfg = load_config(Schema, leaf, ["optim.lr=0.125"])
    assert (cfg.seed, cfg.optim.lr, cfg.optim.name, cfg.tags) == (3, 0.125, "sgd", ["c"])
    assert (cfg.train.epochs, cfg.train.batch_size) == (4, 8)
    # what is saved is the whole resolved config, with no base key left to follow
    saved = read_yaml(save_config(cfg, tmp_path / "out"))
    assert "base" not in saved and saved["optim"]["name"] == "sgd" and saved["train"]["epochs"] == 4


def test_merge_leaves_its_inputs_alone():
    base, update = {"a": {"b": [1, 2], "c": 1}}, {"a": {"c": 2}}
    assert merge(base, update) == {"a": {"b": [1, 2], "c": 2}}
    assert base == {"a": {"b": [1, 2], "c": 1}} and update == {"a": {"c": 2}}


@pytest.mark.parametrize(
    "files, fragment",
    [
        ({"c.yaml": "base: gone.yaml\n"}, "base file"),
        ({"c.yaml": "base: [a.yaml]\n"}, "must name a config file"),
        ({"c.yaml": "base: d.yaml\n", "d.yaml": "base: c.yaml\n"}, "loops"),
        ({"c.yaml": "base: c.yaml\n"}, "loops"),
    ],
)
def test_bad_base_is_a_one_line_error(tmp_path, files, fragment):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_config(Schema, tmp_path / "c.yaml")
    assert "\n" not in str(info.value) and "c.yaml" in str(info.value)
