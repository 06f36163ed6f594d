"""API types of kubeclip: the ClipTrainingJob spec, its defaults and its validation.

This package depends on nothing else in the project.
"""

from kubeclip.api.job import API_VERSION, KIND, ClipTrainingJob, ClipTrainingJobSpec
from kubeclip.api.loading import load_job_file
from kubeclip.api.recommendations import ResolvedSettings, resolve_settings

__all__ = ["API_VERSION", "KIND", "ClipTrainingJob", "ClipTrainingJobSpec", "ResolvedSettings", "load_job_file", "resolve_settings"]
