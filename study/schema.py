"""The store's layout and the Parquet schemas of its result tables (a documented contract).

<study>/spec.yaml                       the resolved spec
<study>/plan.parquet                    every planned unit with its axes and config
<study>/prepared/<key>/                 prepared datasets (see study.data.prepared)
<study>/results/trials/<unit_id>.parquet    one row per finished fine-tune/scratch unit
<study>/results/epochs/<unit_id>.parquet    one row per epoch of that unit
<study>/results/pretrain/<unit_id>.parquet  one row per finished pretraining unit
<study>/pretrained/<unit_id>/model.pt   pretrained weights; model.json: their config
<study>/checkpoints/<unit_id>/last.pt   the last epoch of an unfinished unit
<study>/runs/<unit_id>.json             running / failed marker with host and error
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "TRIALS_SCHEMA",
    "EPOCHS_SCHEMA",
    "PRETRAIN_SCHEMA",
    "trial_path",
    "epochs_path",
    "pretrain_path",
    "checkpoint_path",
    "weights_path",
    "run_marker_path",
]

TRIALS_SCHEMA = pa.schema(
    [
        ("unit_id", pa.string()),
        ("architecture", pa.string()),  # registry name plus options, e.g. resnet1d18[base_width=16]
        ("init", pa.string()),  # "pretrained" or "scratch"
        ("upstream", pa.string()),  # null for scratch
        ("pretrain_task", pa.string()),  # null for scratch
        ("pretrain_unit", pa.string()),  # null for scratch
        ("downstream", pa.string()),
        ("freeze_depth", pa.int32()),  # 0 for scratch
        ("data_fraction", pa.float64()),
        ("repeat", pa.int32()),
        ("seed", pa.int64()),
        ("n_train", pa.int64()),  # records in the training subset
        ("n_val", pa.int64()),
        ("n_test", pa.int64()),
        ("test_macro_auroc", pa.float64()),
        ("test_macro_f1", pa.float64()),  # thresholds chosen per class on validation
        ("test_weighted_f1", pa.float64()),  # support-weighted, threshold 0.5 (Nguyen & Do)
        # The downstream task: multi_label, single_label (arg-max class) or per_sample (QRS).
        # The columns below are null where the task has no such number (see
        # study.training.evaluation for each rule).
        ("task", pa.string()),
        ("test_per_class_f1", pa.string()),  # JSON {class: F1}
        ("test_accuracy", pa.float64()),  # single_label and binary tasks
        ("test_sensitivity", pa.float64()),  # binary tasks, at the validation threshold
        ("test_specificity", pa.float64()),
        ("test_cinc2017_score", pa.float64()),  # mean F1 of N, A, O (CinC 2017 label set)
        ("test_challenge_score", pa.float64()),  # PhysioNet/CinC 2020-21, SNOMED label sets
        ("test_qrs_sensitivity", pa.float64()),  # QRS detection, 150 ms tolerance
        ("test_qrs_ppv", pa.float64()),
        ("test_qrs_f1", pa.float64()),
        ("decision_thresholds", pa.string()),  # JSON: what was chosen on validation
        ("val_macro_auroc", pa.float64()),  # of the selected epoch
        ("val_loss", pa.float64()),  # of the selected epoch
        ("best_epoch", pa.int32()),  # selected on validation loss, 1-based
        ("epochs", pa.int32()),  # epochs run (early stopping may end before the maximum)
        ("train_seconds", pa.float64()),
        ("trainable_params", pa.int64()),
        # the parts that trained, e.g. "head.hidden, head.fc" (study.models ECGModel.trained_parts)
        ("trained_layers", pa.string()),
        ("hardware", pa.string()),
        ("code_version", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("config", pa.string()),  # the resolved unit config as JSON
    ]
)

EPOCHS_SCHEMA = pa.schema(
    [
        ("unit_id", pa.string()),
        ("epoch", pa.int32()),
        ("train_loss", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_macro_auroc", pa.float64()),
        ("val_macro_f1", pa.float64()),
        ("val_weighted_f1", pa.float64()),
        ("lr", pa.float64()),
        ("seconds", pa.float64()),
    ]
)

PRETRAIN_SCHEMA = pa.schema(
    [
        ("unit_id", pa.string()),
        ("architecture", pa.string()),
        ("upstream", pa.string()),
        ("pretrain_task", pa.string()),
        ("num_workers", pa.int32()),
        ("n_train", pa.int64()),
        ("val_macro_auroc", pa.float64()),
        ("val_loss", pa.float64()),
        ("best_epoch", pa.int32()),
        ("epochs", pa.int32()),
        ("train_seconds", pa.float64()),
        ("hardware", pa.string()),
        ("code_version", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("config", pa.string()),
    ]
)


def trial_path(uid: str) -> str:
    return f"results/trials/{uid}.parquet"


def epochs_path(uid: str) -> str:
    return f"results/epochs/{uid}.parquet"


def pretrain_path(uid: str) -> str:
    return f"results/pretrain/{uid}.parquet"


def checkpoint_path(uid: str) -> str:
    return f"checkpoints/{uid}/last.pt"


def weights_path(uid: str) -> str:
    return f"pretrained/{uid}/model.pt"


def run_marker_path(uid: str) -> str:
    return f"runs/{uid}.json"
