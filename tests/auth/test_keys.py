"""The key file of `ferry serve --auth` and `ferry keys create|list|revoke`: owner-only
permissions, secrets shown once, tokens stored only as hashes, unsafe files refused at
start-up with a message that says how to fix them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.models import scale_model, write_model

from ferry.auth.keys import (
    ADMIN,
    INFER,
    SIGV4,
    TOKEN,
    KeyFileError,
    KeyStore,
    add_key,
    read_key_file,
    revoke_key,
    token_hash,
)
from ferry.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_create_writes_an_owner_only_file_and_prints_the_secret_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    code, out, _ = run("keys", "create", "--file", str(path), "--name", "ci", "--json")
    assert code == 0
    created = json.loads(out)
    assert created["id"].startswith("FKIA") and len(created["id"]) == 20
    assert path.stat().st_mode & 0o777 == 0o600
    code, listed, _ = run("keys", "list", "--file", str(path))
    assert code == 0
    assert created["id"] in listed and "ci" in listed
    assert created["aws_secret_access_key"] not in listed


def test_a_token_is_stored_as_its_hash_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    code, out, _ = run("keys", "create", "--file", str(path), "--kind", "token", "--json")
    assert code == 0
    token = json.loads(out)["token"]
    text = path.read_text()
    assert token not in text
    assert token_hash(token) in text
    assert KeyStore(path).token_id(token) == json.loads(out)["id"]
    assert KeyStore(path).token_id(token + "x") is None


def test_revoke_removes_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    kept, gone = add_key(path, SIGV4), add_key(path, TOKEN)
    code, out, _ = run("keys", "revoke", "--file", str(path), gone.entry.id)
    assert code == 0 and gone.entry.id in out
    assert [e.id for e in read_key_file(path)] == [kept.entry.id]
    code, _, err = run("keys", "revoke", "--file", str(path), "FKIANOSUCHKEY")
    assert code != 0 and "no key FKIANOSUCHKEY" in err


def test_every_keys_verb_answers_help() -> None:
    for verb in ("create", "list", "revoke"):
        code, out, _ = run("keys", verb, "--help")
        assert code == 0 and "--file" in out


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    add_key(path, SIGV4)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        KeyStore(path)
    code, _, err = run("keys", "list", "--file", str(path))
    assert code != 0 and "group or others" in err


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_serve_refuses_an_unsafe_key_file_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    add_key(path, SIGV4)
    path.chmod(0o644)
    write_model(scale_model(1.0), tmp_path / "models" / "scale", 1)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferry.cli",
            "serve",
            str(tmp_path / "models"),
            "--auth",
            str(path),
            "--rest_api_port",
            "0",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "accessible by group or others" in result.stderr
    assert "chmod 600" in result.stderr


def test_a_missing_or_malformed_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        KeyStore(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"id": "x", "kind": "sigv4"}]}')
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="needs its `secret`"):
        KeyStore(bad)


def test_the_store_rereads_a_changed_file_and_keeps_good_keys_over_bad(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = add_key(path, SIGV4)
    store = KeyStore(path, recheck_seconds=0)
    assert store.secret_for(first.entry.id) == first.secret
    second = add_key(path, SIGV4)
    assert store.secret_for(second.entry.id) == second.secret
    path.chmod(0o644)  # unsafe now: the last good keys stay
    assert store.secret_for(second.entry.id) == second.secret


def test_lookups_do_not_read_the_file_between_rechecks(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, SIGV4)
    store = KeyStore(path, recheck_seconds=3600)
    path.unlink()  # gone: lookups still answer from memory
    assert store.secret_for(key.entry.id) == key.secret


def test_subscribers_get_every_new_key_set_with_its_generation(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    sigv4_key = add_key(path, SIGV4)
    token = add_key(path, TOKEN)
    store = KeyStore(path, recheck_seconds=0)
    published = []
    store.subscribe(published.append)
    assert [s.generation for s in published] == [store.generation]
    assert published[0].secrets == {sigv4_key.entry.id: sigv4_key.secret}
    assert published[0].token_ids == {token_hash(token.secret): token.entry.id}
    assert store.current_generation() == published[0].generation  # unchanged file: no new set
    revoke_key(path, sigv4_key.entry.id)
    assert store.current_generation() == published[0].generation + 1
    assert published[-1].generation == store.generation and published[-1].secrets == {}
    path.chmod(0o644)  # unsafe now: the last good keys stay, and so does their generation
    path.write_bytes(path.read_bytes() + b" ")
    assert store.current_generation() == published[-1].generation


# -- scopes -----------------------------------------------------------------------------------


def test_keys_are_infer_keys_unless_created_with_admin(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    code, out, _ = run("keys", "create", "--file", str(path), "--json")
    plain = json.loads(out)
    code, out, _ = run("keys", "create", "--file", str(path), "--scope", "admin", "--json")
    admin = json.loads(out)
    code, out, _ = run(
        "keys", "create", "--file", str(path), "--kind", "token", "--scope", "admin",
        "--scope", "infer", "--json",
    )  # fmt: skip
    both = json.loads(out)
    assert code == 0
    assert (plain["scopes"], admin["scopes"], both["scopes"]) == (
        ["infer"],
        ["admin"],
        ["infer", "admin"],
    )
    store = KeyStore(path)
    assert store.scopes_of(plain["id"]) == {INFER}
    assert store.scopes_of(admin["id"]) == {ADMIN}
    assert store.scopes_of(both["id"]) == {INFER, ADMIN}
    assert store.scopes_of("FKIANOSUCHKEY") == frozenset()
    stored = {k["id"]: k["scopes"] for k in json.loads(path.read_text())["keys"]}
    assert stored == {
        plain["id"]: ["infer"],
        admin["id"]: ["admin"],
        both["id"]: ["infer", "admin"],
    }


def test_list_shows_scopes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    admin = add_key(path, TOKEN, "ops", (INFER, ADMIN))
    code, listed, _ = run("keys", "list", "--file", str(path))
    assert code == 0
    assert "SCOPES" in listed.splitlines()[0]
    row = next(line for line in listed.splitlines() if admin.entry.id in line)
    assert "infer,admin" in row.split()
    code, out, _ = run("keys", "list", "--file", str(path), "--json")
    assert json.loads(out)[0]["scopes"] == ["infer", "admin"]
    assert run("keys", "create", "--file", str(path), "--scope", "root")[0] == 2


def test_a_key_file_from_before_scopes_gives_infer_keys_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.json"
    key = add_key(path, SIGV4)
    document = json.loads(path.read_text())
    del document["keys"][0]["scopes"]
    path.write_text(json.dumps(document))
    with caplog.at_level("WARNING", logger="ferry.auth.keys"):
        store = KeyStore(path)
        read_key_file(path)
    assert store.scopes_of(key.entry.id) == {INFER}
    notes = [r.getMessage() for r in caplog.records if "no `scopes`" in r.getMessage()]
    assert len(notes) == 1 and "infer-only" in notes[0]


@pytest.mark.parametrize("scopes", [[], ["root"], "admin", [1]])
def test_bad_scopes_in_the_file_are_refused(tmp_path: Path, scopes: object) -> None:
    path = tmp_path / "keys.json"
    add_key(path, SIGV4)
    document = json.loads(path.read_text())
    document["keys"][0]["scopes"] = scopes
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="`scopes` must be a non-empty list of infer, admin"):
        KeyStore(path)
