"""Architecture registry: every model is `stem -> stages -> head` with freezing by stage.

Example:
    model = create_model("resnet1d18", in_channels=12, num_classes=5, base_width=16)
    model.freeze(2)  # stem and stages.0 frozen; the head always trains
    optimizer = torch.optim.AdamW(model.trainable_parameters())
"""

from __future__ import annotations

# Importing the architecture modules registers their variants.
from study.models import (  # noqa: F401
    alexnet2d,
    autoencoder,
    recurrent,
    resnet1d,
    resnet_v2,
    unet1d,
)
from study.models._base import ECGModel
from study.models._factory import create_model, list_models, model_info, model_revision

__all__ = ["create_model", "list_models", "ECGModel", "model_info", "model_revision"]
