import math

import pytest
import torch

from lbe_hf import PI_E, TWO_PI_E, batch_entropy, lbe_loss, regularized_loss
from lbe_hf.entropy import layer_entropies, neuron_variance


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
    x = torch.randn(7, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(neuron_variance, (x,))
    y = x.detach().clone().requires_grad_()
    weights = torch.randn(5, dtype=torch.double)
    (neuron_variance(x) * weights).sum().backward()
    (y.var(dim=0) * weights).sum().backward()
    assert torch.allclose(x.grad, y.grad)


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
