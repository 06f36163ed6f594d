"""The fine-tuning program (installed as ``kubeclip.trainer``).

It reads one typed config (``kubeclip.trainer.config``), never imports Kopf or a
Kubernetes client, and so runs the same way on a laptop and in a pod.
"""
