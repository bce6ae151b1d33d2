"""`ferry deploy sagemaker`, `ferry endpoints` and `ferry invoke`: the control-plane
calls against moto's SageMaker server (a real HTTP server on loopback; it implements
Create/Describe/Delete for models, configs and endpoints, puts endpoints InService at
once and runs no model), the invoke path against a real ferry server's runtime API
(with and without `--auth`), and the Dockerfile's SageMaker contract."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.models import scale_model, write_model
from support.sagemaker_moto import seed_deploy_targets
from support.server import FerryProcess, free_port

from ferry.auth.keys import SIGV4, add_key
from ferry.cli import main

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
from botocore.stub import Stubber  # noqa: E402 - after the importorskip

from ferry.deploy import sagemaker as sm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
MODEL_URL = "s3://models-bucket/mlp/model.tar.gz"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        # What deploy's preflight checks: the archive in S3, ferry's image in ECR.
        seed_deploy_targets(url, [MODEL_URL], "ml.m5.xlarge")
        yield url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and no ~/.aws of the machine running the tests."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def ferry(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def control(moto_url: str):
    return boto3.client("sagemaker", endpoint_url=moto_url, region_name=REGION)


def deploy_args(name: str, moto_url: str, *extra: str) -> list[str]:
    return [
        "deploy", "sagemaker", name, "--model", MODEL_URL, "--instance-type", "ml.m5.xlarge",
        "--instances", "2", "--role", ROLE, "--region", REGION, "--endpoint-url", moto_url,
        "--poll-seconds", "0.05", *extra,
    ]  # fmt: skip


def test_deploy_creates_model_config_and_endpoint_and_waits(moto_url: str) -> None:
    code, out, err = ferry(*deploy_args("mlp-endpoint", moto_url, "--env", "LOG=1"))
    assert code == 0, err
    assert "creating endpoint mlp-endpoint" in err
    assert "InService" in err
    assert "ferry invoke mlp-endpoint --data" in out
    client = control(moto_url)
    endpoint = client.describe_endpoint(EndpointName="mlp-endpoint")
    assert endpoint["EndpointStatus"] == "InService"
    config = client.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InstanceType"] == "ml.m5.xlarge"
    assert variant["InitialInstanceCount"] == 2
    model = client.describe_model(ModelName=variant["ModelName"])
    container = model["PrimaryContainer"]
    assert container["ModelDataUrl"] == MODEL_URL
    assert container["Environment"] == {"FERRY_SAGEMAKER": "true", "LOG": "1"}
    # The default image: ferry in the caller's own ECR (moto's account).
    assert container["Image"].startswith("123456789012.dkr.ecr.us-east-1.amazonaws.com/ferry:")
    assert model["ExecutionRoleArn"] == ROLE


def test_deploy_gives_the_operators_consent_through_the_environment(moto_url: str) -> None:
    """`ferry serve --sagemaker` reads consent from FERRY_ALLOW_CODE / FERRY_ALLOW_PICKLE,
    never from the archive, so deploy is where the operator gives it."""
    extra = ("--allow-code", "*", "--allow-pickle", "b,a", "--allow-pickle", "c")
    code, _, err = ferry(*deploy_args("consent-endpoint", moto_url, *extra, "--no-wait"))
    assert code == 0, err
    client = control(moto_url)
    endpoint = client.describe_endpoint(EndpointName="consent-endpoint")
    config = client.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = client.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["Environment"] == {
        "FERRY_SAGEMAKER": "true",
        "FERRY_ALLOW_CODE": "*",
        "FERRY_ALLOW_PICKLE": "a,b,c",
    }
    code, _, err = ferry(*deploy_args("bad", moto_url, "--allow-code", "m*", "--no-wait"))
    assert code != 0 and "exact" in err


def test_a_multi_model_deploy_sets_mode_multi_model(moto_url: str) -> None:
    """`--multi-model`: the container definition's Mode, and SAGEMAKER_MULTI_MODEL for the
    container; `--allow-requirements` is the consent to pip-install at start-up."""
    extra = ("--multi-model", "--allow-requirements", "--no-wait")
    code, _, err = ferry(*deploy_args("mme-endpoint", moto_url, *extra))
    assert code == 0, err
    client = control(moto_url)
    endpoint = client.describe_endpoint(EndpointName="mme-endpoint")
    config = client.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = client.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    container = model["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["Environment"] == {
        "FERRY_SAGEMAKER": "true",
        "SAGEMAKER_MULTI_MODEL": "true",
        "FERRY_ALLOW_REQUIREMENTS": "true",
    }


def test_endpoints_list_describe_and_delete(moto_url: str) -> None:
    code, _, err = ferry(*deploy_args("to-delete", moto_url, "--image", "img:1", "--no-wait"))
    assert code == 0, err
    code, out, _ = ferry("endpoints", "list", "--region", REGION, "--endpoint-url", moto_url)
    assert code == 0 and "to-delete" in out and "InService" in out
    code, out, _ = ferry(
        "endpoints", "describe", "to-delete", "--region", REGION, "--endpoint-url", moto_url
    )
    assert code == 0
    assert "status     InService" in out
    assert "ml.m5.xlarge x 2" in out
    code, out, _ = ferry(
        "endpoints", "describe", "to-delete", "--json", "--region", REGION,
        "--endpoint-url", moto_url,
    )  # fmt: skip
    assert json.loads(out)["endpoint"]["EndpointName"] == "to-delete"
    config = control(moto_url).describe_endpoint(EndpointName="to-delete")["EndpointConfigName"]
    code, out, _ = ferry(
        "endpoints", "delete", "to-delete", "--yes", "--region", REGION,
        "--endpoint-url", moto_url,
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == [
        "deleted endpoint to-delete",
        f"deleted endpoint config {config}",
        f"deleted model {config}",
    ]
    code, _, err = ferry(
        "endpoints", "describe", "to-delete", "--region", REGION, "--endpoint-url", moto_url
    )
    assert code != 0 and "no endpoint to-delete" in err


def test_deploy_rejects_a_model_that_is_not_in_s3(moto_url: str) -> None:
    args = deploy_args("bad", moto_url)
    args[args.index("--model") + 1] = "models/mlp"
    code, _, err = ferry(*args)
    assert code != 0 and "s3://" in err


def test_a_second_deploy_updates_the_endpoint_to_a_new_config() -> None:
    # moto does not implement UpdateEndpoint, so this path is checked against botocore's
    # Stubber: the requests must validate against SageMaker's service model.
    client = boto3.client("sagemaker", region_name=REGION)
    spec = sm.DeploySpec("live", MODEL_URL, "ml.c5.large", 1, ROLE, "img:2")
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    name = "live-20250102-030405"
    with Stubber(client) as stub:
        stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:1:model/live"})
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/live"},
        )
        stub.add_response(
            "describe_endpoint",
            {
                "EndpointName": "live",
                "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/live",
                "EndpointConfigName": "live-old",
                "EndpointStatus": "InService",
                "CreationTime": now,
                "LastModifiedTime": now,
            },
        )
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/live"},
            {"EndpointName": "live", "EndpointConfigName": name},
        )
        result = sm.deploy(client, spec, now)
        stub.assert_no_pending_responses()
    assert result.updated and result.config_name == name


class _Statuses:
    """A control-plane client whose endpoint walks through given statuses."""

    def __init__(self, *statuses: str, reason: str = "") -> None:
        self.statuses = list(statuses)
        self.reason = reason

    def describe_endpoint(self, EndpointName: str) -> dict:  # boto3 keyword names
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"EndpointStatus": status, "FailureReason": self.reason}


def test_waiting_reports_every_status_and_stops_at_in_service() -> None:
    seen: list[str] = []
    sm.wait_in_service(
        _Statuses("Creating", "Creating", "InService"),
        "e",
        on_status=lambda status, _: seen.append(status),
        sleep=lambda _: None,
    )
    assert seen == ["Creating", "Creating", "InService"]


def test_a_failed_endpoint_is_reported_with_sagemakers_reason() -> None:
    client = _Statuses("Creating", "Failed", reason="The primary container did not pass /ping")
    with pytest.raises(sm.DeployError, match="Failed: The primary container did not pass"):
        sm.wait_in_service(client, "e", sleep=lambda _: None)


def test_resource_names_fit_sagemakers_limit() -> None:
    name = sm.resource_name("x" * 80, datetime(2025, 1, 1, tzinfo=UTC))
    assert len(name) == 63 and name.endswith("-20250101-000000")


@pytest.fixture(scope="module")
def ferry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FerryProcess, dict]]:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    keys = tmp_path_factory.mktemp("auth") / "keys.json"
    key = add_key(keys, SIGV4, "invoke")
    process = FerryProcess(
        [str(root), "--auth", str(keys)], tmp_path_factory.mktemp("logs") / "ferry.log"
    )
    try:
        process.wait_ready()
        yield process, {"AWS_ACCESS_KEY_ID": key.entry.id, "AWS_SECRET_ACCESS_KEY": key.secret}
    finally:
        process.stop()


def test_ferry_invoke_calls_a_ferry_servers_runtime_api(
    ferry_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, credentials = ferry_server
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    data = tmp_path / "request.json"
    data.write_text(json.dumps({"instances": [[1, 2, 3, 4]]}))
    code, out, err = ferry("invoke", "scale", "--data", str(data), "--endpoint-url", server.url)
    assert code == 0, err
    assert json.loads(out) == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    csv = tmp_path / "request.csv"
    csv.write_text("1,1,1,1\n")
    code, out, _ = ferry(
        "invoke", "scale", "--data", str(csv), "--content-type", "text/csv",
        "--endpoint-url", server.url,
    )  # fmt: skip
    assert json.loads(out)["predictions"] == [[2.0, 2.0, 2.0, 2.0]]


def test_ferry_invoke_reports_refusals_and_model_errors(
    ferry_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, credentials = ferry_server
    data = tmp_path / "request.json"
    data.write_text(json.dumps([[1, 2]]))
    code, _, err = ferry("invoke", "scale", "--data", str(data), "--endpoint-url", server.url)
    assert code != 0 and "UnrecognizedClientException" in err  # the "testing" key
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    code, _, err = ferry("invoke", "scale", "--data", str(data), "--endpoint-url", server.url)
    assert code != 0 and "ModelError" in err and "expects [-1, 4]" in err


@pytest.mark.parametrize(
    "verb",
    [
        ["deploy"],
        ["deploy", "sagemaker"],
        ["endpoints"],
        ["endpoints", "list"],
        ["endpoints", "describe"],
        ["endpoints", "delete"],
        ["invoke"],
    ],
)
def test_every_verb_answers_help(verb: list[str]) -> None:
    code, out, _ = ferry(*verb, "--help")
    assert code == 0 and "Usage:" in out


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuations joined."""
    lines, current = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            keyword, _, rest = current.partition(" ")
            lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


def test_the_dockerfile_meets_the_sagemaker_container_contract() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    # Only build arguments (of FROM's image) may come before FROM.
    assert set(keywords[: keywords.index("FROM")]) <= {"ARG"}
    assert set(keywords) <= {
        "ARG", "FROM", "LABEL", "ENV", "WORKDIR", "COPY", "RUN", "EXPOSE", "ENTRYPOINT", "CMD",
    }  # fmt: skip
    values = dict(instructions)
    # Exec form, so that SIGTERM reaches ferry; SageMaker appends `serve`.
    assert json.loads(values["ENTRYPOINT"]) == ["ferry"]
    assert json.loads(values["CMD"]) == ["serve"]
    assert "8080" in values["EXPOSE"].split()
    env = dict(item.split("=", 1) for item in shlex.split(values["ENV"]))
    assert env["FERRY_SAGEMAKER"] == "true"
    assert "accept-bind-to-port=true" in values["LABEL"]
    installs = [args for keyword, args in instructions if keyword == "RUN"]
    # Which extras: tests/deploy/test_sagemaker_image_install.py (it runs the install too).
    assert any("pip install" in args for args in installs)
    copied = [args.split()[0] for keyword, args in instructions if keyword == "COPY"]
    assert all((REPO / source).exists() for source in copied)
