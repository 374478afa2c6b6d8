"""Golden test: the state-dict keys and shapes of every registered model must not move.

`golden_state_dicts.json` was recorded from the factory functions before the variant-table
refactor. A pretrained checkpoint loads only into the same keys and shapes, so a change here
breaks every stored checkpoint: make it on purpose, with a migration, and re-record only the
entries that were meant to change:

    .venv/bin/python -m tests.models.test_golden_state_dicts resnet1d50 resnet1d101

then diff the file against the previous version (git diff) to see that nothing else moved.
Re-recorded on purpose: resnet1d18, resnet1d50 and resnet1d101 when their hidden layer
became Linear(F, embedding_size=512), the authors' head (at these small widths F < 512, so
resnet1d18's entry moved too).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from study.models import create_model, list_models

PATH = Path(__file__).parent / "golden_state_dicts.json"
GOLDEN = json.loads(PATH.read_text())
CASES = GOLDEN["models"]


def _record(case: dict) -> dict:
    """The keys, shapes and parameter count of `case`'s model as the code builds it now."""
    with torch.device("meta"):  # shapes only, no storage
        model = create_model(case["name"], **GOLDEN["sizes"], **case["options"])
    return {
        **case,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
    }


def _dumps(golden: dict) -> str:
    """The file's layout: indent 1, one [key, shape] pair per line (a diff shows a key)."""
    pairs: list[list] = []
    out = copy.deepcopy(golden)
    for case in out["models"].values():
        pairs.extend(case["state_dict"])
        first = len(pairs) - len(case["state_dict"])
        case["state_dict"] = [f"@@{first + i}@@" for i in range(len(case["state_dict"]))]
    text = json.dumps(out, indent=1)
    for i, pair in enumerate(pairs):
        text = text.replace(f'"@@{i}@@"', json.dumps(pair), 1)
    return text + "\n"


def rerecord(keys: list[str]) -> None:
    """Re-record the entries `keys` of the golden file (every other entry is kept as is).

    Raises:
        KeyError: a key that is not an entry of the file.
    """
    unknown = sorted(set(keys) - set(CASES))
    if unknown:
        raise KeyError(f"not in {PATH.name}: {unknown}; entries: {', '.join(CASES)}")
    golden = copy.deepcopy(GOLDEN)
    for key in keys:
        golden["models"][key] = _record(CASES[key])
    PATH.write_text(_dumps(golden))


def test_the_writer_keeps_the_files_layout() -> None:
    assert _dumps(GOLDEN) == PATH.read_text()


def test_every_registered_model_is_pinned() -> None:
    assert sorted({case["name"] for case in CASES.values()}) == list_models()


@pytest.mark.parametrize("key", list(CASES))
def test_state_dict_keys_and_shapes_are_unchanged(key: str) -> None:
    case = CASES[key]
    got = _record(case)
    assert got["state_dict"] == case["state_dict"]
    assert got["n_parameters"] == case["n_parameters"]


if __name__ == "__main__":
    rerecord(sys.argv[1:])
