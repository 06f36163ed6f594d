"""Read datasets and read and write checkpoints and models on local disks, S3, GCS and HTTP(S)."""
