"""Import the ResNet backbone of an external self-supervised checkpoint into the suite's format.

Every file is read through :func:`core.checkpoints.load_file` (``weights_only=True``), so a file
that needs a full unpickle is refused, never executed. The layouts recognised (``detect_format``):

Format: where the backbone is; what is dropped.

- ``mast-suite``: ``state["backbone"]`` of a ``mast-suite/1`` checkpoint; nothing.
- ``torchvision``: a plain state_dict (optionally under ``state_dict``, optionally with a DDP
  ``module.`` prefix); ``fc.*``.
- ``moco``: ``state_dict`` keys ``module.encoder_q.*`` (MoCo v1/v2); ``encoder_q.fc.*``,
  ``encoder_k.*``, ``queue``, ``queue_ptr``.
- ``mocov3``: ``state_dict`` keys ``module.base_encoder.*``; ``base_encoder.fc.*`` (projector),
  momentum encoder, predictor.
- ``lightning``: ``state_dict`` keys ``backbone.*`` (solo-learn, lightly); projector, predictor,
  momentum backbone, classifier, ...
- ``mmselfsup``: ``state_dict`` keys ``backbone.*``, ``module.backbone.*`` or ``model.backbone.*``
  (mmselfsup / mmpretrain); ``neck.*``, ``head.*``, target network, ...

A backbone saved as ``nn.Sequential(*list(resnet.children())[:-1])`` (lightly's examples) has index
names (``0.weight`` for conv1, ``4.*``..``7.*`` for layer1..layer4); they are renamed to
torchvision's.

The architecture is read off the keys (blocks per stage, ``conv3`` for bottlenecks) and the base
width off ``conv1.weight``; then the keys must equal ``build_backbone(arch, base_width)``'s without
``fc``, and every shape must match. Missing BatchNorm ``num_batches_tracked`` counters (absent from
some releases, no learned value) are filled with zeros and reported; any other missing or unexpected
key is an error that lists them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.backbones import ARCHS, build_backbone
from core.checkpoints.format import FORMAT, CheckpointError, load_file, save_checkpoint
from core.io import sha256_file

# format -> (prefixes the backbone may sit under, in order of preference; one-line description)
LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "mast-suite": (
        ("",),
        f"suite checkpoint (format: {FORMAT}) with the backbone under 'backbone'",
    ),
    "torchvision": (
        ("", "module."),
        "plain torchvision ResNet state_dict (conv1.weight, layer1.0.conv1.weight, "
        "optional fc.*), e.g. official VICReg / Barlow Twins / DINO releases",
    ),
    "moco": (
        ("module.encoder_q.", "encoder_q."),
        "MoCo v1/v2: state_dict with module.encoder_q.* / module.encoder_k.* / queue",
    ),
    "mocov3": (
        ("module.base_encoder.", "base_encoder."),
        "MoCo v3: state_dict with module.base_encoder.* / "
        "module.momentum_encoder.* / module.predictor.*",
    ),
    "lightning": (
        ("backbone.",),
        "Lightning checkpoint (solo-learn, lightly): state_dict with backbone.* "
        "(torchvision names or nn.Sequential indices), projector.*, momentum_backbone.*",
    ),
    "mmselfsup": (
        ("backbone.", "module.backbone.", "model.backbone."),
        "mmselfsup / mmpretrain: state_dict with backbone.* (or module.backbone.*, "
        "model.backbone.*), neck.*, head.*, and a 'meta' entry",
    ),
}
FORMATS = tuple(LAYOUTS)

# lightly's nn.Sequential(*list(resnet.children())[:-1]): index -> torchvision module (2 relu, 3
# maxpool and 8 avgpool hold no tensors; 9 is fc when the classifier was kept).
_SEQUENTIAL_NAMES = {
    "0": "conv1",
    "1": "bn1",
    "4": "layer1",
    "5": "layer2",
    "6": "layer3",
    "7": "layer4",
    "9": "fc",
}
_LIGHTNING_TOP_KEYS = ("pytorch-lightning_version", "global_step", "optimizer_states", "loops")
_SHOWN = 10


@dataclass
class ImportReport:
    """What ``import_backbone`` found: the layout, the architecture and what it kept, renamed,
    filled, dropped."""

    format: str
    arch: str
    base_width: int
    prefix: str
    n_backbone: int
    dropped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)  # num_batches_tracked counters set to 0
    renamed: int = 0  # keys renamed from nn.Sequential indices to torchvision names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """Counts instead of key lists, with the dropped keys grouped by module (for
        ``inspect``)."""
        groups: dict[str, int] = {}
        for key in self.dropped:
            group = _group_of(key, self.prefix)
            groups[group] = groups.get(group, 0) + 1
        return {
            "format": self.format,
            "arch": self.arch,
            "base_width": self.base_width,
            "prefix": self.prefix,
            "n_backbone": self.n_backbone,
            "n_dropped": len(self.dropped),
            "dropped_groups": groups,
            "n_filled": len(self.filled),
            "renamed": self.renamed,
        }


def _group_of(key: str, prefix: str) -> str:
    # e.g. module.encoder_q.fc.0.weight -> module.encoder_q.fc
    if prefix and key.startswith(prefix):
        return prefix + key[len(prefix) :].split(".", 1)[0]
    parts = key.split(".")
    keep = 2 if parts[0] in ("module", "model") else 1  # module.queue, module.encoder_k, projector
    return ".".join(parts[:keep])


def key_listing(keys: list[str]) -> str:
    """``[a, b, ...] (n in all)``: the first keys of a long list, for one-line errors."""
    shown = ", ".join(keys[:_SHOWN])
    return f"[{shown}{', ...' if len(keys) > _SHOWN else ''}] ({len(keys)} in all)"


def _supported() -> str:
    return "; ".join(f"{name}: {desc}" for name, (_, desc) in LAYOUTS.items())


def _unknown(obj: Any, state_dict: dict | None) -> CheckpointError:
    seen = state_dict if state_dict is not None else obj
    keys = [str(k) for k in seen] if isinstance(seen, dict) else []
    where = "state_dict keys" if state_dict is not None and state_dict is not obj else "keys"
    return CheckpointError(
        f"no supported checkpoint layout matches; {where} seen: {key_listing(keys)}. "
        f"Supported layouts: {_supported()}"
    )


def _state_dict(obj: Any) -> dict | None:
    """The flat name -> tensor mapping of a non-suite file: ``obj["state_dict"]`` or ``obj``
    itself."""
    if not isinstance(obj, dict):
        return None
    inner = obj.get("state_dict")
    if isinstance(inner, dict):
        return inner
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    return None


def detect_format(obj: Any) -> str:
    """The layout of a loaded checkpoint ``obj``: one of ``FORMATS``; a CheckpointError listing what
    was seen (the first keys) and the supported layouts otherwise."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"the file holds a {type(obj).__name__}, not a dict of tensors. "
            f"Supported layouts: {_supported()}"
        )
    found = obj.get("format")
    if found == FORMAT:
        return "mast-suite"
    if isinstance(found, str) and found.startswith("mast-suite"):
        raise CheckpointError(
            f"suite format {found!r} is not supported by this version (expected {FORMAT!r})"
        )
    state_dict = _state_dict(obj)
    if state_dict is None:
        raise _unknown(obj, None)
    keys = [k for k in state_dict if isinstance(k, str)]

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("backbone.") and any(key in obj for key in _LIGHTNING_TOP_KEYS):
        return "lightning"
    # before MoCo: mmselfsup's own MoCo also holds encoder_q.0.* (an alias of backbone.*) and
    # encoder_k.*
    if (
        has("module.backbone.")
        or has("model.backbone.")
        or (has("backbone.") and ("meta" in obj or has("neck.") or has("data_preprocessor.")))
    ):
        return "mmselfsup"
    if has("module.encoder_q.") or has("encoder_q."):
        return "moco"
    if has("module.base_encoder.") or has("base_encoder."):
        return "mocov3"
    if has("backbone."):
        # a bare backbone.* state_dict: both backbone.* layouts read it the same way
        return "lightning"
    if "conv1.weight" in state_dict or "module.conv1.weight" in state_dict:
        return "torchvision"
    raise _unknown(obj, state_dict)


def _pick_prefix(state_dict: dict, fmt: str) -> str:
    prefixes = LAYOUTS[fmt][0]
    for prefix in prefixes:  # the prefix under which a ResNet stem sits
        if f"{prefix}conv1.weight" in state_dict or f"{prefix}0.weight" in state_dict:
            return prefix
    # else the first under which anything sits: the strict check lists what is wrong
    for prefix in prefixes:
        if any(str(k).startswith(prefix) for k in state_dict):
            return prefix
    raise CheckpointError(
        f"no key starts with {' or '.join(repr(p) for p in prefixes)} as the {fmt} layout expects "
        f"(wrong prefix or wrong --format?); keys seen: {key_listing([str(k) for k in state_dict])}"
    )


def _torchvision_name(name: str) -> tuple[str, bool]:
    head, _, rest = name.partition(".")
    if head in _SEQUENTIAL_NAMES and rest:
        return f"{_SEQUENTIAL_NAMES[head]}.{rest}", True
    return name, False


def _infer_arch(names: list[str], shapes: dict[str, torch.Size]) -> tuple[str, int]:
    if "conv1.weight" not in shapes:
        raise CheckpointError(
            f"no stem convolution 'conv1.weight' among the backbone keys {key_listing(names)}"
        )
    blocks = []
    for stage in range(1, 5):
        found = {m.group(1) for n in names if (m := re.match(rf"layer{stage}\.(\d+)\.", n))}
        blocks.append(len(found))
    bottleneck = any(re.match(r"layer\d\.\d+\.conv3\.", n) for n in names)
    for arch, (block, layers) in ARCHS.items():
        if list(layers) == blocks and (block.expansion == 4) == bottleneck:
            stem = shapes["conv1.weight"]
            if len(stem) != 4:
                raise CheckpointError(
                    f"conv1.weight has shape {tuple(stem)}, not that of a convolution"
                )
            return arch, int(stem[0])
    known = ", ".join(
        f"{a} {list(layers)} {'bottleneck' if b.expansion == 4 else 'basic'}"
        for a, (b, layers) in ARCHS.items()
    )
    raise CheckpointError(
        f"no supported ResNet has {blocks} {'bottleneck' if bottleneck else 'basic'} blocks "
        f"per stage (known: {known})"
    )


def _expected_shapes(arch: str, base_width: int) -> dict[str, torch.Size]:
    with torch.device("meta"):  # shapes only, no memory, no initialisation cost
        model = build_backbone(arch, base_width)
    return {k: v.shape for k, v in model.state_dict().items() if not k.startswith("fc.")}


def _source_state_dict(obj: Any, detected: str) -> dict:
    """The state_dict the backbone is read from: a suite checkpoint's ``backbone`` dict, else
    whatever ``_state_dict`` finds."""
    if detected == "mast-suite":
        if (
            not isinstance(obj, dict)
            or obj.get("format") != FORMAT
            or not isinstance(obj.get("backbone"), dict)
        ):
            raise CheckpointError(f"not a {FORMAT} checkpoint with a 'backbone' dict")
        return obj["backbone"]
    state_dict = _state_dict(obj)
    if state_dict is None:
        raise _unknown(obj, None)
    return state_dict


def _strip_prefix(
    state_dict: dict, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str], int]:
    """The backbone tensors under ``prefix`` in torchvision names, the source key of each, the keys
    dropped, and how many names were translated from lightly's index names."""
    # lightly's nn.Sequential backbone: index names, and no torchvision stem name beside them
    sequential = f"{prefix}0.weight" in state_dict and f"{prefix}conv1.weight" not in state_dict
    backbone: dict[str, Any] = {}
    origin: dict[str, str] = {}
    dropped: list[str] = []
    renamed = 0
    for key, value in state_dict.items():
        key = str(key)
        if not key.startswith(prefix):
            dropped.append(key)
            continue
        name, was_renamed = (
            _torchvision_name(key[len(prefix) :]) if sequential else (key[len(prefix) :], False)
        )
        # the classifier, or the projector MoCo and MoCo v3 put in its place
        if name.startswith("fc."):
            dropped.append(key)
            continue
        if name in backbone:
            raise CheckpointError(f"keys {origin[name]!r} and {key!r} both map to {name!r}")
        renamed += was_renamed
        backbone[name], origin[name] = value, key
    not_tensors = [origin[n] for n, v in backbone.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"backbone entries that are not tensors: {key_listing(not_tensors)}")
    return backbone, origin, dropped, renamed


def _check_keys_and_shapes(
    backbone: dict[str, torch.Tensor],
    origin: dict[str, str],
    expected: dict[str, torch.Size],
    what: str,
    arch: str,
    base_width: int,
) -> list[str]:
    """Fail unless ``backbone`` has ``expected``'s keys and shapes; return the keys it may lack
    (``num_batches_tracked``, filled with zeros). ``what``: the layout and prefix, for the
    message."""
    missing = [k for k in expected if k not in backbone]
    filled = [k for k in missing if k.endswith(".num_batches_tracked")]
    missing = [k for k in missing if k not in filled]
    unexpected = [origin[n] for n in backbone if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing backbone keys {key_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected backbone keys {key_listing(unexpected)}")
        raise CheckpointError(
            f"the {what} does not match {arch} with base width {base_width}: " + "; ".join(parts)
        )
    wrong = [
        f"{origin[k]} {tuple(backbone[k].shape)} vs {tuple(shape)}"
        for k, shape in expected.items()
        if k in backbone and backbone[k].shape != shape
    ]
    if wrong:
        raise CheckpointError(
            f"shape mismatch against {arch} with base width {base_width} (checkpoint vs "
            f"expected): {key_listing(wrong)}"
        )
    return filled


def extract_backbone(obj: Any, fmt: str = "auto") -> tuple[dict[str, torch.Tensor], ImportReport]:
    """``import_backbone`` on an already loaded object (see there)."""
    detected = detect_format(obj) if fmt == "auto" else fmt
    if detected not in LAYOUTS:
        raise CheckpointError(f"unknown format {fmt!r}; choose auto or one of {', '.join(FORMATS)}")
    state_dict = _source_state_dict(obj, detected)
    prefix = _pick_prefix(state_dict, detected)
    backbone, origin, dropped, renamed = _strip_prefix(state_dict, prefix)
    arch, base_width = _infer_arch(list(backbone), {n: v.shape for n, v in backbone.items()})
    if detected == "mast-suite":  # what the suite recorded must agree with the weights
        recorded = (obj.get("arch"), obj.get("base_width", 64))
        if recorded != (arch, base_width):
            raise CheckpointError(
                f"the checkpoint records arch={recorded[0]!r}, base_width={recorded[1]!r} but "
                f"its backbone is {arch} with base width {base_width}"
            )
    expected = _expected_shapes(arch, base_width)
    filled = _check_keys_and_shapes(
        backbone, origin, expected, f"{detected} backbone (prefix {prefix!r})", arch, base_width
    )
    result = {
        k: backbone[k] if k in backbone else torch.zeros((), dtype=torch.long) for k in expected
    }
    report = ImportReport(
        format=detected,
        arch=arch,
        base_width=base_width,
        prefix=prefix,
        n_backbone=len(result),
        dropped=dropped,
        filled=filled,
        renamed=renamed,
    )
    return result, report


def import_backbone(
    path: str | Path, format: str = "auto"
) -> tuple[dict[str, torch.Tensor], ImportReport]:  # noqa: A002
    """The backbone of checkpoint ``path`` as a torchvision ResNet state_dict without ``fc``, and a
    report.

    ``format`` is ``"auto"`` (read from the keys) or one of ``FORMATS``. Every problem is a one-line
    CheckpointError naming the file: an unknown layout (with the first keys seen and the supported
    layouts), a wrong prefix, missing or unexpected backbone keys (listed), a shape mismatch (key
    and both shapes).
    """
    obj = load_file(path)
    try:
        return extract_backbone(obj, format)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def convert(path: str | Path, out: str | Path, format: str = "auto") -> Path:  # noqa: A002
    """Import the backbone of ``path`` and write it as a suite checkpoint at ``out``
    (atomically)."""
    backbone, report = import_backbone(path, format)
    source = Path(path).resolve()
    state = {
        "format": FORMAT,
        "backbone": backbone,
        "arch": report.arch,
        "base_width": report.base_width,
        "method": f"imported:{report.format}",
        "config": {
            "source": str(source),
            "source_sha256": sha256_file(source),
            "report": report.to_dict(),
        },
        "expander": None,
        "masks": None,
        "uncertainty_head": None,
        "aug_names": None,
    }
    return save_checkpoint(state, out)
