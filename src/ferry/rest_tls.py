"""HTTPS on the REST port: the `ferry serve` flags (`--ssl_certfile`, `--ssl_keyfile`,
`--ssl_ca_certs`, `--ssl_client_cert`), the TLS context they make, and the same
certificate for gRPC where TF Serving's `--ssl_config_file` does not give gRPC its own.

Why ferry's own flags next to TF Serving's: TF Serving's `--ssl_config_file` is TLS for
gRPC only (its REST API has no TLS at all), and its PEM-texts-in-a-text-proto form is
awkward for the files cert-manager and ACME clients write. The names are uvicorn's and
gunicorn's (`ssl_certfile`, `ssl_keyfile`, `ssl_ca_certs`), in ferry's snake_case.

The flags live here, not in `ferry.cli`: `rest_tls_flag_options` adds them to the command
without making them parameters of it, and `resolve` reads them back as one `RestTls`
(checked: every file read and the key matched to the certificate before any port opens).
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass
from pathlib import Path

import click

from ferry.flag_groups import FlagGroup, FlagSpec
from ferry.tfserving_flags import GrpcTls

CERTFILE_FLAG = "--ssl_certfile"
# HTTP/1.1 only: ferry's REST protocol is uvicorn's httptools one. Announcing it by ALPN
# keeps clients that would try h2 first from doing so.
ALPN_PROTOCOLS = ["http/1.1"]


class ClientCertificate(enum.Enum):
    """`--ssl_client_cert`: whether a client must show a certificate signed by
    `--ssl_ca_certs`."""

    NONE = "none"  # none asked for
    OPTIONAL = "optional"  # asked for; one that is shown must verify
    REQUIRED = "required"  # the handshake fails without a verified one

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return {
            ClientCertificate.NONE: ssl.CERT_NONE,
            ClientCertificate.OPTIONAL: ssl.CERT_OPTIONAL,
            ClientCertificate.REQUIRED: ssl.CERT_REQUIRED,
        }[self]


class RestTlsError(ValueError):
    """A TLS flag or file that cannot serve: the message names the flag and the fix."""


@dataclass(frozen=True)
class RestTls:
    """HTTPS for the REST port: the server's certificate chain and key (PEM files), and
    client certificates (`ca_certs`, the CAs they must chain to)."""

    certfile: Path
    keyfile: Path
    ca_certs: Path | None = None
    client_certificate: ClientCertificate = ClientCertificate.NONE

    def ssl_context(self) -> ssl.SSLContext:
        """A server context: TLS 1.2 or later, HTTP/1.1 by ALPN, client certificates as
        configured. Raises `RestTlsError` naming the flag whose file is wrong."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(ALPN_PROTOCOLS)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise RestTlsError(
                f"{CERTFILE_FLAG} {self.certfile} / --ssl_keyfile {self.keyfile}: cannot load "
                f"the certificate and its key ({_reason(exc)}); both are PEM files and the "
                "key must belong to the certificate"
            ) from None
        if self.ca_certs is not None:
            try:
                context.load_verify_locations(cafile=self.ca_certs)
            except (OSError, ssl.SSLError) as exc:
                raise RestTlsError(
                    f"--ssl_ca_certs {self.ca_certs}: cannot load CA certificates "
                    f"({_reason(exc)}); a PEM file of one or more certificates is needed"
                ) from None
        context.verify_mode = self.client_certificate.verify_mode
        return context

    def grpc_tls(self) -> GrpcTls:
        """The same certificate for gRPC, for when `--ssl_config_file` gives gRPC none.
        gRPC's Python server can require a client certificate or not ask for one, not
        ask without requiring: `optional` asks for none on gRPC."""
        required = self.client_certificate is ClientCertificate.REQUIRED
        return GrpcTls(
            server_key=self.keyfile.read_text(),
            server_cert=self.certfile.read_text(),
            custom_ca=self.ca_certs.read_text() if required and self.ca_certs else "",
            client_verify=required,
        )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


def grpc_tls_for(ssl_config_file_tls: GrpcTls | None, rest: RestTls | None) -> GrpcTls | None:
    """gRPC's credentials: TF Serving's `--ssl_config_file` where given (its meaning is
    kept), else `--ssl_certfile`'s certificate, else none (plain gRPC)."""
    if ssl_config_file_tls is not None:
        return ssl_config_file_tls
    return rest.grpc_tls() if rest is not None else None


_OPTIONS: list[FlagSpec] = [
    (
        (CERTFILE_FLAG,),
        {
            "type": click.Path(dir_okay=False, path_type=Path),
            "help": "Serve the REST port over HTTPS with this PEM certificate (chain); "
            "with --ssl_keyfile. gRPC uses it too unless --ssl_config_file gives gRPC its own.",
        },
    ),
    (
        ("--ssl_keyfile",),
        {
            "type": click.Path(dir_okay=False, path_type=Path),
            "help": "The PEM private key of --ssl_certfile (unencrypted).",
        },
    ),
    (
        ("--ssl_ca_certs",),
        {
            "type": click.Path(dir_okay=False, path_type=Path),
            "help": "PEM CA certificates that client certificates must chain to "
            "(with --ssl_client_cert required or optional).",
        },
    ),
    (
        ("--ssl_client_cert",),
        {
            "type": click.Choice([mode.value for mode in ClientCertificate]),
            "default": ClientCertificate.NONE.value,
            "show_default": True,
            "help": "Client certificates on HTTPS: required (no verified certificate, no "
            "connection), optional (asked for, checked when shown) or none. gRPC: required "
            "or none.",
        },
    ),
]


_GROUP = FlagGroup("ferry.rest_tls", _OPTIONS)
# Adds the flags to a click command (their values go to the context, for `resolve`).
rest_tls_flag_options = _GROUP.add_to


def resolve(ctx: click.Context, sagemaker: bool = False) -> RestTls | None:
    """The HTTPS settings the command line gave (None: plain HTTP), checked now so a
    wrong file or combination stops start-up with a one-line error."""
    given = _GROUP.given(ctx)
    certfile, keyfile = given.get("ssl_certfile"), given.get("ssl_keyfile")
    ca_certs = given.get("ssl_ca_certs")
    mode = ClientCertificate(given.get("ssl_client_cert") or ClientCertificate.NONE.value)
    if certfile is None:
        if keyfile is not None or ca_certs is not None or mode is not ClientCertificate.NONE:
            raise click.UsageError(
                "--ssl_keyfile, --ssl_ca_certs and --ssl_client_cert need --ssl_certfile"
            )
        return None
    if sagemaker:
        raise click.UsageError(
            "--ssl_certfile: SageMaker calls a container over plain HTTP (/ping, "
            "/invocations) and ends TLS itself; drop the TLS flags with --sagemaker"
        )
    if keyfile is None:
        raise click.UsageError("--ssl_certfile needs --ssl_keyfile (the certificate's key)")
    if mode is ClientCertificate.NONE and ca_certs is not None:
        raise click.UsageError(
            "--ssl_ca_certs is for client certificates: add --ssl_client_cert required "
            "(or optional), or drop --ssl_ca_certs"
        )
    if mode is not ClientCertificate.NONE and ca_certs is None:
        raise click.UsageError(
            f"--ssl_client_cert {mode.value} needs --ssl_ca_certs (the CAs client "
            "certificates must chain to)"
        )
    tls = RestTls(Path(certfile), Path(keyfile), Path(ca_certs) if ca_certs else None, mode)
    try:
        tls.ssl_context()
    except RestTlsError as exc:
        raise click.UsageError(str(exc)) from None
    return tls
