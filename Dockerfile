# ferry as a SageMaker inference container (and a plain ferry server elsewhere).
#
#   docker build -t ferry:0.1.0 .
#   docker run -p 8080:8080 -v $PWD/models:/opt/ml/model ferry:0.1.0 serve
#
# SageMaker starts the image as `docker run IMAGE serve`, with the model archive
# extracted into /opt/ml/model: ENTRYPOINT ferry + FERRY_SAGEMAKER=true makes that
# `ferry serve` in SageMaker mode (/ping and /invocations on 8080, or on
# $SAGEMAKER_BIND_TO_PORT). Push it to ECR for `ferry deploy sagemaker` (see README).
FROM python:3.11-slim

# SageMaker may choose the port (multi-container endpoints): ferry honours it.
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FERRY_SAGEMAKER=true

WORKDIR /opt/ferry
COPY pyproject.toml README.md ./
COPY src ./src
# aws: boto3 for s3:// model paths and SigV4 (`ferry serve --auth`).
RUN pip install ".[aws]" && rm -rf /root/.cache

EXPOSE 8080
# Exec form, so SIGTERM reaches ferry (it drains in-flight requests, then exits 0).
ENTRYPOINT ["ferry"]
CMD ["serve"]
