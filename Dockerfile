# ferry as a SageMaker inference container (and a plain ferry server elsewhere).
#
# The default image serves what SageMaker's TensorFlow Serving container serves (TF1 and
# TF2 SavedModels, Keras) plus ONNX. Variants (docs/sagemaker.md says when to use which):
#
#   docker build -t ferry:0.1.0 .                                   TensorFlow (CPU) + ONNX
#   docker build --build-arg FERRY_EXTRAS=aws -t ferry:0.1.0-onnx .           ONNX only, slim
#   docker build --build-arg FERRY_EXTRAS=tensorflow,torch,aws \
#       --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
#       -t ferry:0.1.0-torch .                                      + PyTorch (CPU build)
#   docker build -f Dockerfile.gpu -t ferry:0.1.0-gpu .             CUDA: TensorFlow GPU,
#                                                                   onnxruntime-gpu, TensorRT
#   docker run -p 8080:8080 -v $PWD/models:/opt/ml/model:ro ferry:0.1.0 serve
#
# SageMaker starts the image as `docker run IMAGE serve`, with the model archive
# extracted into /opt/ml/model (read-only): ENTRYPOINT ferry + FERRY_SAGEMAKER=true makes
# that `ferry serve` in SageMaker mode (/ping and /invocations on 8080, or on
# $SAGEMAKER_BIND_TO_PORT; gRPC on the first port of $SAGEMAKER_SAFE_PORT_RANGE). ferry
# writes nothing under /opt/ml/model: conversions go to its cache folder. Push the image
# to ECR for `ferry deploy sagemaker` (see docs/sagemaker.md).
#
# tests/deploy/test_sagemaker_image_install.py runs this file's `pip install` steps in a
# fresh virtual environment and serves a TF1 SavedModel from it, so keep them plain
# `RUN pip install ...` lines (ARG defaults are substituted).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# tensorflow: TF SavedModels and Keras; ONNX is in every image (ferry's own dependency);
# aws: boto3 for s3:// model paths and SigV4 (`ferry serve --auth`).
ARG FERRY_EXTRAS=tensorflow,aws
# An extra package index (the PyTorch CPU wheels for the torch variant).
ARG PIP_EXTRA_INDEX_URL

# SageMaker may choose the port (multi-container endpoints): ferry honours it.
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    FERRY_SAGEMAKER=true

WORKDIR /opt/ferry
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[${FERRY_EXTRAS}]" && rm -rf /root/.cache

EXPOSE 8080
# Exec form, so SIGTERM reaches ferry (it drains in-flight requests, then exits 0).
ENTRYPOINT ["ferry"]
CMD ["serve"]
