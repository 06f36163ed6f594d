"""Pure functions from a validated ClipTrainingJob to what runs it: the trainer's config
(and, in a cluster, the Kubernetes manifests). No API calls, no clock, no randomness."""
