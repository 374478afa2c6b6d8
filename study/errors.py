"""The error hierarchy: one base, and errors that also subclass the matching builtin.

Catch `StudyError` to catch everything this package raises on purpose.
"""

from __future__ import annotations

__all__ = [
    "StudyError",
    "ConfigError",
    "DataError",
    "StorageError",
    "LeaseError",
    "TrainingError",
]


class StudyError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(StudyError, ValueError):
    """An experiment spec, option or name that breaks a rule (the message names it)."""


class DataError(StudyError, ValueError):
    """A dataset, record or split that is missing, malformed or inconsistent."""


class StorageError(StudyError, OSError):
    """A store location that cannot be read or written as required."""


class LeaseError(StorageError):
    """The study's lease is held by another driver, or this driver lost it
    (study.sweep.lease)."""


class TrainingError(StudyError, RuntimeError):
    """A training run that cannot continue (diverged, incompatible checkpoint, ...)."""
