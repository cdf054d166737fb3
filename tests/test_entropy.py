import math

import pytest
import torch

from lbe_hf import PI_E, TWO_PI_E, batch_entropy, lbe_loss, regularized_loss
from lbe_hf.entropy import _LayerVariances, layer_entropies


def test_gaussian_closed_form():
    torch.manual_seed(0)
    sigma = torch.tensor([0.1, 1.0, 3.0])
    x = torch.randn(200_000, 3) * sigma
    expected = (0.5 * torch.log(PI_E * sigma**2 + 1)).mean()
    assert batch_entropy(x).item() == pytest.approx(expected.item(), rel=2e-3)
    expected_paper = (0.5 * torch.log(TWO_PI_E * sigma**2 + 1)).mean()
    assert batch_entropy(x, TWO_PI_E).item() == pytest.approx(expected_paper.item(), rel=2e-3)


def test_constant_neurons_have_zero_entropy_and_finite_gradient():
    x = torch.ones(16, 4, 5, requires_grad=True)
    h = batch_entropy(x)
    assert h.item() == 0.0
    h.backward()
    assert torch.isfinite(x.grad).all()


def test_near_constant_gradient_pushes_entropy_up():
    torch.manual_seed(0)
    x = (1.0 + 1e-4 * torch.randn(32, 8)).requires_grad_()
    h = batch_entropy(x)
    h.backward()
    with torch.no_grad():
        stepped = x + 1e-2 * x.grad / x.grad.norm()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert batch_entropy(stepped) > h


def test_flattens_all_non_batch_dims_and_uses_unbiased_variance():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4)
    flat = x.reshape(6, -1)
    expected = (0.5 * torch.log1p(PI_E * flat.var(dim=0, unbiased=True))).mean()
    assert torch.allclose(batch_entropy(x), expected)


def test_custom_variance_backward_matches_autograd():
    torch.manual_seed(0)
    xs = (torch.randn(7, 5, dtype=torch.double, requires_grad=True), torch.randn(4, 3, dtype=torch.double) * 3)
    xs[1].requires_grad_()
    workspace = torch.empty(35, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda *x: _LayerVariances.apply(workspace, *x), xs)
    ys = [x.detach().clone().requires_grad_() for x in xs]
    weights = torch.randn(8, dtype=torch.double)
    (_LayerVariances.apply(workspace, *xs) * weights).sum().backward()
    (torch.cat([y.var(dim=0) for y in ys]) * weights).sum().backward()
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.grad, y.grad)


def test_batch_entropy_is_layer_entropies_of_one_layer():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 3, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    h = batch_entropy(x)
    h.backward()
    layer_entropies([y])[0].backward()
    assert h.shape == () and h.item() == layer_entropies([y.detach()])[0].item()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0)


def test_bf16_input_gives_float32_entropy():
    torch.manual_seed(0)
    x = torch.randn(64, 16).to(torch.bfloat16).requires_grad_()
    h = batch_entropy(x)
    assert h.dtype == torch.float32
    h.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_batch_of_one_raises_with_reason():
    with pytest.raises(ValueError, match="at least 2 samples"):
        batch_entropy(torch.randn(1, 10))


def test_token_mode_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    real = x[mask.bool()]
    expected = (0.5 * torch.log1p(PI_E * real.var(dim=0))).mean()
    assert torch.allclose(batch_entropy(x, mask=mask), expected)
    garbage = x.clone()
    garbage[~mask.bool()] = 1e3
    assert torch.allclose(batch_entropy(garbage, mask=mask), expected)
    assert not torch.allclose(batch_entropy(garbage), batch_entropy(x))
    with pytest.raises(ValueError, match="token mode"):
        batch_entropy(torch.randn(3, 4), mask=mask)


def test_lbe_loss_matches_eq5_and_clamps_alpha():
    entropies = torch.tensor([0.1, 0.9, 0.4])
    alphas = torch.tensor([0.5, -0.7, 0.05], requires_grad=True)
    loss = lbe_loss(entropies, alphas, alpha_min=0.2, beta=0.3)
    targets = torch.tensor([0.5, 0.7, 0.2])
    assert loss.item() == pytest.approx(0.3 / 3 * ((entropies - targets) ** 2).sum().item())
    loss.backward()
    assert alphas.grad[2] == 0  # |alpha| < alpha_min: clamped, no gradient (as in the authors' code)
    assert alphas.grad[0] != 0 and alphas.grad[1] != 0


def test_regularized_loss_is_eq6():
    task = torch.tensor(2.0, requires_grad=True)
    total = regularized_loss(task, torch.tensor(0.25))
    assert total.item() == pytest.approx(2.5)
    total.backward()
    assert task.grad.item() == pytest.approx(1.25)  # task loss not detached in the product


def test_layer_entropies_stack():
    torch.manual_seed(0)
    acts = [torch.randn(8, 3), torch.zeros(8, 2), torch.randn(8, 2, 2) * 5]
    h = layer_entropies(acts)
    assert h.shape == (3,) and h[1] == 0 and h[2] > h[0] > 0
    assert math.isclose(h[0].item(), batch_entropy(acts[0]).item())


def _chain_grads(entropies, three_d=False, lbe_only_extra=False):
    """Gradients of a 4-layer ReLU chain's weights under `sum(output) + sum(H_l^2)`, H from `entropies(acts)`."""
    torch.manual_seed(0)
    weights = [torch.randn(16, 16, requires_grad=True) for _ in range(4)]
    x, acts = torch.randn(8, 16), []
    for w in weights:
        x = torch.relu(x @ w)
        if three_d:  # a (batch, seq, hidden)-shaped activation, flattened inside the entropy
            x = x.view(8, 4, 4)
            acts.append(x)
            x = x.reshape(8, 16)
        else:
            acts.append(x)
    if lbe_only_extra:
        acts.append(torch.tanh(x))  # reaches the loss only through the LBE term
    loss = x.sum() + (entropies(acts) ** 2).sum()
    loss.backward()
    return [w.grad for w in weights]


def _autograd_entropies(acts):
    return torch.stack([0.5 * torch.log1p(PI_E * a.reshape(a.shape[0], -1).var(0)).mean() for a in acts])


@pytest.mark.parametrize("three_d", [False, True])
@pytest.mark.parametrize("lbe_only_extra", [False, True])
def test_layer_entropies_gradients_through_a_network_match_autograd(three_d, lbe_only_extra):
    expected = _chain_grads(_autograd_entropies, three_d, lbe_only_extra)
    got = _chain_grads(layer_entropies, three_d, lbe_only_extra)
    for g, want in zip(got, expected):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, want)


def test_regularizer_gradients_match_plain_autograd_of_eq6():
    from lbe_hf import BatchEntropyConfig
    from lbe_hf.models import FNNConfig, FNNForImageClassification
    from lbe_hf.regularizer import LBERegularizer

    torch.manual_seed(0)
    model = FNNForImageClassification(FNNConfig(input_dim=20, depth=6, width=16, init="torch"))
    x, y = torch.randn(32, 20), torch.randint(0, 10, (32,))
    regularizer = LBERegularizer(model, BatchEntropyConfig())
    for _ in range(2):  # the second step runs with a reused regularizer
        model.zero_grad()
        with regularizer.capture():
            model(pixel_values=x, labels=y).loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    h, acts = x, []
    for layer in model.layers:
        h = layer(h)
        acts.append(h)
    task = torch.nn.functional.cross_entropy(model.classifier(h), y)
    entropies = torch.stack([0.5 * torch.log1p(PI_E * a.var(0)).mean() for a in acts])
    target = model.lbe_alphas.alpha.abs().clamp(min=0.2)
    lbe = 0.5 / len(acts) * ((entropies - target) ** 2).sum()
    (task + task * lbe).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(got[name], param.grad, atol=1e-6, rtol=1e-4)


def test_joint_entropy_is_eq3_for_uncorrelated_neurons_and_far_below_for_copies():
    from lbe_hf.entropy import joint_layer_entropies

    torch.manual_seed(0)
    # Centred columns that are exactly orthogonal: the sample covariance is diagonal.
    q, _ = torch.linalg.qr(torch.randn(64, 9, dtype=torch.float64))
    q = q[:, 1:] - q[:, 1:].mean(0)  # drop one direction, centre the rest
    q, _ = torch.linalg.qr(q)
    x = (q * torch.linspace(0.5, 3.0, 8, dtype=torch.float64)).float()
    assert torch.allclose(joint_layer_entropies([x])[0], layer_entropies([x])[0], atol=1e-5)
    # Eight scaled copies of one feature: eq. 3 cannot tell them from independent neurons, the joint entropy can.
    feature = torch.randn(64, 1)
    copies = feature * torch.linspace(1.0, 2.0, 8)
    assert joint_layer_entropies([copies])[0] < 0.3 * layer_entropies([copies])[0]


def test_joint_entropy_wide_layers_use_the_gram_matrix_and_carry_gradients():
    from lbe_hf.entropy import joint_layer_entropies

    torch.manual_seed(0)
    wide = torch.randn(6, 40, dtype=torch.float64)  # k > n: the (n, n) Gram path
    c = 2.0
    centred = wide - wide.mean(0)
    direct = 0.5 / 40 * torch.logdet(torch.eye(40, dtype=torch.float64) + c * centred.T @ centred / 5)
    assert torch.allclose(joint_layer_entropies([wide.float()], c)[0].double(), direct, atol=1e-6)
    x = torch.randn(32, 5, requires_grad=True)
    joint_layer_entropies([x])[0].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
