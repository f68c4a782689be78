"""syno.models: model zoo, placeholders for replaceable layers, MAC/parameter profiling."""

from .placeholder import (MIN_PLACEHOLDER_SIZE, ConvPlaceholder, LinearPlaceholder, Placeholder, PooledPlaceholder,
                          build_mappings, fill_placeholders, model_mappings, placeholders,
                          remove_unsatisfied_placeholders, reset_placeholders)
from .profile import FillReport, ModelProfile, profile, profile_fill
from .zoo import MODEL_NAMES, VISION_MODEL_NAMES, build_model, input_spec, sample_input

__all__ = [
    "MIN_PLACEHOLDER_SIZE", "ConvPlaceholder", "LinearPlaceholder", "Placeholder", "PooledPlaceholder",
    "build_mappings", "fill_placeholders", "model_mappings", "placeholders", "remove_unsatisfied_placeholders",
    "reset_placeholders", "FillReport", "ModelProfile", "profile", "profile_fill", "MODEL_NAMES",
    "VISION_MODEL_NAMES", "build_model", "input_spec", "sample_input",
]
