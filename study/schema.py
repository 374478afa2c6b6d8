"""The store's layout and the Parquet schemas of its result tables (a documented contract).

<study>/spec.yaml                       the resolved spec
<study>/plan.parquet                    every planned unit with its axes and config
<study>/prepared/<key>/                 prepared datasets (see study.data.prepared)
<study>/results/trials/<unit_id>.parquet    one row per finished fine-tune/scratch unit
<study>/results/epochs/<unit_id>.parquet    one row per epoch of that unit
<study>/results/pretrain/<unit_id>.parquet  one row per finished pretraining unit
<study>/results/predictions/<unit_id>.parquet  the test-set predictions of a fine-tune/scratch
                                        unit, one row per test example (written before its
                                        trials row; PREDICTIONS_SCHEMA)
<study>/pretrained/<unit_id>/model.pt   pretrained weights; model.json: their config
<study>/checkpoints/<unit_id>/last.pt   the last epoch of an unfinished unit
<study>/runs/<unit_id>.json             running / failed / interrupted marker: host, error,
                                        and the lease id of the driver that ran the unit
<study>/driver.json                     the lease of the one driver running the study (holder's
                                        host, pid, lease id, started_at, heartbeat_at; see
                                        study.sweep.lease)
<study>/results/search/<group_id>/<number:05d>.parquet
                                        one row per finished trial of a hyperparameter
                                        search group (SEARCH_SCHEMA; study.sweep.search)
<study>/results/search/<group_id>/chosen.json
                                        the group's chosen values: {group_id, metric,
                                        params (parameter -> value), key (the group's
                                        [axis, value] pairs), arm}, written last, when its
                                        budget is spent
<study>/results/corrupt/<table>/<unit_id>.parquet.<UTC time>
                                        a result part that could not be read, moved aside by
                                        run/resume before its unit runs again (never deleted)
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "read_search_part",
    "TRIALS_SCHEMA",
    "EPOCHS_SCHEMA",
    "PRETRAIN_SCHEMA",
    "PREDICTIONS_SCHEMA",
    "SEARCH_SCHEMA",
    "predictions_path",
    "search_trial_path",
    "search_choice_path",
    "trial_path",
    "epochs_path",
    "pretrain_path",
    "checkpoint_path",
    "weights_path",
    "run_marker_path",
    "RESULT_TABLES",
    "LEASE_PATH",
    "corrupt_path",
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
        # Macro metrics average the classes scored on the test split: those with at least one
        # positive and one negative test record (study.training.metrics); how many were
        # scored is test_n_classes_scored, out of n_classes.
        ("test_macro_auroc", pa.float64()),
        ("test_macro_f1", pa.float64()),  # thresholds chosen per class on validation
        ("test_weighted_f1", pa.float64()),  # support-weighted, threshold 0.5 (Nguyen & Do)
        # The downstream task: multi_label, single_label (arg-max class) or per_sample (QRS).
        # The columns below are null where the task has no such number (see
        # study.training.evaluation for each rule).
        ("task", pa.string()),
        ("test_per_class_f1", pa.string()),  # JSON {class: F1}, every class of the label set
        ("n_classes", pa.int32()),  # classes of the label set (classification tasks)
        ("test_n_classes_scored", pa.int32()),  # of them, those the macro metrics average
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

#: The test-set predictions of one fine-tuning or from-scratch unit, one row per test
#: example, in the order of the test split (the same order for every unit on one prepared
#: dataset, so two units' rows pair by position; record_id and frame_start say so).
#: Schema metadata (bytes keys): b"classes" (JSON list, the columns of y_true/y_prob),
#: b"task" (plain text, the objective: multi_label, single_label or per_sample),
#: b"thresholds" (JSON: the decision rule chosen on validation, as the trials row's
#: decision_thresholds), b"fs" (JSON number: the sampling rate, per_sample tasks).
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("unit_id", pa.string()),
        ("record_id", pa.string()),
        ("patient_id", pa.string()),  # the bootstrap resamples patients (clusters of rows)
        ("frame_start", pa.int64()),  # frame datasets: first sample of the frame; else null
        ("y_true", pa.list_(pa.uint8())),  # classification: 0/1 per class; per_sample: null
        ("y_prob", pa.list_(pa.float32())),  # classification: probability per class
        ("qrs_reference", pa.list_(pa.int32())),  # per_sample: reference QRS positions
        ("qrs_detected", pa.list_(pa.int32())),  # per_sample: detected, at the val threshold
    ]
)

#: One finished trial of a hyperparameter search group (issue 11): one part per trial,
#: results/search/<group_id>/<number:05d>.parquet, holding exactly this one row.
SEARCH_SCHEMA = pa.schema(
    [
        ("group_id", pa.string()),  # study.sweep.search.SearchGroup.group_id
        ("number", pa.int32()),  # 0 .. trials-1: the trial's place in the group's budget
        ("params", pa.string()),  # JSON {parameter: value}, the sampled values
        ("state", pa.string()),  # "complete", "pruned" (stopped early) or "failed"
        ("metric", pa.string()),  # the validation metric searched, e.g. val_loss
        ("value", pa.float64()),  # the best value of it reached; null if no epoch ended
        ("values", pa.list_(pa.float64())),  # the metric after each epoch, epoch 1 first
        ("epochs", pa.int32()),  # epochs run
        ("seconds", pa.float64()),
        ("hardware", pa.string()),
        ("code_version", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)


def predictions_path(uid: str) -> str:
    return f"results/predictions/{uid}.parquet"


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


def search_trial_path(group_id: str, number: int) -> str:
    """Trial `number` of search group `group_id` (SEARCH_SCHEMA, one row)."""
    return f"results/search/{group_id}/{number:05d}.parquet"


def search_choice_path(group_id: str) -> str:
    """The chosen values of search group `group_id` (JSON), written once its budget is spent."""
    return f"results/search/{group_id}/chosen.json"


#: The result tables whose parts mark a unit done (one row per unit, named by its id), each
#: with its schema; `results/epochs` and `results/predictions` are written before them.
RESULT_TABLES = {"trials": TRIALS_SCHEMA, "pretrain": PRETRAIN_SCHEMA}

#: The driver lease (study.sweep.lease).
LEASE_PATH = "driver.json"


def corrupt_path(table: str, file_name: str, stamp: str) -> str:
    """Where an unreadable part of results/<table> is moved aside (`stamp`: UTC time)."""
    return f"results/corrupt/{table}/{file_name}.{stamp}"


def read_search_part(data: bytes) -> dict:
    """The one row of a search trial part (results/search/<group_id>/<number>.parquet),
    conformed to SEARCH_SCHEMA (params still JSON text).

    Raises:
        ValueError or pyarrow.ArrowException: the bytes are not such a part.
    """
    table = pq.read_table(pa.BufferReader(data))
    missing = [f.name for f in SEARCH_SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValueError(f"no column {', '.join(missing)}")
    if table.num_rows != 1:
        raise ValueError(f"{table.num_rows} rows, not exactly one")
    return table.select(SEARCH_SCHEMA.names).cast(SEARCH_SCHEMA).to_pylist()[0]
