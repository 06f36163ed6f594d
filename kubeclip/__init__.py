"""kubeclip: fine-tune CLIP-style image-text dual encoders on Kubernetes or on a laptop.

Layers, each depending only on those listed before it:

- ``kubeclip.api``: the ``ClipTrainingJob`` spec models, defaults and validation.
- ``kubeclip.trainer`` (folder ``trainer/``): the fine-tuning program; it reads only
  its own config and never imports a Kubernetes client.
- ``kubeclip.builders``: pure functions from a validated spec to the trainer's
  config (and, for a cluster, to Kubernetes manifests).
- ``kubeclip.operator`` (folder ``operator/``): the Kopf operator.
- ``kubeclip.cli``: the ``kubeclip`` command.
"""

__version__ = "0.1.0"
