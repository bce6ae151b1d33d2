"""`ferry serve` settings from a config file and from FERRY_* environment variables.

Precedence, highest first: the command line, the environment, the config file, the
flag's default (docs/configuration.md). click already orders a flag's sources that way
(command line > `envvar` > the context's `default_map` > default), so the file becomes
the context's default map and each flag gets its variable; every flag's own type and
range checks then apply whichever source its value came from.

The file is TOML (`ferry.toml`-style, as ferry's per-model files) or YAML (`.yaml`/
`.yml`, as Kubernetes ConfigMaps tend to be): a flat table of flag names, either
spelling, without the dashes. An unknown key is an error naming it, so a typo cannot
silently leave a limit at its default.

Consent to run a model's code (`--allow_code`, `--allow_pickle`, `--allow_requirements`)
is taken from the command line only: it is the operator's statement at launch, and
`FERRY_ALLOW_CODE`-style variables already mean "SageMaker's deployer says so" in
`--sagemaker` mode, where they keep that meaning.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from ferry.protocols.sagemaker_requirements import REQUIREMENTS_FLAG

ENV_PREFIX = "FERRY_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
# Flags taken from the command line alone (see the module docstring).
COMMAND_LINE_ONLY = frozenset({"allow_code", "allow_pickle", REQUIREMENTS_FLAG.lstrip("-")})
# Where a flag's variable is not FERRY_<FLAG> (see environment_variable).
_ENV_NAMES = {"port": "grpc_port"}
# Never from a file or a variable: they act at once instead of setting something.
_ACTIONS = frozenset({"help", "version", "config"})


def environment_variable(param: click.Parameter) -> str:
    """`FERRY_` + the flag's name in capitals: FERRY_REST_API_PORT, FERRY_AUTH, FERRY_ROOT.
    `--port` is FERRY_GRPC_PORT: Kubernetes sets FERRY_PORT=tcp://... in every pod of a
    namespace with a Service named ferry, which must not become the gRPC port."""
    longs = [opt for opt in getattr(param, "opts", ()) if opt.startswith("--")]
    flag = longs[0][2:].replace("-", "_") if longs else (param.name or "")
    return ENV_PREFIX + _ENV_NAMES.get(flag, flag).upper()


def configurable(command: click.Command) -> dict[str, click.Parameter]:
    """The parameters of `command` a file or variable may set, by parameter name."""
    return {
        param.name: param
        for param in command.params
        if param.name
        and param.name not in _ACTIONS
        and param.name not in COMMAND_LINE_ONLY
        and not param.is_eager
    }


def read_environment(command: click.Command) -> None:
    """Give each configurable parameter of `command` its FERRY_* variable (a parameter
    that already has one, as --sagemaker has FERRY_SAGEMAKER, keeps it)."""
    for param in configurable(command).values():
        if not param.envvar:
            param.envvar = environment_variable(param)


def _key_names(command: click.Command) -> dict[str, str]:
    """Every accepted key (flag names, both spellings, and parameter names) -> name."""
    names: dict[str, str] = {}
    for name, param in configurable(command).items():
        names[name] = name
        for opt in getattr(param, "opts", ()):
            if opt.startswith("--"):
                key = opt[2:]
                names[key] = name
                names[key.replace("-", "_")] = name
                names[key.replace("_", "-")] = name
    return names


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's table; TOML unless it is named .yaml/.yml."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise click.BadParameter(f"{path}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        raise click.BadParameter(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a table of flag names")
    return data


def default_map(command: click.Command, data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's settings as click's default map; unknown or command-line-only keys are
    an error naming each."""
    names = _key_names(command)
    refused = sorted(str(k) for k in data if str(k).replace("-", "_") in COMMAND_LINE_ONLY)
    if refused:
        raise click.BadParameter(
            f"{path}: {', '.join(refused)}: consent to run code is given on the command line only",
        )
    unknown = sorted(str(k) for k in data if str(k) not in names)
    if unknown:
        raise click.BadParameter(
            f"{path}: unknown setting(s) {', '.join(unknown)} (keys are `ferry serve` flag "
            "names without the dashes; see docs/configuration.md)",
        )
    return {names[str(key)]: value for key, value in data.items()}


def _load(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is None:
        return None
    assert ctx.command is not None
    settings = default_map(ctx.command, read_config_file(value), value)
    ctx.default_map = {**(ctx.default_map or {}), **settings}
    return value


def config_option(command: click.Command) -> click.Command:
    """Add `--config FILE` (also $FERRY_CONFIG) to `command`; read before every other
    flag, so the file's values are in place as their defaults."""
    option = click.Option(
        ["--config"],
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        is_eager=True,
        expose_value=False,
        callback=_load,
        envvar=CONFIG_ENV,
        help="TOML (or .yaml) file of flag settings, e.g. rest_api_port = 8501. The "
        "environment (FERRY_<FLAG>) and the command line override it (docs/configuration.md).",
    )
    command.params.insert(0, option)
    return command
