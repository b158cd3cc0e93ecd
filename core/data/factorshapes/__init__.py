"""FactorShapes: the embedded, generated data set (specified in
``docs/factorshapes.md``).

Each image shows one polygon (``cls`` splits, ``pretrain``) or 1-6 polygons (``det`` splits) on a
background from a fixed pool of 16. Nine factors are drawn independently and uniformly, each one
removed by one standard SSL augmentation: ``shape`` (8), ``hue`` (8), ``orient`` (8), ``chiral``
(2), ``texture`` (4), ``size`` (3), ``pos`` (4), ``bg`` (4) and ``light`` (3).

Splits: ``pretrain`` (each image upright or rotated with p=0.5, recorded as ``upright``),
``cls-upright`` (angle 0 +/-10 deg; the flip probe is ``chiral``), ``cls-rot`` (8 orientation bins;
the rotation probe is ``orient``), ``det`` (1-6 objects, 8 bins) and ``det-upright`` (1-6 upright
objects, with a chirality COCO file).

Every image is a pure function of ``(seed, split, part, index)``: its generator is
``np.random.default_rng([seed, split_id, part_id, index])``, no global RNG is touched, so images can
be rendered alone (``render_sample``) or in any number of processes with identical results.
``ensure_split`` renders a part once into a cache folder (written atomically) and
``FactorShapesDataset`` reads it. Changing anything that alters pixels or labels requires bumping
``GEN_VERSION``.

Modules: ``scene`` (factors, labels, sampling), ``draw`` (rendering), ``cache`` (parts rendered once
into a folder), ``coco`` (the det splits' annotation files), ``dataset`` (``FactorShapesDataset``).
"""

from core.data.factorshapes.cache import cache_dir, ensure_split
from core.data.factorshapes.coco import coco_dict, coco_files, coco_keys
from core.data.factorshapes.dataset import FactorShapesDataset
from core.data.factorshapes.draw import (
    background,
    draw_object,
    object_polygon,
    render_sample,
    render_scene,
    texture_field,
)
from core.data.factorshapes.scene import (
    ANGLE_JITTER,
    BG_POOL_SEED,
    CANONICAL,
    CATEGORY_NAMES,
    COCO_FACTORS,
    DEFAULT_COUNTS,
    DEFAULT_IMAGE_SIZE,
    DET_LABELS,
    DET_SPLITS,
    FACTOR_TASKS,
    FACTORS,
    GEN_VERSION,
    HUE_JITTER,
    LABELS_BY_SPLIT,
    LIGHT_GAIN,
    MAX_OBJECTS,
    MIN_IMAGE_SIZE,
    OBJECT_FACTORS,
    PARTS,
    SHAPE_NAMES,
    SHAPES,
    SIZE_FRACTIONS,
    SIZE_JITTER,
    SPLITS,
    SUPERSAMPLE,
    TEXTURE_AMPLITUDE,
    TEXTURE_MEAN,
    ObjectSpec,
    Scene,
    sample_labels,
    sample_rng,
    sample_scene,
)

__all__ = [
    "ANGLE_JITTER",
    "BG_POOL_SEED",
    "CANONICAL",
    "CATEGORY_NAMES",
    "COCO_FACTORS",
    "DEFAULT_COUNTS",
    "DEFAULT_IMAGE_SIZE",
    "DET_LABELS",
    "DET_SPLITS",
    "FACTORS",
    "FACTOR_TASKS",
    "FactorShapesDataset",
    "GEN_VERSION",
    "HUE_JITTER",
    "LABELS_BY_SPLIT",
    "LIGHT_GAIN",
    "MAX_OBJECTS",
    "MIN_IMAGE_SIZE",
    "OBJECT_FACTORS",
    "ObjectSpec",
    "PARTS",
    "SHAPES",
    "SHAPE_NAMES",
    "SIZE_FRACTIONS",
    "SIZE_JITTER",
    "SPLITS",
    "SUPERSAMPLE",
    "Scene",
    "TEXTURE_AMPLITUDE",
    "TEXTURE_MEAN",
    "background",
    "cache_dir",
    "coco_dict",
    "coco_files",
    "coco_keys",
    "draw_object",
    "ensure_split",
    "object_polygon",
    "render_sample",
    "render_scene",
    "sample_labels",
    "sample_rng",
    "sample_scene",
    "texture_field",
]
