"""S3 event notifications through SQS wake the watcher: message parsing, the listener
against moto's real S3 -> SQS delivery, and `ferry serve --s3_event_queue_url` serving
an uploaded version long before its next poll."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import pytest
from support.models import scale_model, write_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

from ferry.repository.s3_events import S3EventListener, event_keys, queue_region

BUCKET = "models"


def s3_event(bucket: str, key: str) -> dict:
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 3}},
            }
        ]
    }


def test_s3_records_are_read_directly_or_through_sns() -> None:
    direct = json.dumps(s3_event("models", "m/2/model.onnx"))
    assert event_keys(direct) == [("models", "m/2/model.onnx")]
    through_sns = json.dumps({"Type": "Notification", "Message": direct})
    assert event_keys(through_sns) == [("models", "m/2/model.onnx")]
    encoded = json.dumps(s3_event("models", "my+model/2/saved%28a%29.pb"))
    assert event_keys(encoded) == [("models", "my model/2/saved(a).pb")]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "models"}),
        "not json",
        json.dumps([1, 2]),
        json.dumps({"Records": [{"eventSource": "aws:dynamodb"}]}),
    ],
)
def test_other_messages_name_no_keys(body: str) -> None:
    assert event_keys(body) == []


def test_the_region_comes_from_an_aws_queue_url() -> None:
    assert queue_region("https://sqs.eu-west-1.amazonaws.com/123456789012/ferry") == "eu-west-1"
    assert queue_region("http://127.0.0.1:5000/123456789012/ferry") is None


def notified_queue(store: MotoS3, name: str = "ferry-events") -> tuple[object, str]:
    """An SQS queue that receives the bucket's ObjectCreated/ObjectRemoved events."""
    sqs = boto3.client("sqs", endpoint_url=store.endpoint_url, region_name="us-east-1")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    store.client.create_bucket(Bucket=BUCKET)
    store.client.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    return sqs, url


def drain(sqs, url: str) -> None:
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_an_upload_under_a_watched_prefix_asks_for_a_poll(moto_s3: MotoS3) -> None:  # noqa: F811
    sqs, url = notified_queue(moto_s3)
    drain(sqs, url)  # the configuration's test event
    polls: list[float] = []
    listener = S3EventListener(
        url, lambda: [(BUCKET, "root/m/")], lambda: polls.append(time.time()), sqs, 1
    )
    moto_s3.client.put_object(Bucket=BUCKET, Key="elsewhere/1/model.onnx", Body=b"x")
    assert listener.read_once() is False
    assert polls == []
    moto_s3.client.put_object(Bucket=BUCKET, Key="root/m/2/model.onnx", Body=b"x")
    assert listener.read_once() is True
    assert len(polls) == 1
    # Everything read was deleted: nothing is left to wake the watcher twice.
    assert listener.read_once() is False
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_serve_with_an_event_queue_loads_an_upload_before_the_next_poll(
    moto_s3: MotoS3,  # noqa: F811
    start_server,
    tmp_path: Path,
) -> None:
    _, url = notified_queue(moto_s3)
    for version in (1, 2):
        write_model(scale_model(float(version)), tmp_path / f"upload-{version}", version)
    moto_s3.upload_folder(tmp_path / "upload-1", BUCKET, "root/m")
    server = start_server(
        "s3://models/root",
        "--file_system_poll_wait_seconds", "3600",  # polls: at start-up only, in this test
        "--version_settle_seconds", "0.2",
        "--s3_event_queue_url", url,
        "--model_cache_dir", str(tmp_path / "cache"),
        env=moto_s3.env,
    )  # fmt: skip
    server.wait_version("m", 1)
    time.sleep(1.0)  # past the start-up poll
    moto_s3.upload_folder(tmp_path / "upload-2", BUCKET, "root/m")
    server.wait_version("m", 2, timeout=15)
    response = server.predict("m", {"instances": [[1.0, 1.0, 1.0, 1.0]]})
    assert response.json()["predictions"][0][0] == 2.0
    assert "Traceback" not in server.log()
