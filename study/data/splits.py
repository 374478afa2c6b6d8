"""Patient-level splits and nested, stratified training fractions.

Both are pure functions of the dataset's own content and a seed, so every trial that uses a
dataset sees the same split, and the fine-tuned and the from-scratch arm of a comparison see
the same training subset (a paired design).
"""

from __future__ import annotations

import zlib

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from study.errors import DataError

__all__ = [
    "N_FOLDS",
    "SPLIT_OF_FOLD",
    "assign_folds",
    "primary_label",
    "nested_subset",
    "nested_patient_subset",
    "split_rule",
]

# Ten patient-disjoint folds, used as PTB-XL uses its strat_fold: 1-8 train, 9 val, 10 test.
N_FOLDS = 10
SPLIT_OF_FOLD = {**{f: "train" for f in range(1, 9)}, 9: "val", 10: "test"}


def primary_label(labels: np.ndarray) -> np.ndarray:
    """One stratification class per record: its rarest positive label, or K for none.

    Stratifying on the rarest label keeps rare classes present in every split, which a
    multi-label dataset needs more than balance of its common classes.
    """
    labels = np.asarray(labels, dtype=bool)
    prevalence = labels.sum(axis=0)
    # Rank classes from rarest to commonest; records with no label get class K.
    rank = np.argsort(np.argsort(prevalence, kind="stable"), kind="stable")
    masked = np.where(labels, rank[None, :], labels.shape[1])
    best_rank = masked.min(axis=1)
    order = np.argsort(rank, kind="stable")
    return np.where(
        best_rank < labels.shape[1],
        order[np.minimum(best_rank, labels.shape[1] - 1)],
        labels.shape[1],
    )


def assign_folds(labels: np.ndarray, patient_id: np.ndarray, seed: int) -> np.ndarray:
    """Fold 1..10 per record; all records of a patient share a fold.

    Args:
        labels: (N, K) multi-hot labels.
        patient_id: (N,) patient of each record.
        seed: fixed per dataset, so the split never changes between studies.

    Raises:
        DataError: fewer patients than folds.
    """
    patient_id = np.asarray(patient_id)
    n_patients = len(np.unique(patient_id))
    if n_patients < N_FOLDS:
        raise DataError(f"a patient-level split needs >= {N_FOLDS} patients, got {n_patients}")
    y = primary_label(labels)
    if np.bincount(y).max() < N_FOLDS:
        # No class has a member per fold, so stratification is impossible (sklearn refuses):
        # deal the patients, shuffled by the seed, round-robin into the folds.
        patients = np.random.default_rng(seed).permutation(np.unique(patient_id))
        fold_of = {p: i % N_FOLDS + 1 for i, p in enumerate(patients)}
        return np.array([fold_of[p] for p in patient_id], dtype=np.int8)
    # StratifiedGroupKFold needs each class to have >= n_splits members to stratify well; it
    # still keeps groups disjoint when a class is rarer, which is the property that matters.
    cv = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    folds = np.zeros(len(y), dtype=np.int8)
    for k, (_, test_idx) in enumerate(cv.split(np.zeros(len(y)), y, groups=patient_id)):
        folds[test_idx] = k + 1
    return folds


def split_rule(labels: np.ndarray) -> str:
    """How `assign_folds` splits a dataset with these labels, in words (kept in meta.json).

    A group is a patient_id: a patient, or a record where the dataset has no patient ids
    (meta.json's split_by says which)."""
    if np.bincount(primary_label(labels)).max() < N_FOLDS:
        return (
            "patient_id groups dealt at random into 10 folds (too few per class to "
            "stratify); 1-8/9/10"
        )
    return "StratifiedGroupKFold(10) grouped by patient_id on the rarest label; 1-8/9/10"


def nested_subset(
    train_idx: np.ndarray, labels: np.ndarray, fraction: float, repeat: int, dataset: str
) -> np.ndarray:
    """The training records of one (fraction, repeat): stratified, nested, seeded by repeat.

    Each stratum (primary label) is shuffled once per (dataset, repeat) and the subset takes
    its first ceil(fraction * n) records, so the 10% subset of a repeat lies inside its 25%
    subset, and every class with training records keeps at least one.

    Args:
        train_idx: indices of the training split.
        labels: (N, K) labels of the whole dataset.
        fraction: in (0, 1].
        repeat: the repeat number (the seed of the subset).
        dataset: the dataset name, mixed into the seed.

    Returns:
        Sorted indices into the dataset.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"data fraction must be in (0, 1], got {fraction}")
    train_idx = np.asarray(train_idx)
    if fraction == 1.0:
        return np.sort(train_idx)
    rng = np.random.default_rng([repeat, zlib.crc32(dataset.encode())])
    strata = primary_label(labels[train_idx])
    chosen = []
    for s in np.unique(strata):
        members = train_idx[strata == s]
        members = members[rng.permutation(len(members))]
        chosen.append(members[: max(1, int(np.ceil(fraction * len(members))))])
    return np.sort(np.concatenate(chosen))


def nested_patient_subset(
    idx: np.ndarray,
    labels: np.ndarray,
    patient_id: np.ndarray,
    fraction: float,
    repeat: int,
    dataset: str,
    salt: str = "val",
) -> np.ndarray:
    """A patient-level, stratified, nested subset of the records `idx` (e.g. the validation
    split subsampled with a training fraction: `finetune.val_fraction: match`).

    Patients, not records, are drawn: each patient is stratified by the primary label of
    its records taken together, each stratum is shuffled once per (dataset, repeat, salt),
    and the subset keeps the first ceil(fraction * n) patients of every stratum (at least
    one) with all their records. A smaller fraction's subset lies inside a larger one's.

    Args:
        idx: indices of the records to draw from (one split).
        labels: (N, K) labels of the whole dataset.
        patient_id: (N,) patient of each record of the whole dataset.
        fraction: in (0, 1]; 1 keeps every record.
        repeat: the repeat number (the seed of the subset).
        dataset: the dataset name, mixed into the seed.
        salt: tells this draw apart from other draws of one (dataset, repeat).

    Returns:
        Sorted indices into the dataset.
    """
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"data fraction must be in (0, 1], got {fraction}")
    idx = np.sort(np.asarray(idx))
    if fraction == 1.0:
        return idx
    patients, inverse = np.unique(np.asarray(patient_id)[idx], return_inverse=True)
    per_patient = np.zeros((len(patients), labels.shape[1]), dtype=bool)
    np.logical_or.at(per_patient, inverse, np.asarray(labels[idx], dtype=bool))
    strata = primary_label(per_patient)
    rng = np.random.default_rng([repeat, zlib.crc32(f"{dataset}/{salt}".encode())])
    keep = np.zeros(len(patients), dtype=bool)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        members = members[rng.permutation(len(members))]
        keep[members[: max(1, int(np.ceil(fraction * len(members))))]] = True
    return idx[keep[inverse]]
