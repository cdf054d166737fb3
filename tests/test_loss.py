import pytest
import torch

from lbe_hf.loss import entropy_targets, lbe_loss, regularized_loss


def test_target_is_the_larger_of_alpha_min_and_abs_alpha():
    alphas = torch.tensor([0.1, -0.7, 0.5])
    assert entropy_targets(alphas, 0.2).tolist() == pytest.approx([0.2, 0.7, 0.5])


def test_alpha_at_alpha_min_gets_gradient():
    # A run started with alpha == alpha_min (the default 0.2) must be able to move its targets.
    alphas = torch.tensor([0.2, 0.2], requires_grad=True)
    lbe_loss(torch.tensor([1.0, 0.0]), alphas, alpha_min=0.2, beta=1.0).backward()
    # d/dalpha of mean((H - alpha)^2) is -(H - alpha); torch.maximum passes half of it at the tie.
    assert alphas.grad.tolist() == pytest.approx([-0.4, 0.1])


def test_alpha_below_alpha_min_gets_no_gradient():
    alphas = torch.tensor([0.1], requires_grad=True)
    lbe_loss(torch.tensor([1.0]), alphas, alpha_min=0.2, beta=1.0).backward()
    assert alphas.grad.tolist() == [0.0]


def test_lbe_loss_is_beta_times_mean_square_distance():
    entropies, alphas = torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.5])
    assert lbe_loss(entropies, alphas, 0.2, 0.4).item() == pytest.approx(0.4 * 0.25 / 2)


def test_regularized_loss_is_eq6_and_not_detached():
    task = torch.tensor(2.0, requires_grad=True)
    total = regularized_loss(task, torch.tensor(0.25))
    total.backward()
    assert total.item() == pytest.approx(2.5) and task.grad.item() == pytest.approx(1.25)
