"""`ferry serve` settings from `--config FILE` and FERRY_* variables: the command line
beats the environment, which beats the file, which beats the default
(docs/configuration.md). Watched through real servers: `--max_request_bytes` decides
which request bodies get HTTP 413."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import last_line, run_ferry
from support.models import scale_model, write_model

# Three limits, one per source, far enough apart that a body between two tells them apart.
FILE_LIMIT, ENV_LIMIT, FLAG_LIMIT = 4_000, 6_000, 8_000


@pytest.fixture
def root(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    write_model(scale_model(2.0), models / "scale", 1)
    return models


def _status_for(server, size: int) -> int:
    """The status of a valid predict body padded with spaces to `size` bytes."""
    body = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]})
    padded = body + " " * (size - len(body))
    return server.post(
        "/v1/models/scale:predict",
        data=padded.encode(),
        headers={"Content-Type": "application/json"},
    ).status_code


def _limit_between(server, low: int, high: int) -> None:
    """The server's body limit is in [low, high): a body of `low` is served, `high` is 413."""
    assert _status_for(server, low) == 200
    assert _status_for(server, high) == 413


def test_each_source_wins_over_the_ones_below_it(root: Path, tmp_path: Path, start_server):
    config = tmp_path / "ferry.toml"
    config.write_text(f'root = "{root}"\nmax_request_bytes = {FILE_LIMIT}\n')

    from_file = start_server("--config", str(config))
    _limit_between(from_file, FILE_LIMIT - 500, FILE_LIMIT + 500)

    env = {"FERRY_MAX_REQUEST_BYTES": str(ENV_LIMIT)}
    from_env = start_server("--config", str(config), env=env)
    _limit_between(from_env, ENV_LIMIT - 500, ENV_LIMIT + 500)

    flag = ("--config", str(config), "--max_request_bytes", str(FLAG_LIMIT))
    from_flag = start_server(*flag, env=env)
    _limit_between(from_flag, FLAG_LIMIT - 500, FLAG_LIMIT + 500)


def test_the_config_file_may_come_from_the_environment_and_be_yaml(
    root: Path, tmp_path: Path, start_server
) -> None:
    config = tmp_path / "ferry.yaml"
    config.write_text(f"root: {root}\nmax-request-bytes: {FILE_LIMIT}\n")
    server = start_server(env={"FERRY_CONFIG": str(config)})
    _limit_between(server, FILE_LIMIT - 500, FILE_LIMIT + 500)


def test_unknown_keys_are_an_error_naming_them(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "ferry.toml"
    config.write_text(f'root = "{root}"\nrest_port = 1\nmax_request_byte = 2\n')
    done = run_ferry("serve", "--config", str(config))
    assert done.returncode == 2
    assert last_line(done.stderr) == (
        f"Error: Invalid value for '--config': {config}: unknown setting(s) "
        "max_request_byte, rest_port (keys are `ferry serve` flag names without the "
        "dashes; see docs/configuration.md)"
    )


def test_consent_to_run_code_comes_from_the_command_line_only(root: Path, tmp_path: Path):
    config = tmp_path / "ferry.toml"
    config.write_text(f'root = "{root}"\nallow_code = ["*"]\n')
    done = run_ferry("serve", "--config", str(config))
    assert done.returncode == 2
    assert last_line(done.stderr) == (
        f"Error: Invalid value for '--config': {config}: allow_code: consent to run code "
        "is given on the command line only"
    )


def test_a_value_from_the_environment_is_checked_as_the_flag_is(root: Path) -> None:
    done = run_ferry("serve", str(root), env={"FERRY_MAX_HEADER_COUNT": "0"})
    assert done.returncode == 2
    assert "Invalid value for '--max_header_count'" in last_line(done.stderr)
    assert "0 is not in the range x>=1" in last_line(done.stderr)
