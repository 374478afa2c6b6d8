"""Golden test: the state-dict keys and shapes of every registered model must not move.

`golden_state_dicts.json` was recorded from the factory functions before the variant-table
refactor. A pretrained checkpoint loads only into the same keys and shapes, so a change here
breaks every stored checkpoint: make it on purpose, with a migration, and re-record the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from study.models import create_model, list_models

GOLDEN = json.loads((Path(__file__).parent / "golden_state_dicts.json").read_text())
CASES = GOLDEN["models"]


def test_every_registered_model_is_pinned() -> None:
    assert sorted({case["name"] for case in CASES.values()}) == list_models()


@pytest.mark.parametrize("key", list(CASES))
def test_state_dict_keys_and_shapes_are_unchanged(key: str) -> None:
    case = CASES[key]
    with torch.device("meta"):  # shapes only, no storage
        model = create_model(case["name"], **GOLDEN["sizes"], **case["options"])
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == case["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == case["n_parameters"]
