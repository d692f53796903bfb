"""Dagster assets of Precision Codex. Definitions are assembled only in ``definitions.py``."""

import warnings

import dagster as dg

# The blocking checks of `staged_index` are partitioned like the asset they gate, a Dagster feature
# still marked preview; the warning would greet every command. Only that one message is filtered.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    category=dg.PreviewWarning,
)
