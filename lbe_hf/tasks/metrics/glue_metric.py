"""GLUE metrics as a local `evaluate` module: `evaluate.load("path/to/glue_metric.py", "rte")`.

The same numbers as the Hub's `evaluate.load("glue", task)` (GLUE's official definitions): accuracy for
SST-2, MNLI, QNLI, RTE, WNLI, AX; accuracy and binary F1 (positive class 1) for MRPC and QQP; Matthews
correlation for CoLA; Pearson and Spearman correlation for STS-B. Shipped with `lbe_hf` so that evaluation
works without network access.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

CONFIGS = (
    "sst2",
    "mnli",
    "mnli_mismatched",
    "mnli_matched",
    "cola",
    "stsb",
    "mrpc",
    "qqp",
    "qnli",
    "rte",
    "wnli",
    "hans",
    "ax",
)

_DESCRIPTION = "GLUE evaluation metric (local copy of the official definitions), one config per GLUE task."
_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (int), or scores (float) for stsb.
    references: gold labels (int), or scores (float) for stsb.
Returns:
    cola: {"matthews_correlation"}; mrpc, qqp: {"accuracy", "f1"}; stsb: {"pearson", "spearmanr"};
    every other task: {"accuracy"}.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GlueLocal(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in CONFIGS:
            raise KeyError(f"Unknown GLUE metric config {self.config_name!r}; choose one of {list(CONFIGS)}.")
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            codebase_urls=["https://gluebenchmark.com"],
            format="numpy",
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if self.config_name == "cola":
            return {"matthews_correlation": matthews_corrcoef(references, predictions)}
        if self.config_name == "stsb":
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        accuracy = float((predictions == references).mean())
        if self.config_name in ("mrpc", "qqp"):
            return {"accuracy": accuracy, "f1": float(f1_score(y_true=references, y_pred=predictions))}
        return {"accuracy": accuracy}
