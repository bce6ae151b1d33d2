"""Push instead of poll: S3 event notifications from an SQS queue wake the watcher.

`ferry serve s3://... --s3_event_queue_url URL` long-polls the queue (`ReceiveMessage`,
20 s waits: one request per 20 s while nothing happens) that the bucket's event
notifications (`s3:ObjectCreated:*`, `s3:ObjectRemoved:*`) go to, directly or through
SNS. A message about a key under a watched prefix asks the watcher for a poll at once,
so a new version starts downloading within milliseconds of its upload instead of up to
one poll interval later. Polling goes on as before (at the usual interval, which can
now be long), because notifications may arrive late, twice, or not at all; the poll
re-lists the store, so a message only says "look now", never what to load.

Messages are deleted once read, whatever they say (test events, other prefixes), so a
queue shared with other consumers is not a good idea: give ferry its own queue. The
SQS endpoint is boto3's choice (AWS, or `$AWS_ENDPOINT_URL_SQS` / `$AWS_ENDPOINT_URL`);
the region comes from an AWS queue URL, else from boto3's configuration.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import unquote_plus

import boto3
import botocore.exceptions
import orjson
from botocore.config import Config

log = logging.getLogger(__name__)

WAIT_SECONDS = 20  # SQS's longest long poll
MAX_BACKOFF_SECONDS = 30.0
# Seconds a received message stays hidden from other receivers of the queue.
_VISIBILITY_SECONDS = 2
_AWS_QUEUE_HOST = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")


def queue_region(queue_url: str) -> str | None:
    """The region of an AWS queue URL (`https://sqs.eu-west-1.amazonaws.com/...`)."""
    match = _AWS_QUEUE_HOST.match(queue_url)
    return match.group(1) if match else None


def event_keys(body: str) -> list[tuple[str, str]]:
    """(bucket, key) of every S3 record in one SQS message body: an S3 event
    notification, or one delivered through SNS (the event is then the `Message`).
    Anything else (S3's `s3:TestEvent`, foreign JSON, not JSON) has none."""
    try:
        event = orjson.loads(body)
        if isinstance(event, dict) and isinstance(event.get("Message"), str):
            event = orjson.loads(event["Message"])  # SNS envelope
    except orjson.JSONDecodeError:
        return []
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        return []
    found = []
    for record in event["Records"]:
        try:
            s3 = record["s3"]
            # Keys in event notifications are URL-encoded (spaces as "+").
            found.append((s3["bucket"]["name"], unquote_plus(s3["object"]["key"])))
        except (KeyError, TypeError):
            continue
    return found


class S3EventListener:
    """Reads the queue on its own thread and calls `on_change` for relevant events.

    `watched` returns the (bucket, key prefix) pairs being served now (it changes
    as models come and go); a record under any of them is relevant."""

    def __init__(
        self,
        queue_url: str,
        watched: Callable[[], Iterable[tuple[str, str]]],
        on_change: Callable[[], None],
        client=None,
        wait_seconds: int = WAIT_SECONDS,
    ) -> None:
        self.queue_url = queue_url
        self.watched = watched
        self.on_change = on_change
        self.wait_seconds = wait_seconds
        self.client = client if client is not None else _sqs_client(queue_url, wait_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="s3-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop at the end of the current long poll; a daemon thread, so not waited out."""
        self._stop.set()
        self._thread.join(timeout)

    def read_once(self) -> bool:
        """One long poll; True when it found a relevant event (and asked for a poll)."""
        # A short visibility timeout: the messages are deleted at once, and a poll left
        # pending by a stopped replica would otherwise hide the next event for the
        # queue's default 30 s (measured in the cluster tests: 31 s instead of 0.4 s).
        reply = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=_VISIBILITY_SECONDS,
        )
        messages = reply.get("Messages", [])
        if not messages:
            return False
        watched = tuple(self.watched())
        keys = [found for m in messages for found in event_keys(m.get("Body", ""))]
        relevant = any(
            bucket == b and key.startswith(prefix) for bucket, key in keys for b, prefix in watched
        )
        if relevant:
            self.on_change()  # first: the poll should not wait for the delete
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return relevant

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.read_once()
                failures = 0
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                failures += 1
                delay = min(2.0 ** (failures - 1), MAX_BACKOFF_SECONDS)
                if failures == 1 or delay == MAX_BACKOFF_SECONDS:
                    log.error(
                        "cannot read S3 events from %s (polling goes on; next try in %.0fs): %s",
                        self.queue_url,
                        delay,
                        exc,
                    )
                self._stop.wait(delay)
            except Exception:  # the listener must outlive anything the queue sends
                log.exception("S3 event listener")
                self._stop.wait(1.0)


def _sqs_client(queue_url: str, wait_seconds: int):
    # The read timeout must outlast the long poll.
    config = Config(read_timeout=wait_seconds + 10, retries={"max_attempts": 3})
    session = boto3.session.Session()
    region = queue_region(queue_url) or session.region_name or "us-east-1"
    return session.client("sqs", region_name=region, config=config)
