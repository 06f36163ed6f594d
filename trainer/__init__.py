"""The fine-tuning program (installed as ``kubeclip.trainer``).

It reads one typed config (``kubeclip.trainer.config``) and never imports Kopf, so it
runs the same way on a laptop and in a pod. It loads a Kubernetes client only in a pod
whose environment names a progress ConfigMap, to write that one object
(``kubeclip.trainer.progress_configmap``).
"""
