"""Datasets by name: synthetic mixtures, 8×8 digits, user tables and user images.

`load_dataset(name, n_samples, seed, params)` builds one; `DATASETS` holds the factories
(`ring`, `grid`, `two_gaussians`, `digits`, `stacked_digits`, `table`, `images`, `stacked`)
and also accepts `module:attr` / `file.py:attr` plug-ins.
"""

from fedgan.simulator.data.base import DataError, Dataset, Modes
from fedgan.simulator.data.registry import DATASETS, DatasetFactory, dataset_params, load_dataset

# Imported for their registrations.
from fedgan.simulator.data import mixtures, digits, table, images, stacked  # noqa: E402, F401  # isort: skip

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetFactory",
    "Modes",
    "dataset_params",
    "load_dataset",
]
