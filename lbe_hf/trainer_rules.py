"""What LBE means in each trainer it accepts, declared in one table (as PEFT keys LoRA targets by `model_type`).

A trainer's loss has its own sign and scale, and its batches their own layout. `rule_for(trainer_class)` walks the
class's MRO and returns the first declared rule; a TRL or sentence-transformers trainer that is not declared is
refused, since nothing checked what LBE would do there. A user's own `Trainer` subclass gets `Trainer`'s rule.

- `loss_form`: "multiplicative" is the paper's eq. 6, `L + L * L_BE`, for non-negative likelihood-type losses that
  stay high while a network is stuck. "additive", `L + L_BE` (as TRL adds its own auxiliary losses), for losses that
  change sign or sit near 0 by construction (policy-gradient surrogates): there eq. 6 would reward lower entropy on
  every step whose loss is negative, and vanish when the loss is ~0.
- `shared_prefixes`: rows of one batch repeat a prompt ([chosen; rejected] of preference trainers, a group of
  completions in GRPO). In a causal model the activations of a shared prefix are bit-identical across those rows,
  so each such position is counted once (see `lbe_hf.entropy.shared_prefix_duplicates`).
"""

from __future__ import annotations

from dataclasses import dataclass

MULTIPLICATIVE = "multiplicative"
ADDITIVE = "additive"


@dataclass(frozen=True)
class TrainerRule:
    loss_form: str
    shared_prefixes: bool
    accumulation: str  # how the trainer's loss is scaled for gradient accumulation (what the term follows)
    test: str  # the test that proves the rule
    refused: str | None = None  # why LBE refuses this trainer, and what to do instead


_PER_MICRO_BATCH = "per micro-batch mean, divided by the accumulation steps"
_GRPO = TrainerRule(
    ADDITIVE,
    True,
    "already divided over the accumulated batch (`loss_is_scaled_for_ga`): the term is divided by the steps too",
    "tests/test_trainer_rules.py::test_grpo_term_is_additive_and_trains_the_alphas",
)
_NOT_VALIDATED = (
    "it is not yet validated with LBE (its loss form and batch layout have no test here). Use a trainer of the "
    "README's table, or subclass LBEMixin yourself and declare a rule in lbe_hf.trainer_rules.RULES."
)

RULES: dict[str, TrainerRule] = {
    "Trainer": TrainerRule(MULTIPLICATIVE, False, _PER_MICRO_BATCH, "tests/test_trainer.py"),
    "Seq2SeqTrainer": TrainerRule(
        MULTIPLICATIVE,
        False,
        _PER_MICRO_BATCH,
        "tests/test_trl.py::test_seq2seq_trainer_through_the_mixin_logs_and_saves",
    ),
    "SFTTrainer": TrainerRule(
        MULTIPLICATIVE,
        False,
        "token mean over the accumulated batch when `num_items_in_batch` is given, else per micro-batch",
        "tests/test_trl.py, tests/test_trainer_rules.py::test_packed_sft_trains_in_token_mode",
    ),
    "DPOTrainer": TrainerRule(
        MULTIPLICATIVE,
        True,
        _PER_MICRO_BATCH,
        "tests/test_trainer_rules.py::test_dpo_counts_each_shared_prompt_position_once",
    ),
    "GRPOTrainer": _GRPO,
    "OnlineDPOTrainer": TrainerRule(
        MULTIPLICATIVE,
        False,
        "-",
        "tests/test_trainer_rules.py::test_refused_trainers",
        refused="it overrides `training_step` and never calls `compute_loss`, where LBE adds its term. Use "
        "DPOTrainer on generated pairs, or the raw-loop LBERegularizer in your own loop.",
    ),
    **{
        name: TrainerRule(
            MULTIPLICATIVE, True, "-", "tests/test_trainer_rules.py::test_refused_trainers", refused=_NOT_VALIDATED
        )  # fmt: skip
        for name in ("RLOOTrainer", "KTOTrainer", "ORPOTrainer", "CPOTrainer", "RewardTrainer")
    },
    **{
        name: TrainerRule(
            MULTIPLICATIVE, False, "-", "tests/test_trainer_rules.py::test_refused_trainers", refused=_NOT_VALIDATED
        )  # fmt: skip
        for name in ("SentenceTransformerTrainer", "CrossEncoderTrainer", "SparseEncoderTrainer")
    },
}

# Packages whose trainers must be declared: their losses and batch layouts differ from Trainer's.
_CHECKED_PACKAGES = ("trl", "sentence_transformers")


def rule_for(trainer_class: type) -> tuple[str, TrainerRule]:
    """(declared class name, rule) for a trainer class: the first class of its MRO the table declares.

    Raises:
        ValueError: the trainer is refused, or comes from TRL / sentence-transformers without a declared rule.
    """
    for cls in trainer_class.__mro__:
        rule = RULES.get(cls.__name__)
        if rule is None and cls.__module__.split(".")[0] in _CHECKED_PACKAGES and "Trainer" in cls.__name__:
            rule = TrainerRule(MULTIPLICATIVE, False, "-", "-", refused=_NOT_VALIDATED)
        if rule is None:
            continue
        if rule.refused is not None:
            raise ValueError(f"LBE cannot be mixed into {cls.__name__}: {rule.refused}")
        return cls.__name__, rule
    return "Trainer", RULES["Trainer"]
