"""The LBE loss (eq. 5-6 of Peer et al., 2022): pure functions of entropies and alphas."""

from __future__ import annotations

import torch


def entropy_targets(alphas: torch.Tensor, alpha_min: float) -> torch.Tensor:
    """max(alpha_min, |alpha_l|) per layer, with `torch.maximum` as in the authors' code.

    Below alpha_min the target is alpha_min and alpha gets no gradient; at the tie (alpha == alpha_min, the start of
    any run whose alpha equals alpha_min) `torch.maximum` passes half the gradient to alpha, so it can leave the tie.
    A clamp would pass none there and freeze the target at alpha_min for the whole run.
    """
    return torch.maximum(alphas.abs(), alphas.new_tensor(alpha_min))


def lbe_loss(entropies: torch.Tensor, alphas: torch.Tensor, alpha_min: float, beta: float) -> torch.Tensor:
    """L_BE = beta / L * sum_l (H_l - max(alpha_min, |alpha_l|))^2, eq. (5).

    Args:
        entropies: (L,) batch entropy of each regularized layer.
        alphas: (L,) learnable entropy targets.

    Returns:
        Scalar tensor.
    """
    return beta * (entropies - entropy_targets(alphas, alpha_min)).square().mean()


def regularized_loss(
    task_loss: torch.Tensor, lbe: torch.Tensor, form: str = "multiplicative", term_scale: float = 1.0
) -> torch.Tensor:
    """L + L * L_BE, eq. (6), or L + L_BE (`form="additive"`, `term_scale` times the term).

    Multiplicative: the regularizer weighs most while the task loss is high (a stuck network); as in the authors'
    code the task loss is not detached in the product. It needs L >= 0: a negative L would turn the product into a
    reward for lower entropy.

    Raises:
        ValueError: a negative task loss under the multiplicative form.
    """
    lbe = lbe.to(task_loss.dtype)
    if form == "additive":
        return task_loss + lbe * term_scale
    if bool(task_loss.detach() < 0):
        raise ValueError(
            f"the task loss is negative ({task_loss.detach().item():.4g}): under the multiplicative form "
            "L + L * L_BE a negative L rewards lower entropy. This trainer's loss is not a likelihood-type loss: set "
            "BatchEntropyConfig(loss_form='additive') (L + L_BE; beta is then the term's whole weight)."
        )
    return task_loss + task_loss * lbe
