# medseg in a container: `medseg` is the entrypoint, data and results live in mounted folders.
#
#   docker build -t medseg .                                        # CPU (python:3.11-slim, CPU-only torch)
#   docker build -t medseg:cuda --build-arg BASE=cuda .             # NVIDIA GPUs (CUDA runtime, CUDA torch)
#   docker run --rm -v ~/Downloads/sunnybrook:/data:ro -v "$PWD/studies":/work medseg \
#       study sunnybrook-lv --data /data --out /work/lv --quick
#   docker run --rm --gpus all -v …:/data:ro -v …:/work medseg:cuda study gi-tract --data /data --out /work/gi
#
# Nothing is downloaded at run time: pretrained weights are mounted files (--set model.params.pretrained=/weights/…).
ARG BASE=cpu
# the CUDA base and the torch wheel index that matches it (change both together)
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG CUDA_TORCH_INDEX=https://download.pytorch.org/whl/cu128

# ---- base images: one with Python 3.11 for each device family
FROM python:3.11-slim AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

# hadolint ignore=DL3006
FROM ${CUDA_IMAGE} AS base-cuda
ARG CUDA_TORCH_INDEX
ENV TORCH_INDEX=${CUDA_TORCH_INDEX}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /usr/bin/python3.11 /usr/local/bin/python

# ---- the image
# hadolint ignore=DL3006
FROM base-${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MEDSEG_CACHE=/work/.cache/medseg \
    MPLBACKEND=Agg \
    VIRTUAL_ENV=/opt/medseg \
    PATH=/opt/medseg/bin:$PATH
RUN python -m venv /opt/medseg
WORKDIR /src
# the package and what it ships (recipes are inside src/medseg/configs)
COPY pyproject.toml README.md ./
COPY src ./src
# torch from the index of the base's device family, then medseg (this folder: pinned by its pyproject.toml)
# hadolint ignore=DL3013
RUN pip install --index-url "$TORCH_INDEX" torch==2.14.1 torchvision==0.29.1 \
    && pip install ".[dicom,onnx]" \
    && useradd --create-home --uid 1000 medseg \
    && mkdir -p /work \
    && chown medseg /work
USER 1000
WORKDIR /work
VOLUME ["/work"]
ENTRYPOINT ["medseg"]
CMD ["--help"]
