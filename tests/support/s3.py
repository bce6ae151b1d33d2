"""A real S3-compatible server for tests: moto's server mode on a free loopback port.

The server runs in the test process (`ThreadedMotoServer`); its buckets live in
moto's in-process state, so `stop()` then `start()` on the same port is a store
that went away and came back with its content.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from support.server import free_port, wait_until

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoS3:
    """moto's S3 on 127.0.0.1:`port`, with a boto3 client pointed at it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    @property
    def env(self) -> dict[str, str]:
        """Environment for a ferry process: credentials and the endpoint (boto3 reads both)."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url}

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        wait_until(
            lambda: requests.get(self.endpoint_url + "/moto-api/", timeout=1).ok,
            10,
            message="moto server",
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def notified_queue(self, bucket: str, name: str = "ferry-events") -> str:
        """Create `bucket` and an SQS queue that receives its ObjectCreated/ObjectRemoved
        events (moto delivers them); returns the queue's URL (`--s3_event_queue_url`)."""
        sqs = boto3.client("sqs", endpoint_url=self.endpoint_url, region_name="us-east-1")
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        self.client.create_bucket(Bucket=bucket)
        self.client.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": attributes["Attributes"]["QueueArn"],
                        "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    }
                ]
            },
        )
        return url

    def upload_folder(self, folder: Path, bucket: str, prefix: str) -> None:
        """Upload every file under `folder` to `s3://bucket/prefix/<relative path>`."""
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}".lstrip("/")
            self.client.upload_file(str(path), bucket, key)


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    """A running moto S3 server; this process's boto3 credentials point at it too."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    store = MotoS3()
    store.start()
    requests.post(store.endpoint_url + "/moto-api/reset", timeout=5)  # buckets of earlier tests
    monkeypatch.setenv("AWS_ENDPOINT_URL", store.endpoint_url)
    yield store
    store.stop()
