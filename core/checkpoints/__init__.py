"""Checkpoints: the suite's own format (``format``), the import of external ones (``importers``:
torchvision, MoCo v1/v2/v3, solo-learn, lightly, mmselfsup), a backbone from either (``backbone``)
and the command line (``python -m core.checkpoints inspect FILE | export FILE OUT | convert FILE
OUT``). The names below are the package's interface."""

from core.checkpoints.backbone import (
    FLOOR_INIT,
    Backbone,
    load_backbone,
    load_suite_backbone,
    pixel_backbone,
    random_backbone,
    weights_hash,
)
from core.checkpoints.cli import inspect_file, main
from core.checkpoints.format import (
    FORMAT,
    REQUIRED_KEYS,
    CheckpointError,
    check_suite_state,
    describe,
    export_backbone,
    load_checkpoint,
    load_file,
    save_checkpoint,
)
from core.checkpoints.importers import (
    FORMATS,
    ImportReport,
    convert,
    detect_format,
    extract_backbone,
    import_backbone,
    key_listing,
)

__all__ = [
    "FORMAT",
    "FORMATS",
    "REQUIRED_KEYS",
    "FLOOR_INIT",
    "Backbone",
    "CheckpointError",
    "ImportReport",
    "check_suite_state",
    "convert",
    "describe",
    "detect_format",
    "export_backbone",
    "extract_backbone",
    "import_backbone",
    "key_listing",
    "inspect_file",
    "load_backbone",
    "load_checkpoint",
    "load_file",
    "load_suite_backbone",
    "main",
    "pixel_backbone",
    "random_backbone",
    "save_checkpoint",
    "weights_hash",
]
