"""The Kopf operator that runs ClipTrainingJobs in a cluster (installed as ``kubeclip.operator``)."""
