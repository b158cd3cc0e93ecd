"""Loss parity: VICReg against an independent transcription of the official formula, MAST against a
per-sample, per-op loop of method.md, and the reduction identity MAST(K=1, mask 1, no uncertainty)
== VICReg."""

import pytest
import torch

from core.model import random_assignment, random_partition
from pretrain.losses.mast import MASTLoss, effective_sample_size, tempering
from pretrain.losses.mast_and import MASTAndLoss
from pretrain.losses.vicreg import VICRegLoss


def reference_vicreg(x, y, sim=25.0, std=25.0, cov=1.0):
    """VICReg as the official main_vicreg.py computes it, written independently (torch.cov,
    masks)."""
    repr_loss = ((x - y) ** 2).mean()
    d = x.shape[1]
    off = ~torch.eye(d, dtype=torch.bool)
    std_loss = sum(
        torch.relu(1 - torch.sqrt(t.var(dim=0, unbiased=True) + 1e-4)).mean() / 2 for t in (x, y)
    )
    cov_loss = sum(torch.cov(t.T)[off].pow(2).sum() / d for t in (x, y))
    return sim * repr_loss + std * std_loss + cov * cov_loss


def reference_mast(
    z,
    pairs,
    gates,
    theta,
    log_var,
    lam=25.0,
    mu=25.0,
    nu=1.0,
    beta=1.0,
    rho=0.5,
    unc=True,
    norm="none",
):
    """method.md written as loops over samples i and ops k. norm="batch": log s centred per op over
    i; norm="detach": errors weighted by detached 1/s normalised to mean 1 over i, plus the head's
    likelihood of the detached errors."""
    views, batch, d = z.shape
    k_ops = theta.shape[0]
    m = torch.sigmoid(theta)
    lv = log_var.clamp(-6, 6)
    log_s = [
        [
            torch.log((torch.exp(lv[pairs[k][0], i, k]) + torch.exp(lv[pairs[k][1], i, k])) / 2)
            for k in range(k_ops)
        ]
        for i in range(batch)
    ]
    if norm == "batch":
        centre = [sum(log_s[i][k] for i in range(batch)) / batch for k in range(k_ops)]
        log_s = [[log_s[i][k] - centre[k] for k in range(k_ops)] for i in range(batch)]
    mean_inv_s = [
        sum(torch.exp(-log_s[i][k]).item() for i in range(batch)) / batch for k in range(k_ops)
    ]
    per_sample = []
    for i in range(batch):
        num, den = 0.0, 0.0
        for k in range(k_ops):
            a, b = pairs[k]
            e = (z[a, i] - z[b, i]) ** 2
            l_ik = (m[k] * e).sum() / m[k].sum()
            if unc and norm == "detach":
                # a plain number: no gradient
                weight = torch.exp(-log_s[i][k]).item() / mean_inv_s[k]
                l_ik = weight * l_ik + (l_ik.item() / torch.exp(log_s[i][k]) + log_s[i][k])
            elif unc:
                l_ik = l_ik / torch.exp(log_s[i][k]) + log_s[i][k]
            num = num + gates[i, k] * l_ik
            den = den + gates[i, k]
        per_sample.append(num / max(1.0, float(den)))
    inv = torch.stack(per_sample).mean()
    off = ~torch.eye(d, dtype=torch.bool)
    var = torch.stack(
        [torch.relu(1 - torch.sqrt(z[v].var(0) + 1e-4)).mean() for v in range(views)]
    ).mean()
    cov = sum(torch.cov(z[v].T)[off].pow(2).sum() / d for v in range(views)) * 2 / views
    dens = sum((m[k].mean() - rho) ** 2 for k in range(k_ops))
    return lam * inv + mu * var + nu * cov + beta * dens


def test_vicreg_matches_official_formula():
    torch.manual_seed(0)
    x = torch.randn(32, 16, dtype=torch.float64, requires_grad=True)
    y = (x.detach() * 0.5 + 0.3 * torch.randn(32, 16, dtype=torch.float64)).requires_grad_(True)
    total, terms = VICRegLoss()(x, y)
    expected = reference_vicreg(x, y)
    assert total.item() == pytest.approx(expected.item(), rel=1e-10)
    assert set(terms) == {"inv", "var", "cov"}
    assert total.item() == pytest.approx(
        (25 * terms["inv"] + 25 * terms["var"] + terms["cov"]).item(), rel=1e-10
    )
    gx, gy = torch.autograd.grad(total, (x, y))
    rx, ry = torch.autograd.grad(expected, (x, y))
    assert torch.allclose(gx, rx, atol=1e-12) and torch.allclose(gy, ry, atol=1e-12)


@pytest.mark.parametrize("n, d", [(6, 40), (40, 40), (41, 40)])
def test_covariance_term_matches_torch_cov_on_both_sides_of_n_equals_d(n, d):
    """Fewer samples than dimensions takes the Gram-matrix path; value and gradient must not
    change."""
    from pretrain.losses.terms import covariance_term

    z = torch.randn(
        n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(n)
    ).requires_grad_(True)
    off = ~torch.eye(d, dtype=torch.bool)
    expected = torch.cov(z.T)[off].pow(2).sum() / d
    value = covariance_term(z)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    (grad,), (ref,) = torch.autograd.grad(value, z), torch.autograd.grad(expected, z)
    assert torch.allclose(grad, ref, atol=1e-12)


def test_vicreg_variance_is_halved_per_branch():
    z = torch.zeros(8, 4)  # collapsed: std = sqrt(1e-4) = 0.01, hinge 0.99 in every dimension
    _, terms = VICRegLoss()(z, z)
    assert terms["var"].item() == pytest.approx(0.99)  # (0.99 + 0.99) / 2, not 1.98


def test_reduction_identity_value_and_gradient():
    torch.manual_seed(1)
    z = torch.randn(2, 24, 10, dtype=torch.float64, requires_grad=True)
    mast = MASTLoss(uncertainty=False)
    ones = torch.ones(1, 10, dtype=torch.float64)
    total, terms = mast(z, torch.tensor([[0, 1]]), torch.ones(24, 1, dtype=torch.float64), ones)
    expected, _ = VICRegLoss()(z[0], z[1])
    # The density term is a constant of the fixed mask (here (1 - 0.5)^2); VICReg has no such term.
    assert terms["density"].item() == pytest.approx(0.25)
    assert (total - terms["density"]).item() == pytest.approx(expected.item(), rel=1e-12)
    (g_mast,) = torch.autograd.grad(total, z)
    (g_vicreg,) = torch.autograd.grad(expected, z)
    assert torch.allclose(g_mast, g_vicreg, atol=1e-12)


def views_and_pairs(mode: str, k_ops: int, batch: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random embeddings [V, B, d] (float64, with grad) and the pairs of pair or factorized mode."""
    views = 2 if mode == "pair" else k_ops + 1
    pairs = (
        torch.tensor([[0, 1]] * k_ops)
        if mode == "pair"
        else torch.tensor([[0, k + 1] for k in range(k_ops)])
    )
    return torch.randn(views, batch, d, dtype=torch.float64, requires_grad=True), pairs


@pytest.mark.parametrize("mode", ["pair", "factorized"])
@pytest.mark.parametrize(
    "uncertainty, norm", [(True, "detach"), (True, "batch"), (True, "none"), (False, "detach")]
)
def test_mast_matches_loops(mode, uncertainty, norm):
    torch.manual_seed(2)
    k_ops, batch, d = 4, 12, 8
    z, pairs = views_and_pairs(mode, k_ops, batch, d)
    views = z.shape[0]
    gates = (torch.rand(batch, k_ops) > 0.4).double()
    gates[0] = 0  # a sample no op was resampled for: contributes zero, divided by max(1, 0)
    # some clamp
    log_var = (torch.randn(views, batch, k_ops, dtype=torch.float64) * 4).requires_grad_(True)
    theta = torch.randn(k_ops, d, dtype=torch.float64, requires_grad=True)
    loss = MASTLoss(beta=0.7, uncertainty=uncertainty, uncertainty_norm=norm)
    total, terms = loss(z, pairs, gates, torch.sigmoid(theta), log_var if uncertainty else None)
    expected = reference_mast(
        z, pairs.tolist(), gates, theta, log_var, beta=0.7, unc=uncertainty, norm=norm
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-10)
    parts = (
        25 * (terms["inv"] + terms.get("unc_fit", 0))
        + 25 * terms["var"]
        + terms["cov"]
        + 0.7 * terms["density"]
    )
    assert total.item() == pytest.approx(parts.item(), rel=1e-10)
    assert ("unc_fit" in terms) == (uncertainty and norm == "detach")
    inputs = (z, theta, log_var) if uncertainty else (z, theta)
    got = torch.autograd.grad(total, inputs)
    want = torch.autograd.grad(expected, inputs)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-10)
    assert got[1].abs().sum() > 0  # the masks get gradients
    if uncertainty:
        assert got[2].abs().sum() > 0 and terms["s_mean"].shape == (k_ops,)
    assert terms["mask_density"].shape == (k_ops,) and terms["gate_rate"][0] <= 1


def test_factorized_gradients_are_the_same_every_time():
    """The anchor view is compared K times: its gradient must be summed in a fixed order (indexing
    z with a repeated view sums it by atomic adds on the CPU, which varied from call to call at
    this size), so that a seed gives one run."""
    torch.manual_seed(3)
    k_ops, batch, d = 6, 128, 512
    z, pairs = views_and_pairs("factorized", k_ops, batch, d)
    z = z.detach().float().requires_grad_(True)
    gates = (torch.rand(batch, k_ops) > 0.3).float()
    masks = torch.sigmoid(torch.randn(k_ops, d))
    log_var = torch.randn(k_ops + 1, batch, k_ops)
    grads = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs on one thread, where the adds happen in order
    try:
        for _ in range(5):
            total, _ = MASTLoss()(z, pairs, gates, masks, log_var)
            grads.append(torch.autograd.grad(total, z)[0])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_fixed_partition_masks():
    masks = random_partition(6, 64, torch.Generator().manual_seed(0))
    assert masks.shape == (6, 64) and torch.equal(masks.sum(0), torch.ones(64))
    assert set(masks.sum(1).tolist()) <= {10.0, 11.0}


def test_shape_errors_are_explained():
    loss = MASTLoss()
    with pytest.raises(ValueError, match="disagree on K or d"):
        loss(torch.randn(2, 4, 8), torch.tensor([[0, 1]] * 2), torch.ones(4, 2), torch.ones(3, 8))
    with pytest.raises(ValueError, match="uncertainty_norm must be one of detach, batch, none"):
        MASTLoss(uncertainty_norm="global")
    with pytest.raises(ValueError, match="mask_objective must be one of invariance, contrast"):
        MASTLoss(mask_objective="contrastive")
    with pytest.raises(ValueError, match="needs log_var"):
        loss(torch.randn(2, 4, 8), torch.tensor([[0, 1]] * 3), torch.ones(4, 3), torch.ones(3, 8))


@pytest.mark.parametrize("norm", ["batch", "detach"])
def test_normalised_uncertainty_cannot_inflate_the_invariance_weight(norm):
    """Lowering every log sigma^2 by the same amount leaves the embedding's gradient unchanged under
    the normalised modes, while the raw formula rewards it (the runaway seen on the embedded
    config)."""
    torch.manual_seed(3)
    z = torch.randn(2, 16, 8, dtype=torch.float64) * 0.1
    log_var = torch.randn(2, 16, 2, dtype=torch.float64)
    args = (
        z,
        torch.tensor([[0, 1]] * 2),
        torch.ones(16, 2, dtype=torch.float64),
        torch.full((2, 8), 0.5, dtype=torch.float64),
    )
    normalised, raw = MASTLoss(uncertainty_norm=norm), MASTLoss(uncertainty_norm="none")

    def grad_z(loss, lv):
        zz = args[0].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(zz, *args[1:], lv)[0], zz)
        return g

    assert torch.allclose(grad_z(normalised, log_var), grad_z(normalised, log_var - 3), atol=1e-10)
    assert grad_z(raw, log_var - 3).abs().sum() > 10 * grad_z(raw, log_var).abs().sum()
    assert raw(*args, log_var - 3)[0].item() < raw(*args, log_var)[0].item() - 10


def reference_excess(z, pairs, gates, theta):
    """L_mask of the contrast objective as loops: per op, the mean subspace error over samples whose
    pair differs in it minus the mean over the others (0 when either group is empty)."""
    m = torch.sigmoid(theta)
    total = 0.0
    for k in range(theta.shape[0]):
        a, b = pairs[k]
        errors = [(m[k] * (z[a, i] - z[b, i]) ** 2).sum() / m[k].sum() for i in range(z.shape[1])]
        differ = [e for e, g in zip(errors, gates[:, k]) if g > 0]
        same = [e for e, g in zip(errors, gates[:, k]) if g == 0]
        if differ and same:
            total = total + sum(differ) / len(differ) - sum(same) / len(same)
    return total


@pytest.mark.parametrize("mode", ["pair", "factorized"])
def test_contrast_mask_objective_matches_loops(mode):
    """Value: the invariance objective's total plus lam L_mask. Gradients: the embedding sees L_inv
    with the masks held fixed; the masks see only L_mask and the density term."""
    torch.manual_seed(4)
    k_ops, batch, d = 3, 10, 6
    z, pairs = views_and_pairs(mode, k_ops, batch, d)
    views = z.shape[0]
    gates = (torch.rand(batch, k_ops) > 0.5).double()
    gates[:, 2] = 1  # op 2 differs for every sample: no baseline, no mask term
    log_var = torch.randn(views, batch, k_ops, dtype=torch.float64, requires_grad=True)
    theta = torch.randn(k_ops, d, dtype=torch.float64, requires_grad=True)
    total, terms = MASTLoss(beta=0.7, mask_objective="contrast")(
        z, pairs, gates, torch.sigmoid(theta), log_var
    )
    plist = pairs.tolist()
    excess = reference_excess(z.detach(), plist, gates, theta)
    invariance_total = reference_mast(z, plist, gates, theta, log_var, beta=0.7, norm="detach")
    assert terms["mask_excess"].item() == pytest.approx(excess.item(), rel=1e-10)
    assert total.item() == pytest.approx(invariance_total.item() + 25 * excess.item(), rel=1e-10)

    got_z, got_theta, got_lv = torch.autograd.grad(total, (z, theta, log_var))
    fixed_masks = reference_mast(z, plist, gates, theta.detach(), log_var, beta=0.7, norm="detach")
    want_z, want_lv = torch.autograd.grad(fixed_masks, (z, log_var))
    dens = 0.7 * sum((torch.sigmoid(theta[k]).mean() - 0.5) ** 2 for k in range(k_ops))
    (want_theta,) = torch.autograd.grad(dens + 25 * excess, theta, retain_graph=True)
    assert torch.allclose(got_z, want_z, atol=1e-10) and torch.allclose(got_lv, want_lv, atol=1e-10)
    assert torch.allclose(got_theta, want_theta, atol=1e-10)
    # op 2 (no baseline) moves only by the density term
    (density_only,) = torch.autograd.grad(dens, theta)
    assert torch.allclose(got_theta[2], density_only[2], atol=1e-12)
    assert not torch.allclose(got_theta[0], density_only[0])


def test_contrast_objective_cancels_an_error_shared_by_every_pair():
    """Every pair differs in a 'crop' that perturbs dimensions 0-3 as strongly as op 0 perturbs
    dimensions 4-5 of the pairs that differ in it. The invariance objective cannot tell the two
    apart (it pushes op 0's mask off 0-5 alike); the contrast objective pushes it off op 0's
    dimensions and onto the untouched ones (6-7), while the crop's error, shared by both groups of
    pairs, cancels up to sampling noise."""
    torch.manual_seed(5)
    batch, d = 4096, 8
    gates = torch.zeros(batch, 1, dtype=torch.float64)
    gates[: batch // 2] = 1
    x = torch.randn(batch, d, dtype=torch.float64)
    y = x.clone()
    y[:, :4] += 2 * torch.randn(batch, 4, dtype=torch.float64)  # crop: every pair
    # op 0: half of the pairs
    y[: batch // 2, 4:6] += 2 * torch.randn(batch // 2, 2, dtype=torch.float64)
    z, pairs = torch.stack([x, y]), torch.tensor([[0, 1]])

    def mask_gradient(objective: str, term: str) -> torch.Tensor:
        theta = torch.zeros(1, d, dtype=torch.float64, requires_grad=True)
        loss = MASTLoss(beta=0.0, uncertainty=False, mask_objective=objective)
        _, terms = loss(z, pairs, gates, torch.sigmoid(theta))
        return torch.autograd.grad(terms[term], theta)[0][0]

    invariance = mask_gradient("invariance", "inv")
    assert invariance[:6].min() > 0.5 * invariance[:6].max() and invariance[6:].max() < 0
    contrast = mask_gradient("contrast", "mask_excess")
    assert contrast[4:6].min() > 0 > contrast[6:].max()
    assert contrast[:4].abs().max() < contrast[4:6].abs().min() / 2


# ------------------------------------------------------------------------------------------ AND
# combination
def reference_and(z, gates, logits, owned, lam=25.0, mu=25.0, nu=1.0, margin=0.1):
    """The AND loss as loops over samples i and dimensions j (mast_and.py's formula), written
    apart."""
    batch, d = z.shape[1], z.shape[2]
    a = torch.softmax(logits, 0)
    inv = 0.0
    for i in range(batch):
        for j in range(d):
            excused = sum(gates[i, k] * a[1 + n, j].detach() for n, k in enumerate(owned))
            inv = inv + (1 - excused) * (z[0, i, j] - z[1, i, j]) ** 2
    inv = inv / (batch * d)
    off = ~torch.eye(d, dtype=torch.bool)
    var = sum(torch.relu(1 - torch.sqrt(z[v].var(0) + 1e-4)).mean() for v in range(2)) / 2
    cov = sum(torch.cov(z[v].T)[off].pow(2).sum() / d for v in range(2))
    e = ((z[0] - z[1]) ** 2).detach()
    score = 0.0
    for n, k in enumerate(owned):
        g = gates[:, k]
        for j in range(d):
            c = torch.corrcoef(torch.stack([g, e[:, j]]))[0, 1]
            score = score + a[1 + n, j] * (c - margin)
    cap = 1 / (len(owned) + 1)
    over = sum(torch.relu(a[1 + n].mean() - cap) for n in range(len(owned)))
    return lam * inv + mu * var + nu * cov - score / d + over


def and_inputs(batch=12, d=6, k_ops=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, batch, d, generator=g, dtype=torch.float64, requires_grad=True)
    gates = (torch.rand(batch, k_ops, generator=g) > 0.5).double()
    gates[:, 0] = 1.0  # crop: every pair differs in it
    gates[0, 1:], gates[1, 1:] = 0.0, 1.0  # every op has both kinds of pairs
    # shared + 3 ops
    logits = torch.randn(k_ops, d, generator=g, dtype=torch.float64, requires_grad=True)
    return z, torch.tensor([[0, 1]] * k_ops), gates, logits


def test_and_loss_matches_loop_value_and_gradients():
    z, pairs, gates, logits = and_inputs()
    owned = [1, 2, 3]
    total, terms = MASTAndLoss(owned)(z, pairs, gates, torch.softmax(logits, 0))
    expected = reference_and(z, gates, logits, owned)
    assert total.item() == pytest.approx(expected.item(), rel=1e-10)
    got = torch.autograd.grad(total, (z, logits))
    want = torch.autograd.grad(expected, (z, logits))
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-10)
    assert 0 < terms["excused"].item() < 1


def test_and_loss_with_every_dimension_shared_is_vicreg():
    z, pairs, gates, _ = and_inputs(batch=16, d=8)
    shared = torch.zeros(4, 8, dtype=torch.float64)
    shared[0] = 1.0  # fixed: no assignment objective
    total, terms = MASTAndLoss([1, 2, 3])(z, pairs, gates, shared)
    vicreg, _ = VICRegLoss()(z[0], z[1])
    assert (
        total.item() == pytest.approx(vicreg.item(), rel=1e-12) and terms["excused"].item() == 0.0
    )
    assert torch.allclose(
        torch.autograd.grad(total, z)[0], torch.autograd.grad(vicreg, z)[0], atol=1e-12
    )
    assert "assign" not in terms


def test_and_pair_is_excused_only_on_the_dimensions_of_the_ops_it_differs_in():
    z = torch.zeros(2, 2, 3, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        z[1] += 1.0  # error 1 on every dimension
    # shared, op1, op2
    assignment = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float64)
    gates = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    loss = MASTAndLoss([1, 2], lam=1.0, mu=0.0, nu=0.0)
    total, _ = loss(z, torch.tensor([[0, 1]] * 3), gates, assignment)
    # pair 0 differs in op 1: dims 0 and 2 count; pair 1 in both: dim 0 only. (2 + 1) / (2 x 3)
    assert total.item() == pytest.approx(0.5)


def test_and_assignment_moves_to_the_op_that_explains_the_error():
    """Synthetic pairs: crop's shared error on every dimension, op 1's only on dimensions 0-3, op
    2's on 4-5; descending the assignment objective alone gives 0-3 to op 1, 4-5 to op 2, the rest
    to shared."""
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(3, 10, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    loss = MASTAndLoss([1, 2])
    for _ in range(300):
        gates = torch.ones(64, 3)
        gates[:, 1:] = (torch.rand(64, 2, generator=g) > 0.5).float()
        base = torch.randn(64, 10, generator=g) * 0.5
        shift = torch.zeros(64, 10)
        shift[:, :4] += gates[:, 1:2] * 2 * torch.randn(64, 4, generator=g).abs()
        shift[:, 4:6] += gates[:, 2:3] * 2 * torch.randn(64, 2, generator=g).abs()
        z = torch.stack([base, base + shift + 0.3 * torch.randn(64, 10, generator=g)])
        _, terms = loss(z, torch.tensor([[0, 1]] * 3), gates, torch.softmax(logits, 0))
        optimizer.zero_grad()
        terms["assign"].backward()
        optimizer.step()
    owner = torch.softmax(logits, 0).argmax(0).tolist()
    assert owner == [1, 1, 1, 1, 2, 2, 0, 0, 0, 0]


def test_random_assignment_is_one_hot_in_equal_shares():
    a = random_assignment(5, 60, torch.Generator().manual_seed(0))
    assert (
        a.shape == (6, 60)
        and torch.equal(a.sum(0), torch.ones(60))
        and a.sum(1).tolist() == [10.0] * 6
    )


def test_and_loss_refuses_factorized_pairs():
    z, _, gates, logits = and_inputs()
    factorized = torch.tensor([[0, 1], [0, 2], [0, 3], [0, 4]])
    with pytest.raises(ValueError, match="views.mode=pair"):
        MASTAndLoss([1, 2, 3])(torch.cat([z, z]), factorized, gates, torch.softmax(logits, 0))


# ------------------------------------------------------------------------------------ tempered 1/s
# weights
def test_tempering_keeps_the_effective_sample_size():
    log_w = torch.randn(128, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    log_w[:, 3] = 0.01 * log_w[:, 3]  # nearly equal weights: no tempering needed
    power = tempering(log_w, 0.8)
    ess = effective_sample_size(log_w * power)
    assert (ess[:3] - 0.8).abs().max() < 1e-6 and (power[:3] < 1).all()
    assert power[3] == 1.0 and ess[3] > 0.99
    assert torch.equal(tempering(log_w, 0.0), torch.ones(4, dtype=torch.float64))
    assert effective_sample_size(torch.zeros(10, 1)).item() == pytest.approx(1.0)


def test_min_ess_tempers_the_embedding_weights_only():
    torch.manual_seed(0)
    z = torch.randn(2, 32, 8, dtype=torch.float64, requires_grad=True)
    pairs, gates = torch.tensor([[0, 1]] * 2), torch.ones(32, 2, dtype=torch.float64)
    masks = torch.full((2, 8), 0.5, dtype=torch.float64)
    log_var = torch.randn(2, 32, 2, dtype=torch.float64) * 3
    _, plain = MASTLoss()(z, pairs, gates, masks, log_var)
    _, tempered = MASTLoss(min_ess=0.9)(z, pairs, gates, masks, log_var)
    assert (plain["ess"] < 0.9).all() and (tempered["ess"] >= 0.9 - 1e-6).all()
    assert plain["temper"].tolist() == [1.0, 1.0] and (tempered["temper"] < 1).all()
    # the head's fit is untouched
    assert tempered["unc_fit"].item() == pytest.approx(plain["unc_fit"].item())
    with pytest.raises(ValueError, match="min_ess"):
        MASTLoss(min_ess=1.5)
