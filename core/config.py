"""Strict, typed configs: YAML files and ``--set key=value`` overrides become nested dataclasses.

A stage declares its config as dataclasses (see ``RunConfig``); ``load_config`` reads a YAML file
into it. Every key must exist in the schema (a typo is an error that lists the valid keys), every
value must have the declared type, and choices are checked. Values given with ``--set`` are parsed
as YAML scalars/lists (``yaml.safe_load``), never evaluated. A file may start from another with
``base: <file>`` (``read_config``). The resolved config is saved next to every output
(``save_config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from core.io import atomic_write_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


class ConfigError(ValueError):
    """The config cannot be used; the message names the key and what is allowed."""


# -----------------------------------------------------------------------------------------------
# schema
@dataclasses.dataclass
class DataConfig:
    """Where images come from. Names other tools rely on: dataset, root, image_size."""

    dataset: Literal["factorshapes", "folder", "stl10", "cifar10", "cifar100", "fashion_mnist"] = (
        "factorshapes"
    )
    #: factorshapes: cache folder (default: $MAST_DATA_CACHE or ~/.cache/mast-suite/data); folder:
    #: an ImageNet-layout or flat image folder; stl10: the folder holding stl10_binary/;
    #: cifar10/cifar100: the folder holding cifar-10-batches-py/ or cifar-100-python/;
    #: fashion_mnist: the IDX files.
    root: str | None = None
    #: factorshapes: pretrain | cls-upright | cls-rot | det | det-upright. folder/stl10: unused.
    split: str = "pretrain"
    #: Side of the square images fed to the network (factorshapes: the rendered size).
    image_size: int = 64
    #: factorshapes: images per part (null: the data set's defaults, e.g. 10,000 for pretrain).
    n: int | None = None
    #: factorshapes: seed of the generator; fixed across runs so that every run sees the same
    #: images.
    generator_seed: int = 0
    #: factorshapes pretrain/cls splits: multiplies the object sizes (1.25: 0.25/0.35/0.45 of the
    #: width; a lever for `shape`, docs/defaults.md). Other values get their own cache folder.
    object_scale: float = 1.0
    #: Data loader processes per training process.
    num_workers: int = 2
    #: An unreadable image: skip it (counted in the log) or stop with an error.
    on_bad_image: Literal["skip", "error"] = "skip"
    #: folder: decode every file once before training and drop unreadable ones (slow on ImageNet).
    verify_images: bool = False
    #: folder: labels from class sub-folders (ImageNet layout), none, or auto (sub-folders if
    #: present).
    folder_labels: Literal["auto", "subfolders", "none"] = "auto"


@dataclasses.dataclass
class PretrainDataConfig(DataConfig):
    #: The part pretraining reads (STL-10: train+unlabeled; ImageNet folders: train).
    part: str = "train"
    #: Where JPEG files of folder data are decoded: in the loader (PIL), or on the training device
    #: (torchvision's decode_jpeg: nvJPEG on CUDA), the loader reading only their bytes and headers.
    #: Needs views.render: device; other files and data sets are decoded in the loader.
    decode: Literal["loader", "device"] = "loader"


@dataclasses.dataclass
class TrainConfig:
    """Optimisation length and batch; stages add their own fields in subclasses."""

    epochs: int = 1
    batch_size: int = 256


@dataclasses.dataclass
class RunConfig:
    """The part every stage shares: seed, device, data, training length."""

    seed: int = 0
    #: auto (CUDA if available, else CPU), cpu, cuda, cuda:N, mps.
    device: str = "auto"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


# -------------------------------------------------------------------------------------------
# conversion
def _valid_keys_message(cls: type, where: str, key: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return (
        f"unknown config key '{where}{key}'{hint}; valid "
        f"keys{' under ' + where[:-1] if where else ''}: {', '.join(names)}"
    )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted (dataclasses, tuples,
    floats)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"'{key}' = {value!r} matches none of {_type_name(tp)}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"'{key}' = {value!r} is not allowed; choose one of: {', '.join(map(str, args))}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(
                f"'{key}' must be a mapping of keys {[f.name for f in dataclasses.fields(tp)]}, "
                f"got {value!r}"
            )
        return from_dict(cast(type, tp), value, prefix=f"{key}.")  # an annotation: a class
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        val_tp = args[1] if args else Any
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        # YAML reads 1e-3 (no dot) as a string: accept any number spelling float() accepts.
        if isinstance(value, bool):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{key}' must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"'{key}': unsupported annotation {_type_name(tp)} in the config schema")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, strictly (unknown keys and wrong types are errors)."""
    schema = cast("type[DataclassInstance]", cls)  # the config schemas are dataclasses
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(schema)}
    for key in data:
        if key not in names:
            raise ConfigError(_valid_keys_message(cls, prefix, str(key)))
    kwargs = {key: _convert(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    for field in dataclasses.fields(schema):
        # choices read when the config is read (a table another module fills), not when declared
        choices = field.metadata.get("choices")
        if choices is not None and field.name in kwargs:
            allowed = tuple(choices() if callable(choices) else choices)
            if kwargs[field.name] not in allowed:
                raise ConfigError(
                    f"'{prefix}{field.name}' = {kwargs[field.name]!r} is not allowed; choose one "
                    f"of: {', '.join(map(str, allowed))}"
                )
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain dicts and lists (tuples become lists), ready for YAML, JSON and
    records."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


# ---------------------------------------------------------------------------------------------
# overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """``'train.lr=0.1'`` -> (['train', 'lr'], 0.1). The value is a YAML scalar or flow
    list/mapping."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like key.subkey=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override '{text}': the value is not valid YAML ({exc.problem})"
        ) from None
    return key.strip().split("."), value


def apply_overrides(cls: type, data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key=value`` set; keys are checked against schema
    ``cls``."""
    data = _deep_copy(data)
    schema: type | None  # the dataclass at the current depth (None: below a plain field)
    for text in overrides:
        path, value = parse_override(text)
        node, schema = data, cls
        for depth, part in enumerate(path):
            where = ".".join(path[:depth]) + "." if depth else ""
            if schema is None or not dataclasses.is_dataclass(schema):
                raise ConfigError(f"override '{text}': '{where[:-1]}' has no sub-keys")
            if part not in {f.name for f in dataclasses.fields(schema)}:
                raise ConfigError(_valid_keys_message(schema, where, part))
            field_tp = get_type_hints(schema)[part]
            if depth == len(path) - 1:
                node[part] = value
            elif get_origin(field_tp) is dict and depth == len(path) - 2:
                # a mapping field takes one level of free keys (loss.options.temperature=0.2);
                # its owner checks the names when the config is built
                child = node.get(part)
                node[part] = dict(child) if isinstance(child, dict) else {}
                node[part][path[-1]] = value
                break
            else:
                child = node.get(part)
                node[part] = child if isinstance(child, dict) else {}
                node, schema = (
                    node[part],
                    cast(type, field_tp) if dataclasses.is_dataclass(field_tp) else None,
                )
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


# ------------------------------------------------------------------------------------------- load,
# save
def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; a missing file or a non-mapping is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, got {type(data).__name__}"
        )
    return data


#: The top-level key naming the file a config inherits from.
BASE_KEY = "base"


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``: mappings merge key by key, anything else (scalars, lists)
    is replaced whole."""
    out = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """A config file's mapping with its ``base:`` chain resolved: the base file (a path relative
    to this file's folder) is read first, then this file's keys update it (``merge``)."""
    return _read_chain(Path(path), [])


def _read_chain(path: Path, seen: list[Path]) -> dict[str, Any]:
    data = read_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"config file {path}: '{BASE_KEY}' must name a config file")
    base_path = path.parent / base
    chain = [*seen, path.resolve()]
    if base_path.resolve() in chain:
        loop = " -> ".join(str(p) for p in [*chain, base_path.resolve()])
        raise ConfigError(f"config file {path}: its base chain loops ({loop})")
    if not base_path.is_file():
        raise ConfigError(
            f"config file {path}: base file {base_path} not found (a base is relative to the "
            "file's own folder)"
        )
    return merge(_read_chain(base_path, chain), data)


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path`` (its ``base:`` chain resolved),
    then by ``overrides`` (``key=value``)."""
    data = read_config(path) if path is not None else {}
    data = apply_overrides(cls, data, list(overrides or []))
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from None


def dump_config(config: Any) -> str:
    """The resolved config as YAML text (keys in schema order)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config to ``out_dir/name`` atomically and return the path."""
    return atomic_write_text(Path(out_dir) / name, dump_config(config))


def field_names(cls: type) -> list[str]:
    """Dotted names of every leaf key of a config schema (for help texts and docs)."""
    names: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            names += [f"{f.name}.{sub}" for sub in field_names(hints[f.name])]
        else:
            names.append(f.name)
    return names
