"""Recommended settings per base model, and the resolution of a spec into final values.

A user who picks a base model gets settings that suit it; any field set explicitly
in the spec wins. ``resolve_settings`` is the one place that decides a value, so the
trainer, the status and the model card all show the same numbers.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import TypeVar

from kubeclip.api.job import ClipTrainingJob, ClipTrainingJobSpec, ModelPreset

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """Defaults for one family of text encoders."""

    family: str
    #: Usable positions of the text encoder; a longer prompt max length is rejected.
    max_positions: int | None
    prompt_max_length: int
    learning_rate: str
    train_batch_size: int
    epochs: int
    projection_dim: int


# RoBERTa and BERT have 512 usable positions; CLIP's text tower has 77. A learning rate
# of 1e-5 is the usual full fine-tuning rate for pretrained encoders of this size. The
# small preset trains from random weights, which needs a much higher rate to move at all.
_RECOMMENDATIONS = {
    "roberta": Recommendation("roberta", 512, 128, "1e-5", 8, 3, 512),
    "bert": Recommendation("bert", 512, 128, "1e-5", 8, 3, 512),
    "clip": Recommendation("clip", 77, 77, "1e-5", 8, 3, 512),
    "other": Recommendation("other", None, 128, "1e-5", 8, 3, 512),
    "small": Recommendation("small", 128, 64, "5e-4", 32, 30, 128),
}


def recommend_for(spec: ClipTrainingJobSpec) -> Recommendation:
    """Return the recommended settings for the spec's base model (or its preset)."""
    if spec.model.preset == ModelPreset.SMALL:
        return _RECOMMENDATIONS["small"]
    base = spec.model.base_model.lower().rsplit("/", 1)[-1]
    for family in ("roberta", "clip", "bert"):
        if family in base:
            return _RECOMMENDATIONS[family]
    return _RECOMMENDATIONS["other"]


@dataclasses.dataclass(frozen=True)
class ResolvedSettings:
    """The final value of every model-dependent setting, and where each came from."""

    model_family: str
    prompt_max_length: int
    learning_rate: str
    train_batch_size: int
    epochs: int
    projection_dim: int
    #: None means "5% of all steps", decided once the dataset size is known.
    warmup_steps: int | None
    #: Names (API spelling) of the settings that came from the recommendation table.
    recommended_fields: tuple[str, ...]

    def to_status(self) -> dict[str, object]:
        """Render the values with API field names, as the job status shows them."""
        return {
            "modelFamily": self.model_family,
            "promptMaxLength": self.prompt_max_length,
            "learningRate": self.learning_rate,
            "perDeviceTrainBatchSize": self.train_batch_size,
            "epochs": self.epochs,
            "projectionDim": self.projection_dim,
            "warmupSteps": self.warmup_steps,
            "recommendedFields": list(self.recommended_fields),
        }


def resolve_settings(job: ClipTrainingJob) -> ResolvedSettings:
    """Fill every unset model-dependent field from the recommendation for the base model.

    Raises:
        ValueError: the prompt max length exceeds the text encoder's known position limit.
    """
    spec = job.spec
    recommendation = recommend_for(spec)
    explicit = {
        "promptMaxLength": spec.dataset.prompt_max_length,
        "learningRate": spec.training.learning_rate,
        "perDeviceTrainBatchSize": spec.training.per_device_train_batch_size,
        "epochs": spec.training.epochs,
        "projectionDim": spec.model.projection_dim,
    }
    recommended = tuple(name for name, value in explicit.items() if value is None)
    settings = ResolvedSettings(
        model_family=recommendation.family,
        prompt_max_length=_pick(spec.dataset.prompt_max_length, recommendation.prompt_max_length),
        learning_rate=_pick(spec.training.learning_rate, recommendation.learning_rate),
        train_batch_size=_pick(spec.training.per_device_train_batch_size, recommendation.train_batch_size),
        epochs=_pick(spec.training.epochs, recommendation.epochs),
        projection_dim=_pick(spec.model.projection_dim, recommendation.projection_dim),
        warmup_steps=spec.training.warmup_steps,
        recommended_fields=recommended,
    )
    _check_prompt_length(settings, recommendation, spec.model.base_model)
    _check_positive_decimal("learningRate", settings.learning_rate)
    return settings


def _pick(explicit: _T | None, recommended: _T) -> _T:
    return recommended if explicit is None else explicit


def _check_prompt_length(settings: ResolvedSettings, recommendation: Recommendation, base_model: str) -> None:
    limit = recommendation.max_positions
    if limit is not None and settings.prompt_max_length > limit:
        raise ValueError(
            f"spec.dataset.promptMaxLength is {settings.prompt_max_length}, but the text encoder {base_model!r} "
            f"({recommendation.family}) holds at most {limit} positions; set promptMaxLength to {limit} or less"
        )


def _check_positive_decimal(field: str, value: str) -> None:
    if Decimal(value) <= 0:
        raise ValueError(f"spec.training.{field} must be greater than 0, got {value!r}")
