"""How the MAST loss's cost scales with the embedding size d and the number of ops K, against
VICReg's loss.

Forward and backward of the loss alone, on random embeddings of a batch of 128 (no network):
``vicreg`` (two views), ``mast_pair`` (two views, K masked subspaces) and ``mast_factorized`` (K + 1
views, subspace k compares the anchor with view k + 1). The masks come from learnable logits and the
log-variances are leaves that need gradients, as in training (uncertainty on, the default ``detach``
weighting). Sweeps: d from 512 to 8192 at K = 6 (the six ops), and K from 1 to 8 at d = 2048.
Variants of one sweep point are interleaved within every repeat; times are medians after one warm-up
call, ratios the median of per-repeat ratios.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.timing import Options, interleaved, paired_ratio, summary
from core import markdown as md
from pretrain.losses import MASTLoss, VICRegLoss

TITLE = "Loss cost: embedding size d and number of ops K"
D_VALUES = (512, 1024, 2048, 4096, 8192)
K_VALUES = (1, 2, 4, 6, 8)
K_AT_D = 6  # the d sweep uses the six ops
# the K sweep's embedding size: large enough to be realistic, small enough to sweep on a CPU
D_AT_K = 2048
BATCH = 128


def vicreg_call(d: int, batch: int, generator: torch.Generator) -> Callable[[], None]:
    z = torch.randn(2, batch, d, generator=generator).requires_grad_(True)
    loss = VICRegLoss()

    def call() -> None:
        z.grad = None
        total, _ = loss(z[0], z[1])
        total.backward()

    return call


def mast_call(
    d: int, k: int, batch: int, mode: str, generator: torch.Generator
) -> Callable[[], None]:
    views = 2 if mode == "pair" else k + 1
    pairs = torch.tensor([[0, 1]] * k if mode == "pair" else [[0, i + 1] for i in range(k)])
    z = torch.randn(views, batch, d, generator=generator).requires_grad_(True)
    logits = (torch.randn(k, d, generator=generator) * 0.01).requires_grad_(True)
    log_var = (torch.randn(views, batch, k, generator=generator) * 0.1).requires_grad_(True)
    gates = (torch.rand(batch, k, generator=generator) < 0.5).float()
    loss = MASTLoss()
    leaves = (z, logits, log_var)

    def call() -> None:
        for leaf in leaves:
            leaf.grad = None
        total, _ = loss(z, pairs, gates, torch.sigmoid(logits), log_var)
        total.backward()

    return call


def _ms(samples: list[float]) -> float:
    return summary(samples)["median_s"] * 1000


def d_sweep(d_values: tuple[int, ...], k: int, batch: int, repeats: int) -> list[dict[str, object]]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for d in d_values:
        calls = {
            "vicreg": vicreg_call(d, batch, generator),
            "mast_pair": mast_call(d, k, batch, "pair", generator),
            "mast_factorized": mast_call(d, k, batch, "factorized", generator),
        }
        samples = interleaved(calls, repeats)
        times = {name: _ms(values) for name, values in samples.items()}
        rows.append(
            {
                "d": d,
                "k": k,
                "ms": times,
                "vs_vicreg": {
                    name: paired_ratio(values, samples["vicreg"])
                    for name, values in samples.items()
                },
            }
        )
    return rows


def k_sweep(k_values: tuple[int, ...], d: int, batch: int, repeats: int) -> dict[str, object]:
    generator = torch.Generator().manual_seed(1)
    calls = {"vicreg": vicreg_call(d, batch, generator)}
    for k in k_values:
        calls[f"mast_pair/{k}"] = mast_call(d, k, batch, "pair", generator)
        calls[f"mast_factorized/{k}"] = mast_call(d, k, batch, "factorized", generator)
    samples = interleaved(calls, repeats)
    vicreg_ms = _ms(samples["vicreg"])
    rows = []
    for k in k_values:
        pair, factorized = _ms(samples[f"mast_pair/{k}"]), _ms(samples[f"mast_factorized/{k}"])
        rows.append(
            {
                "k": k,
                "d": d,
                "ms": {"mast_pair": pair, "mast_factorized": factorized},
                "vs_vicreg": {
                    mode: paired_ratio(samples[f"{mode}/{k}"], samples["vicreg"])
                    for mode in ("mast_pair", "mast_factorized")
                },
            }
        )
    return {"vicreg_ms": vicreg_ms, "rows": rows}


def run(opts: Options) -> dict[str, object]:
    if opts.quick:
        d_values, k_values, k_at_d, d_at_k, batch = (64, 128), (1, 2), 2, 64, 16
    else:
        d_values, k_values, k_at_d, d_at_k, batch = D_VALUES, K_VALUES, K_AT_D, D_AT_K, BATCH
    repeats = opts.reps(3)
    return {
        "batch_size": batch,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "by_d": d_sweep(d_values, k_at_d, batch, repeats),
        "by_k": k_sweep(k_values, d_at_k, batch, repeats),
    }


MAST_COLUMNS = ("mast pair (ms)", "mast factorized (ms)", "pair x vicreg", "factorized x vicreg")


def _mast_cells(row: dict[str, object]) -> list[str]:
    """A row's MAST milliseconds and their ratios to VICReg, as cells."""
    ms, ratio = row["ms"], row["vs_vicreg"]
    return [
        f"{ms['mast_pair']:.1f}",
        f"{ms['mast_factorized']:.1f}",
        f"{ratio['mast_pair']:.2f}",
        f"{ratio['mast_factorized']:.2f}",
    ]


def markdown(result: dict[str, object]) -> str:
    by_d = result["by_d"]
    lines = [
        f"Forward + backward of the loss on random embeddings, batch {result['batch_size']}, "
        f"median of {result['repeats']} repeats.",
        "",
        f"By embedding size d (K = {by_d[0]['k']}): milliseconds, and x vicreg at the same d",
        "",
    ]
    lines += md.table(
        ["d", "vicreg (ms)", *MAST_COLUMNS],
        [[str(row["d"]), f"{row['ms']['vicreg']:.1f}", *_mast_cells(row)] for row in by_d],
    )
    by_k = result["by_k"]
    lines += [
        "",
        f"By number of ops K (d = {by_k['rows'][0]['d']}; vicreg: {by_k['vicreg_ms']:.1f} ms)",
        "",
    ]
    lines += md.table(
        ["K", *MAST_COLUMNS], [[str(row["k"]), *_mast_cells(row)] for row in by_k["rows"]]
    )
    return "\n".join(lines)
