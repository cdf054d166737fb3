"""`BatchEntropyConfig`: every knob of layerwise batch-entropy regularization in one dataclass."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from .entropy import CONSTANTS

CONFIG_NAME = "lbe_config.json"
AUTO = "auto"
EntropyConstant = Literal["pi_e", "2pi_e"]
EntropyMode = Literal["flatten", "token"]
EntropyEstimator = Literal["neuron", "joint"]
OnNonfinite = Literal["skip", "raise"]
LossForm = Literal["auto", "multiplicative", "additive"]
LOSS_FORMS = ("auto", "multiplicative", "additive")


@dataclass
class BatchEntropyConfig:
    """Configuration of layerwise batch-entropy (LBE) regularization (Peer et al., TMLR 2022).

    The regularized loss is `L + L * L_BE` with `L_BE = beta / L * sum_l (H_l - max(alpha_min, |alpha_l|))^2`
    (eq. 6), where `H_l` is the batch entropy of layer `l` (eq. 3) and `alpha_l` a learnable target per layer.

    Args:
        alpha: initial target of every regularized module (learnable, one per module), or "auto" (measured on the
            first training batch, `lbe_hf.auto_alpha`). 0.5 rescues vanilla nets of depth 30-50. Deeper nets did
            better with a higher target: alpha 3.0 with beta 1.5 at lr 1e-4 under clipping reached 89% at He-init
            depth 200 (plain `Trainer` at that lr: 86%) and took depth 500 from chance to 67%
            (`configs/vision/fnn_very_deep_mnist.yaml`, docs/trainability.md).
        beta: weight of the LBE term; 0 turns it off. 0.5 rescues deep vanilla nets when the lr decays
            (`Trainer`'s default linear schedule) and the gradient is not clipped (`max_grad_norm=0`): at a
            constant lr they swing, and under clipping some stall (docs/trainability.md); the paper's
            transformer grid is 0.005-0.05.
        alpha_min: lowest target, `max(alpha_min, |alpha|)`.
        target_modules: a regex (full match of the module name) or a list of exact names / `.name` suffixes, as
            PEFT's `target_modules`; None picks the model family's default (`lbe_hf.targets`).
        exclude_modules: modules to leave out, matched the same way.
        entropy_constant: "pi_e" (the authors' code; their alpha/beta were tuned with it) or "2pi_e" (the paper's
            eq. 3).
        entropy_mode: "flatten" (every non-batch position a neuron, padding included: the paper) or "token"
            (every real token a sample, each channel a neuron).
        entropy_estimator: "neuron" (eq. 3) or "joint" (`lbe_hf.entropy.joint_layer_entropies`, an experimental
            variant that also sees correlated neurons).
        on_nonfinite: "skip" a NaN/inf term for that step (counted as `lbe_skipped`) or "raise".
        loss_form: "multiplicative" (the paper's eq. 6, `L + L * L_BE`, for non-negative likelihood-type losses:
            `Trainer`, SFT, Seq2Seq, DPO), "additive" (`L + L_BE`, for losses that change sign or sit near 0:
            GRPO), or "auto" (the trainer's form from `lbe_hf.trainer_rules`; multiplicative outside a trainer).
            The term's scale differs: multiplicative weighs beta by the task loss, additive uses beta alone.
    """

    alpha: float | str = field(
        default=0.5,
        metadata={
            "help": "Initial entropy target of every regularized layer (one learnable alpha per layer), or 'auto': "
            "measured on the first regularized training batch (see lbe_hf.auto_alpha for the rule)."
        },
    )
    beta: float = field(
        default=0.5,
        metadata={"help": "Weight of the LBE term. 0 turns regularization off (the run is then a plain Trainer run)."},
    )
    alpha_min: float = field(
        default=0.2,
        metadata={"help": "Lower bound of the entropy target: a layer is pushed to at least this much entropy."},
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Modules whose outputs are regularized. A string is a regex that must match the full module "
            "name; a list matches exact names or a '.name' suffix (as PEFT's target_modules). None picks the "
            "documented default for the model's family."
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Modules to leave out, matched like target_modules."},
    )
    entropy_constant: EntropyConstant = field(
        default="pi_e",
        metadata={
            "help": "c in 0.5*log(c*var + 1): 'pi_e' as in the authors' code (their alpha/beta were tuned with it) "
            "or '2pi_e' as written in the paper's eq. (3).",
            "choices": sorted(CONSTANTS),
        },
    )
    entropy_mode: EntropyMode = field(
        default="flatten",
        metadata={
            "help": "'flatten' (paper): every non-batch position is a neuron, padding included. 'token': every "
            "real token (attention_mask == 1) is a sample and every channel a neuron.",
            "choices": ["flatten", "token"],
        },
    )
    entropy_estimator: EntropyEstimator = field(
        default="neuron",
        metadata={
            "help": "'neuron' (the paper's eq. 3: each neuron's entropy on its own, averaged) or 'joint' (an "
            "experimental variant, 0.5/k*logdet(I + c*Cov): also sees correlated neurons; equal to eq. 3 for a "
            "diagonal covariance).",
            "choices": ["neuron", "joint"],
        },
    )
    on_nonfinite: OnNonfinite = field(
        default="skip",
        metadata={
            "help": "What to do when the LBE term is NaN/inf: 'skip' drops it for that step (warned, counted in the "
            "log as lbe_skipped), 'raise' stops training. LBETrainer treats a NaN/inf task loss the same way "
            "('skip' zeroes that micro-batch's gradient, counted as nonfinite_loss_skipped).",
            "choices": ["skip", "raise"],
        },
    )

    loss_form: LossForm = field(
        default="auto",
        metadata={
            "help": "How the term joins the task loss L: 'multiplicative' (paper's eq. 6, L + L*L_BE, for "
            "non-negative losses), 'additive' (L + L_BE, for losses that change sign or sit near 0, e.g. GRPO), "
            "or 'auto' (chosen by the trainer).",
            "choices": list(LOSS_FORMS),
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.alpha, str) and self.alpha.strip().lower() == AUTO:
            self.alpha = AUTO
        elif isinstance(self.alpha, str):
            try:
                self.alpha = float(self.alpha)
            except ValueError:
                raise ValueError(f"alpha must be a number or 'auto', got {self.alpha!r}.") from None
        for name in ("beta", "alpha_min") if self.alpha == AUTO else ("alpha", "beta", "alpha_min"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if self.alpha != AUTO and self.alpha <= 0:
            raise ValueError(
                f"alpha must be > 0, got {self.alpha}: the entropy target is max(alpha_min, |alpha|), so it would "
                f"act as {max(self.alpha_min, abs(self.alpha))}. Pass that value (or 'auto') instead."
            )
        if self.alpha != AUTO and self.alpha < self.alpha_min:
            warnings.warn(
                f"alpha={self.alpha} is below alpha_min={self.alpha_min}: every target starts at alpha_min and the "
                "alphas get no gradient there, so they stay frozen for the whole run. Use alpha >= alpha_min for "
                "learnable targets.",
                stacklevel=3,
            )
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0 (0 turns LBE off), got {self.beta}.")
        if self.alpha_min <= 0:
            raise ValueError(
                f"alpha_min must be > 0, got {self.alpha_min}: it is the smallest entropy a layer is pushed to "
                "(the paper uses 0.2-0.5)."
            )
        if self.entropy_constant not in CONSTANTS:
            raise ValueError(f"entropy_constant must be one of {sorted(CONSTANTS)}, got {self.entropy_constant!r}.")
        if self.entropy_mode not in ("flatten", "token"):
            raise ValueError(f"entropy_mode must be 'flatten' or 'token', got {self.entropy_mode!r}.")
        if self.entropy_estimator not in ("neuron", "joint"):
            raise ValueError(f"entropy_estimator must be 'neuron' or 'joint', got {self.entropy_estimator!r}.")
        if self.loss_form not in LOSS_FORMS:
            raise ValueError(f"loss_form must be one of {LOSS_FORMS}, got {self.loss_form!r}.")
        if self.on_nonfinite not in ("skip", "raise"):
            raise ValueError(f"on_nonfinite must be 'skip' or 'raise', got {self.on_nonfinite!r}.")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if not value or not all(isinstance(v, str) and v for v in value):
                    raise ValueError(
                        f"{name} must be a regex string or a non-empty list of module names, got {value}."
                    )
                setattr(self, name, list(value))
            elif value is not None and not isinstance(value, str):
                raise ValueError(
                    f"{name} must be a regex string, a list of names or None, got {type(value).__name__}."
                )

    @property
    def constant(self) -> float:
        return CONSTANTS[self.entropy_constant]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> BatchEntropyConfig:
        """Read `lbe_config.json` from a folder (plain JSON: nothing is executed).

        Raises:
            ValueError: the file is not valid JSON or not a config of this version (names the file).
        """
        path = os.path.join(directory, CONFIG_NAME)
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path} is not valid JSON ({err}): the file is damaged or was cut short. Restore it from another "
                    "copy, or delete it (and lbe_alphas.safetensors beside it) to start from fresh alphas."
                ) from err
        if not isinstance(values, dict):
            raise ValueError(f"{path} holds {type(values).__name__}, not a JSON object of BatchEntropyConfig fields.")
        return cls.from_dict(values, source=path)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "lbe_config") -> BatchEntropyConfig:
        """`BatchEntropyConfig(**values)` that names unknown keys (and `source`) instead of a bare TypeError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source} has unknown fields {unknown}; known: {sorted(known)}.")
        return cls(**values)


@dataclass
class LBEArguments:
    """`BatchEntropyConfig` as `--lbe_*` command-line flags for `HfArgumentParser`; `.to_config()` gives the config.

    The prefix keeps the flags apart from `TrainingArguments` and LoRA flags. Module lists take names
    (`--lbe_target_modules layer.0.output.dense layer.1.output.dense`, exact name or `.name` suffix); a regex goes in
    `--lbe_target_regex` (full match), as `target_modules` given as a string would be.
    """

    lbe_alpha: str = field(
        default="0.5",
        metadata={"help": "Initial entropy target of every regularized layer (learnable), or 'auto'."},
    )
    lbe_beta: float = field(default=0.5, metadata={"help": "Weight of the LBE term; 0 turns regularization off."})
    lbe_alpha_min: float = field(default=0.2, metadata={"help": "Lower bound of the entropy target."})
    lbe_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules to regularize: exact names or '.name' suffixes. Default: the family's default."},
    )
    lbe_target_regex: str | None = field(
        default=None, metadata={"help": "Modules to regularize as one regex (full match of the module name)."}
    )
    lbe_exclude_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to leave out: exact names or '.name' suffixes."}
    )
    lbe_exclude_regex: str | None = field(default=None, metadata={"help": "Modules to leave out, as one regex."})
    lbe_entropy_constant: EntropyConstant = field(
        default="pi_e", metadata={"help": "c in 0.5*log(c*var + 1): 'pi_e' (authors' code) or '2pi_e' (paper text)."}
    )
    lbe_entropy_mode: EntropyMode = field(
        default="flatten",
        metadata={"help": "'flatten' (paper: every position a neuron) or 'token' (every real token a sample)."},
    )
    lbe_entropy_estimator: EntropyEstimator = field(
        default="neuron", metadata={"help": "'neuron' (the paper's eq. 3) or 'joint' (logdet variant, experimental)."}
    )
    lbe_on_nonfinite: OnNonfinite = field(
        default="skip", metadata={"help": "A NaN/inf LBE term: 'skip' that step (counted) or 'raise'."}
    )

    lbe_loss_form: LossForm = field(
        default="auto", metadata={"help": "'multiplicative' (L + L*L_BE), 'additive' (L + L_BE) or 'auto'."}
    )

    def to_config(self) -> BatchEntropyConfig:
        for names, regex in (("target_modules", "target_regex"), ("exclude_modules", "exclude_regex")):
            if getattr(self, f"lbe_{names}") is not None and getattr(self, f"lbe_{regex}") is not None:
                raise ValueError(f"Give --lbe_{names} or --lbe_{regex}, not both.")
        return BatchEntropyConfig(
            alpha=self.lbe_alpha,
            beta=self.lbe_beta,
            alpha_min=self.lbe_alpha_min,
            target_modules=self.lbe_target_regex if self.lbe_target_regex is not None else self.lbe_target_modules,
            exclude_modules=self.lbe_exclude_regex if self.lbe_exclude_regex is not None else self.lbe_exclude_modules,
            entropy_constant=self.lbe_entropy_constant,
            entropy_mode=self.lbe_entropy_mode,
            entropy_estimator=self.lbe_entropy_estimator,
            on_nonfinite=self.lbe_on_nonfinite,
            loss_form=self.lbe_loss_form,
        )
