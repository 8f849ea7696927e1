"""The ways the learning pipeline refuses input, each with its exit code (docs/learning.md)."""

from __future__ import annotations

from atomlab.core.errors import InvalidInputError


class DatasetError(InvalidInputError):
    """A trajectory database or dataset file cannot make a dataset (no actions, too few, a
    missing signal, another format); exit 3, nothing written."""

    type_name = "dataset_error"


class ModelFileError(InvalidInputError):
    """A model file is not an atomlab model, is damaged, or was saved by another format
    version; exit 3."""

    type_name = "model_file_error"
