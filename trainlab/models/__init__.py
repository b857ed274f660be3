"""Models picked by name (`model.name`): mlp, cnn, resnet18/34/50, vit_tiny/small/base.

Importing this package imports every model module so each registers its factories.
"""

from trainlab.models import cnn, mlp, resnet, vit  # noqa: F401  (registers the models)
from trainlab.models.registry import ImageSpec, build_model, count_params, list_models

__all__ = ["ImageSpec", "build_model", "count_params", "list_models"]
