"""Data: sources, converters (registry), schemas, mixing, and the plan / prepare commands.

Public API::

    from minigpt.data import prepare_dataset, plan_dataset, read_jsonl, load_mixture, MixtureConfig
    prepared = prepare_dataset("config/data/posttrain/sft/general.yaml", "dataset/", tokenizer=tok_dir)
    rows = read_jsonl(prepared.train_path)
"""

from minigpt.data.mixture_config import (
    BudgetSpec,
    FilterSpec,
    MixtureConfig,
    SourceConfig,
    ValidationSpec,
    load_mixture,
)
from minigpt.data.prepare import (
    MixturePlan,
    PreparedDataset,
    iter_mixture_rows,
    plan_dataset,
    prepare_dataset,
)
from minigpt.data.readers import read_jsonl

__all__ = [
    "BudgetSpec",
    "FilterSpec",
    "MixtureConfig",
    "MixturePlan",
    "PreparedDataset",
    "SourceConfig",
    "ValidationSpec",
    "iter_mixture_rows",
    "load_mixture",
    "plan_dataset",
    "prepare_dataset",
    "read_jsonl",
]
