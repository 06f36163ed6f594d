# The kubeclip image: the trainer (default entry point), the operator and the CLI.
#
#   docker build -t kubeclip:0.1.0 .
#
# No dataset, model weights or test data are copied in: the trainer downloads
# them at run time from the locations in the job.
FROM python:3.11-slim

# libgomp is needed by torch's CPU kernels; the CUDA runtime comes with the torch wheel.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin kubeclip
WORKDIR /opt/kubeclip
COPY pyproject.toml README.md ./
COPY kubeclip ./kubeclip
COPY operator ./operator
COPY trainer ./trainer
RUN pip install --no-cache-dir .

# Pods run with a read-only root filesystem; caches go to a writable volume.
ENV HOME=/home/kubeclip \
    HF_HOME=/home/kubeclip/.cache/huggingface \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    OMP_WAIT_POLICY=PASSIVE
USER 1000:1000
ENTRYPOINT ["python", "-m", "kubeclip.trainer"]
CMD ["--help"]
