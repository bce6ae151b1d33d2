"""`ferry keys create|list|revoke --file FILE`: manage the key file of `ferry serve --auth`.

The secret of a new key is printed once, by `create`; `list` never shows secrets.
A running server picks up changes within seconds (it re-reads the file when it
changes), so a revoked key stops working without a restart.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ferry.auth.keys import (
    DEFAULT_SCOPES,
    KINDS,
    SCOPES,
    SIGV4,
    KeyFileError,
    add_key,
    read_key_file,
    revoke_key,
)

_FILE = click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The key file (JSON, mode 0600) given to `ferry serve --auth`.",
)


@click.group()
def keys() -> None:
    """Manage access keys for `ferry serve --auth FILE`: AWS-style SigV4 key pairs
    (boto3 and other AWS SDKs) and bearer tokens (curl, gRPC, Prometheus)."""


@keys.command()
@_FILE
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=SIGV4,
    show_default=True,
    help="sigv4: an access key id and secret for AWS SDKs; token: a bearer token.",
)
@click.option("--name", default="", help="A note on who or what uses the key.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    default=DEFAULT_SCOPES,
    show_default=True,
    help="What the key may do (repeatable): infer (serve and describe models), admin "
    "(model control: config reload, V2 load/unload).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new key as JSON.")
def create(path: Path, kind: str, name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a key (and FILE, mode 0600, if it does not exist) and print its secret:
    the only time ferry shows it."""
    try:
        created = add_key(path, kind, name, scopes)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    entry = created.entry
    if as_json:
        click.echo(json.dumps(created_key_json(entry.id, kind, list(entry.scopes), created.secret)))
        return
    if kind == SIGV4:
        click.echo(f"aws_access_key_id     = {entry.id}")
        click.echo(f"aws_secret_access_key = {created.secret}")
        click.echo(
            "Use them as AWS credentials (any region, service sagemaker), e.g. "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.",
            err=True,
        )
        click.echo("ferry lists keys without their secrets; keep this one now.", err=True)
    else:
        click.echo(f"token = {created.secret}")
        click.echo(f"id    = {entry.id}", err=True)
        click.echo("Send it as `Authorization: Bearer <token>`.", err=True)
        click.echo("Shown only now: the file keeps just its SHA-256.", err=True)


def created_key_json(key_id: str, kind: str, scopes: list[str], secret: str) -> dict:
    """`keys create --json`: a SigV4 key under the names the text output and AWS use
    (`aws_access_key_id`, `aws_secret_access_key`), a bearer key as `id` and `token`
    (as its text output). `id` stays in SigV4's JSON too, the same value, for scripts
    written before the rename: deprecated, to be removed in the next minor release."""
    if kind == SIGV4:
        return {
            "aws_access_key_id": key_id,
            "aws_secret_access_key": secret,
            "kind": kind,
            "scopes": scopes,
            "id": key_id,
        }
    return {"id": key_id, "token": secret, "kind": kind, "scopes": scopes}


@keys.command(name="list")
@_FILE
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
def list_keys(path: Path, as_json: bool) -> None:
    """List the keys in FILE (ids, kinds, scopes, names, creation times; never secrets)."""
    try:
        entries = read_key_file(path)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([e.public() for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"no keys in {path}")
        return
    click.echo(f"{'ID':<24} {'KIND':<6} {'SCOPES':<12} {'CREATED':<21} NAME")
    for e in entries:
        scopes = ",".join(e.scopes)
        click.echo(f"{e.id:<24} {e.kind:<6} {scopes:<12} {e.created:<21} {e.name}")


@keys.command()
@_FILE
@click.argument("key_id")
def revoke(path: Path, key_id: str) -> None:
    """Remove the key KEY_ID from FILE; a running server refuses it within seconds."""
    try:
        entry = revoke_key(path, key_id)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {entry.kind} key {entry.id}")
