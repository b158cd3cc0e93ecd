"""Data pipeline throughput: views per second for one data-loader worker (one thread, in this
process).

Three pipelines make VICReg's two views of the same images with the same augmentation settings (the
embedded config's: crop scale 0.25-1, VICReg's jitter, grayscale, blur and solarize probabilities):

- ``recording``: ours, as pretraining runs it: ``ViewMaker.batch`` draws every view's parameters
  from a per-sample generator, records them and renders the batch (``core.augment.render_views``);
  its parameter drawing alone is timed too (``sampling_share``: that part of its time);
- ``v2``: the same ops from ``torchvision.transforms.v2`` on uint8 tensors, one image at a time,
  nothing recorded (Gaussian blur with the largest kernel ours would use);
- ``pil``: a PIL pipeline like the official VICReg code's: ``torchvision.transforms`` on PIL images,
  blur through ``PIL.ImageFilter``, solarize through ``PIL.ImageOps``, ``ToTensor`` last.

Images come from FactorShapes, in memory before timing (decoding is no pipeline's work here), at the
embedded 64 px and at 224 px. Pipelines are interleaved within every repeat; figures are medians.

Render parity: the views the loader renders (``views.render: loader``) against those the training
step renders on each device from the raw images and the same recorded parameters (``views.render:
device``), for the embedded pair views and MAST's factorized ones: absolute differences in grey
levels (mean, 99.9th percentile, largest) and the share of pixels that differ, on the CPU (where the
paths share every op), on the CPU with the crops batched as an accelerator batches them (matrix
products in float, against the CPU's uint8 resize), and on CUDA when there is one
(``core.augment.DEVICE_RENDER_TOLERANCE``).
"""

from __future__ import annotations

import random
import statistics

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as v1
from torchvision.transforms import v2

from bench.timing import ROOT, Options, interleaved, paired_ratio, summary
from core import markdown as md
from core.augment import DEVICE_RENDER_TOLERANCE, AugmentConfig, blur_kernel_size
from core.config import DataConfig, load_config
from core.data import build_dataset
from core.seeding import sample_generator
from core.views import ViewMaker
from pretrain.config import PretrainConfig
from pretrain.data import ViewDataset

TITLE = "Data pipeline (views/s per worker)"
CONFIG = "configs/pretrain/vicreg_r18w16_b128_16e_shapes.yaml"
#: The views the render parity check compares: the embedded pair views, MAST's factorized ones.
PARITY_CONFIGS = {
    "pair": CONFIG,
    "factorized": "configs/pretrain/mast_factorized_r18w16_b128_16e_shapes.yaml",
}
RECORDING_TARGET = (
    0.10  # acceptance: recording costs at most 10 % of the views/s of the same ops without it
)


class PILBlur:
    """Gaussian blur with probability ``p`` and sigma ~ U(sigma), through PIL (VICReg's official
    choice)."""

    def __init__(self, p: float, sigma: tuple[float, float]):
        self.p, self.sigma = p, sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class PILSolarize:
    """PIL's solarize (pixels >= 128 inverted) with probability ``p``."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        return ImageOps.solarize(image) if random.random() < self.p else image


def pil_pipelines(cfg: AugmentConfig, size: int) -> list[v1.Compose]:
    """View 1 and view 2 of the official VICReg code's transform, with ``cfg``'s strengths."""
    return [
        v1.Compose(
            [
                v1.RandomResizedCrop(
                    size,
                    scale=tuple(cfg.crop_scale),
                    ratio=tuple(cfg.crop_ratio),
                    interpolation=v1.InterpolationMode.BICUBIC,
                ),
                v1.RandomHorizontalFlip(cfg.flip_p),
                v1.RandomApply(
                    [v1.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
                    p=cfg.jitter_p,
                ),
                v1.RandomGrayscale(cfg.grayscale_p),
                PILBlur(cfg.blur_p[view], tuple(cfg.blur_sigma)),
                PILSolarize(cfg.solarize_p[view]),
                v1.ToTensor(),
            ]
        )
        for view in (0, 1)
    ]


def v2_pipelines(cfg: AugmentConfig, size: int) -> list[v2.Compose]:
    """The same views with ``torchvision.transforms.v2`` on uint8 tensors, parameters not
    recorded."""
    kernel = blur_kernel_size(cfg.blur_sigma[1], size, size)
    return [
        v2.Compose(
            [
                v2.RandomResizedCrop(
                    size,
                    scale=tuple(cfg.crop_scale),
                    ratio=tuple(cfg.crop_ratio),
                    interpolation=v2.InterpolationMode.BICUBIC,
                    antialias=True,
                ),
                v2.RandomHorizontalFlip(cfg.flip_p),
                v2.RandomApply(
                    [v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
                    p=cfg.jitter_p,
                ),
                v2.RandomGrayscale(cfg.grayscale_p),
                v2.RandomApply(
                    [v2.GaussianBlur(kernel, sigma=tuple(cfg.blur_sigma))], p=cfg.blur_p[view]
                ),
                v2.RandomSolarize(threshold=128, p=cfg.solarize_p[view]),
            ]
        )
        for view in (0, 1)
    ]


def pretrain_images(size: int, data_root: str | None, n: int | None):
    """The FactorShapes pretrain part (``n`` images, null: all) at ``size`` px."""
    data = DataConfig(
        dataset="factorshapes", root=data_root, split="pretrain", image_size=size, n=n
    )
    return build_dataset(data, progress=False)


def load_images(size: int, count: int, data_root: str | None, n: int | None) -> list[torch.Tensor]:
    """The first ``count`` of ``n`` FactorShapes pretrain images at ``size`` px, uint8 [3, S, S]
    tensors."""
    dataset = pretrain_images(size, data_root, n)
    return [dataset[i][0] for i in range(count)]


def pipeline_calls(images: list[torch.Tensor], cfg: PretrainConfig, size: int) -> dict[str, object]:
    """One call per pipeline: two views of every image."""
    maker = ViewMaker(cfg.augment, cfg.views, size)
    v2_views, pil_views = v2_pipelines(cfg.augment, size), pil_pipelines(cfg.augment, size)
    pil_images = [
        Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())) for image in images
    ]
    epoch = [0]

    def generators() -> list[torch.Generator]:
        epoch[0] += 1  # fresh parameters every call, as every epoch draws
        return [sample_generator(cfg.seed, epoch[0], i) for i in range(len(images))]

    def recording() -> None:
        maker.batch(images, generators())

    # the part of ``recording`` that draws and records parameters, no pixels
    def sampling() -> None:
        for image, generator in zip(images, generators()):
            maker.sample(generator, image.shape[-2], image.shape[-1])

    def plain_v2() -> None:
        torch.stack([torch.stack([view(image) for view in v2_views]) for image in images])

    def pil() -> None:
        torch.stack([torch.stack([view(image) for view in pil_views]) for image in pil_images])

    return {"recording": recording, "v2": plain_v2, "pil": pil, "sampling": sampling}


def measure(
    size: int, count: int, cfg: PretrainConfig, repeats: int, data_root: str | None, n: int | None
) -> dict[str, object]:
    images = load_images(size, count, data_root, n)
    samples = interleaved(pipeline_calls(images, cfg, size), repeats)
    share = statistics.median(samples.pop("sampling")) / statistics.median(samples["recording"])
    views = 2 * count
    rows = {
        name: {"views_per_s": views / summary(values)["median_s"], **summary(values, per=views)}
        for name, values in samples.items()
    }
    # throughput ratios = inverse time ratios, each the median over repeats of one repeat's ratio
    return {
        "size": size,
        "images": count,
        "pipelines": rows,
        "recording_cost": 1 - paired_ratio(samples["v2"], samples["recording"]),
        "recording_vs_pil": paired_ratio(samples["pil"], samples["recording"]),
        "sampling_share": share,
    }


def render_parity(
    config: str, size: int, count: int, data_root: str | None, n: int | None
) -> list[dict[str, object]]:
    """Views of ``count`` images rendered by the loader against the device path, per device."""
    cfg = load_config(PretrainConfig, ROOT / config, [])
    images = pretrain_images(size, data_root, n)
    maker = ViewMaker(cfg.augment, cfg.views, size)
    keys = list(range(count))
    loader, params = ViewDataset(images, maker, cfg.seed).__getitems__(keys)
    raw, raw_params = ViewDataset(images, maker, cfg.seed, render=False).__getitems__(keys)
    if not torch.equal(params, raw_params):
        raise RuntimeError("the two loader paths drew different view parameters")
    # (device, crops batched as an accelerator batches them: None picks by device)
    paths = [("cpu", None), ("cpu", True)] + ([("cuda", None)] if torch.cuda.is_available() else [])
    rows = []
    for device, batched in paths:
        rendered = maker.render(raw.to(device), params, batched_crops=batched).cpu()
        diff = (loader.int() - rendered.int()).abs().float().flatten()
        mean = float(diff.mean())
        q999 = float(torch.quantile(diff[:: max(1, diff.numel() // 2_000_000)], 0.999))
        limit = DEVICE_RENDER_TOLERANCE
        rows.append(
            {
                "device": f"{device}, batched crops" if batched else device,
                "views": int(params.shape[0] * params.shape[1]),
                "size": size,
                "mean_abs": mean,
                "q999_abs": q999,
                "max_abs": float(diff.max()),
                "differing_share": float((diff > 0).float().mean()),
                "within_tolerance": mean <= limit["mean"] and q999 <= limit["q999"],
            }
        )
    return rows


def run(opts: Options) -> dict[str, object]:
    cfg = load_config(PretrainConfig, ROOT / CONFIG, [])
    # size -> (images per call, images in the cache part read); 64 px full: the part pretraining
    # made
    sizes = {64: (8, 16), 224: (4, 16)} if opts.quick else {64: (256, None), 224: (48, 64)}
    repeats = opts.reps(5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a data-loader worker runs one thread
    random.seed(0)
    torch.manual_seed(0)
    try:
        by_size = [
            measure(size, count, cfg, repeats, opts.data_root, n)
            for size, (count, n) in sizes.items()
        ]
    finally:
        torch.set_num_threads(threads)
    count = 16 if opts.quick else 128
    parity = {
        views: render_parity(config, 64, count, opts.data_root, 16 if opts.quick else None)
        for views, config in PARITY_CONFIGS.items()
    }
    return {
        "repeats": repeats,
        "threads": 1,
        "recording_target": RECORDING_TARGET,
        "by_size": by_size,
        "render_parity": parity,
        "render_tolerance": DEVICE_RENDER_TOLERANCE,
    }


def markdown(result: dict[str, object]) -> str:
    lines = [
        f"Two views of each image, one thread, median of {result['repeats']} repeats (ratios: "
        "median of the per-repeat ratios). Recording cost = 1 - (our views/s) / (v2's views/s), "
        f"the same ops without recording (target <= {result['recording_target']:.0%}; negative: "
        "ours is faster although it records); ours vs PIL: our views/s over the PIL pipeline's "
        "(target >= 1).",
        "",
        "Parameter share: the part of our pipeline's time spent drawing and recording the "
        "parameters (the per-sample generators included); an upper bound of recording's own cost, "
        "since every pipeline draws its parameters.",
        "",
    ]
    header = [
        "view size",
        "images",
        "recording (views/s)",
        "v2, not recorded (views/s)",
        "PIL, VICReg's (views/s)",
        "recording cost",
        "ours vs PIL",
        "parameter share",
    ]
    rows = [
        [
            f"{row['size']} px",
            str(row["images"]),
            f"{row['pipelines']['recording']['views_per_s']:.0f}",
            f"{row['pipelines']['v2']['views_per_s']:.0f}",
            f"{row['pipelines']['pil']['views_per_s']:.0f}",
            f"{row['recording_cost']:.1%}",
            f"{row['recording_vs_pil']:.2f}",
            f"{row['sampling_share']:.1%}",
        ]
        for row in result["by_size"]
    ]
    return "\n".join([*lines, *md.table(header, rows), *_parity_lines(result)])


def _parity_lines(result: dict[str, object]) -> list[str]:
    parity = result.get("render_parity")
    if not parity:
        return []
    limit = result["render_tolerance"]
    lines = [
        "",
        "Render parity: views rendered by the loader against the same recorded parameters rendered "
        "by the training step on each device (`views.render: device`), in grey levels; tolerance "
        f"on an accelerator: mean <= {limit['mean']}, 99.9th percentile <= {limit['q999']:.0f} "
        '(`core.augment.DEVICE_RENDER_TOLERANCE`). "cpu, batched crops": the CPU renders the '
        "crops as an accelerator does (batched matrix products in float). No CUDA device: the CPU "
        "rows alone.",
        "",
    ]
    header = ["views", "device", "views compared", "mean", "99.9th pct", "max", "differing", "ok"]
    rows = [
        [
            kind,
            row["device"],
            f"{row['views']} x {row['size']} px",
            f"{row['mean_abs']:.3f}",
            f"{row['q999_abs']:.0f}",
            f"{row['max_abs']:.0f}",
            f"{row['differing_share']:.2%}",
            "yes" if row["within_tolerance"] else "**no**",
        ]
        for kind, rows_of in parity.items()
        for row in rows_of
    ]
    return [*lines, *md.table(header, rows)]
