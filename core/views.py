"""Which views a batch holds, how they differ, and how strongly (method.md, "Views").

``pair`` mode: view 1 samples every op; view 2 samples ``base`` ops (crop) afresh and, for the other
ops, follows ``resample``: ``one`` (exactly one other op, uniform per sample), ``bernoulli`` (each
with ``resample_p``) or ``all`` (VICReg's pair). ``factorized`` mode: an anchor plus one view per op
in which only that op is resampled. The difference strength d_ik in [0, 1] of every op between the
two views a subspace compares is computed from the recorded parameters alone, so analysis can
recompute it. ``looc`` mode (LooC's views, Xiao et al. 2021): a query that samples every op, a key
with every op resampled, and one key per non-base op that keeps the query's parameters of that op
and resamples every other.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from core.augment import OPS, PARAM_SLICES, Augment, AugmentConfig, with_ops_from


@dataclasses.dataclass
class ViewsConfig:
    mode: Literal["pair", "factorized", "looc"] = "pair"
    #: Ops view 2 always samples afresh (pair mode).
    base: list[str] = dataclasses.field(default_factory=lambda: ["crop"])
    #: How view 2 treats the other ops: one (exactly one resampled), bernoulli, all (VICReg).
    resample: Literal["one", "bernoulli", "all"] = "one"
    #: Probability of resampling each non-base op under ``bernoulli``.
    resample_p: float = 0.5
    #: Where views are rendered: ``loader`` (the data loader's CPU workers) or ``device`` (the
    #: loader hands raw images and the recorded parameters; the training device renders the batch,
    #: so a GPU no longer waits for CPU workers). The same parameters give the same views: equal
    #: pixels on the CPU, within the tolerance of docs/reliability.md on CUDA.
    render: Literal["loader", "device"] = "loader"


class ViewMaker:
    """Samples, records and renders the views of one image."""

    def __init__(self, augment: AugmentConfig, views: ViewsConfig, out_size: int):
        unknown = [op for op in views.base if op not in OPS]
        if unknown:
            raise ValueError(f"views.base has unknown ops {unknown}; valid: {', '.join(OPS)}")
        if views.render not in ("loader", "device"):
            raise ValueError(f"views.render must be loader or device, got {views.render!r}")
        if views.resample not in ("one", "bernoulli", "all") or not 0 <= views.resample_p <= 1:
            raise ValueError(
                f"views.resample must be one, bernoulli or all and views.resample_p in [0, 1]; got "
                f"{views.resample!r}, {views.resample_p}"
            )
        self.augment, self.views = Augment(augment, out_size), views
        self.ops = [op for op in OPS if op in augment.ops]  # the K ops in use, in canonical order
        self.others = [op for op in self.ops if op not in views.base]

    @property
    def num_views(self) -> int:
        if self.views.mode == "looc":
            return len(self.others) + 2
        return 2 if self.views.mode == "pair" else len(self.ops) + 1

    def pairs(self) -> torch.Tensor:
        """[K, 2]: the two views subspace k compares (looc: the query and the key that resamples
        every op)."""
        if self.views.mode in ("pair", "looc"):
            return torch.tensor([[0, 1]] * len(self.ops))
        return torch.tensor([[0, k + 1] for k in range(len(self.ops))])

    def _resampled_ops(self, generator: torch.Generator) -> list[str]:
        policy = self.views.resample
        if policy == "all":
            return list(self.ops)
        if policy == "one":
            picked = (
                [self.others[int(torch.randint(len(self.others), (1,), generator=generator))]]
                if self.others
                else []
            )
        else:
            draws = torch.rand(len(self.others), generator=generator)
            picked = [op for op, u in zip(self.others, draws.tolist()) if u < self.views.resample_p]
        return [op for op in self.ops if op in self.views.base] + picked

    def sample(self, generator: torch.Generator, height: int, width: int) -> torch.Tensor:
        """Parameters [V, P] of every view of one image."""
        first = self.augment.sample(generator, 0, height, width)
        if self.views.mode == "pair":
            fresh = self.augment.sample(generator, 1, height, width)
            return torch.stack([first, with_ops_from(first, fresh, self._resampled_ops(generator))])
        if self.views.mode == "looc":
            rows = [first, self.augment.sample(generator, 1, height, width)]
            for op in self.others:
                fresh = self.augment.sample(generator, 1, height, width)
                rows.append(with_ops_from(fresh, first, [op]))
            return torch.stack(rows)
        rows = [first]
        for op in self.ops:
            fresh = self.augment.sample(generator, 1, height, width)
            rows.append(with_ops_from(first, fresh, [op]))
        return torch.stack(rows)

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [3, H, W] -> (views uint8 [V, 3, S, S], params float [V, P])."""
        views, params = self.batch([image], [generator])
        return views[0], params[0]

    def batch(
        self, images: list[torch.Tensor], generators: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of many images at once, ``generators[i]`` drawing image i's parameters:
        (views uint8 [B, V, 3, S, S], params float [B, V, P]); pixels equal those of one image at a
        time."""
        params = self.sample_batch(images, generators)
        return self.render(images, params), params

    def sample_batch(
        self, images: list[torch.Tensor], generators: list[torch.Generator]
    ) -> torch.Tensor:
        """Parameters [B, V, P] of every view of each image, ``generators[i]`` drawing image i's."""
        return self.sample_sizes(
            [(image.shape[-2], image.shape[-1]) for image in images], generators
        )

    def sample_sizes(
        self, sizes: list[tuple[int, int]], generators: list[torch.Generator]
    ) -> torch.Tensor:
        """``sample_batch`` from the images' (height, width) alone (images not decoded yet)."""
        return torch.stack([self.sample(g, h, w) for (h, w), g in zip(sizes, generators)])

    def render(
        self,
        images: list[torch.Tensor] | torch.Tensor,
        params: torch.Tensor,
        batched_crops: bool | None = None,
    ) -> torch.Tensor:
        """The views [B, V, 3, S, S] uint8 of ``images`` (uint8 [3, H, W] each, on any device) under
        ``params`` [B, V, P], rendered where the images are (``batched_crops``: as in
        ``core.augment.render_views``)."""
        count, views = params.shape[:2]
        if len(images) != count:
            raise ValueError(f"{len(images)} images but parameters for {count}")
        sources = [image for image in images for _ in range(views)]
        rendered = self.augment.render(sources, params.flatten(0, 1), batched_crops)
        return rendered.unflatten(0, (count, views))


def _field(params: torch.Tensor, op: str, index: int) -> torch.Tensor:
    return params[..., PARAM_SLICES[op]][..., index]


def _crop_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    top_a, left_a, h_a, w_a = a.unbind(-1)
    top_b, left_b, h_b, w_b = b.unbind(-1)
    inter_h = (torch.minimum(top_a + h_a, top_b + h_b) - torch.maximum(top_a, top_b)).clamp_min(0)
    inter_w = (torch.minimum(left_a + w_a, left_b + w_b) - torch.maximum(left_a, left_b)).clamp_min(
        0
    )
    inter = inter_h * inter_w
    return inter / (h_a * w_a + h_b * w_b - inter).clamp_min(1e-12)


def difference_strength(
    a: torch.Tensor, b: torch.Tensor, cfg: AugmentConfig, ops: list[str]
) -> torch.Tensor:
    """d_ik in [0, 1] for parameter rows ``a``, ``b`` [..., P] and each op of ``ops``: [..., K]."""
    columns = []
    for op in ops:
        pa, pb = a[..., PARAM_SLICES[op]], b[..., PARAM_SLICES[op]]
        if op == "crop":
            # equal boxes: exactly 0
            d = torch.where((pa == pb).all(-1), 0.0, 1 - _crop_iou(pa, pb))
        elif op == "color_jitter":
            # Factors 1..4 (brightness, contrast, saturation, hue), each over its full range 2 x
            # strength; a non-applied jitter records neutral factors, so it compares as "no change".
            ranges = torch.tensor(
                [2 * cfg.brightness, 2 * cfg.contrast, 2 * cfg.saturation, 2 * cfg.hue],
                dtype=a.dtype,
                device=a.device,
            )
            used = ranges > 0
            diffs = (pa[..., 1:5] - pb[..., 1:5]).abs()[..., used] / ranges[used]
            d = (
                diffs.mean(-1)
                if bool(used.any())
                else torch.zeros(a.shape[:-1], dtype=a.dtype, device=a.device)
            )
        elif op == "blur":
            d = (pa[..., 1] - pb[..., 1]).abs() / max(cfg.blur_sigma)
        else:  # flip, grayscale, solarize: applied or not
            d = (pa[..., 0] - pb[..., 0]).abs()
        columns.append(d.clamp(0, 1))
    return torch.stack(columns, dim=-1)


def pair_strengths(
    params: torch.Tensor, pairs: torch.Tensor, cfg: AugmentConfig, ops: list[str]
) -> torch.Tensor:
    """d_ik for the pair subspace k compares: ``params`` [B, V, P] -> [B, K]."""
    full = [
        difference_strength(params[:, a], params[:, b], cfg, [op])[..., 0]
        for op, (a, b) in zip(ops, pairs.tolist())
    ]
    return torch.stack(full, dim=-1)


def gates_from(strength: torch.Tensor, kind: Literal["binary", "strength"]) -> torch.Tensor:
    """w_ik: 1[d_ik > 0] (binary) or d_ik itself (strength)."""
    if kind not in ("binary", "strength"):
        raise ValueError(f"unknown gate '{kind}': use binary or strength")
    return (strength > 0).to(strength.dtype) if kind == "binary" else strength
