"""The patient-level nested subset that `finetune.val_fraction: match` validates on."""

from __future__ import annotations

import numpy as np
import pytest

from study.data.splits import nested_patient_subset


def _data(n_patients=60, per=3, k=3, seed=0):
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), per).astype(str)
    labels = np.zeros((n_patients * per, k), dtype=np.uint8)
    cls = rng.integers(0, k, n_patients)
    labels[np.arange(len(labels)), np.repeat(cls, per)] = 1
    return labels, patient


def test_whole_patients_nested_stratified_and_seeded_by_repeat():
    labels, patient = _data()
    idx = np.arange(len(labels))[30:]  # a split: patients 10..59
    small = nested_patient_subset(idx, labels, patient, 0.1, 0, "d")
    big = nested_patient_subset(idx, labels, patient, 0.5, 0, "d")
    assert set(small) <= set(big) <= set(idx)
    for subset in (small, big):  # every kept patient with all of its records in the split
        kept = set(patient[subset])
        assert set(subset) == {i for i in idx if patient[i] in kept}
        assert labels[subset].sum(axis=0).min() >= 1  # every class keeps a patient
    assert len(set(patient[big])) == pytest.approx(25, abs=3)
    other = nested_patient_subset(idx, labels, patient, 0.5, 1, "d")
    assert set(other) != set(big)  # another repeat, another draw
    assert (nested_patient_subset(idx, labels, patient, 1.0, 0, "d") == idx).all()
    assert (nested_patient_subset(idx, labels, patient, 0.5, 0, "d") == big).all()
