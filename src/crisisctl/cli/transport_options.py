"""The transport flags every command that sends traffic shares (load, triage, baseline, validate).

Each command declares the same parameters with these annotated types, then calls `build`:

* ``-H/--header 'Name: value'`` (repeatable), ``--bearer TOKEN``, ``--basic USER:PASS`` — any
  value may be ``env:NAME`` (read from the environment; missing → exit 2);
* ``--resolve HOST:PORT:ADDR`` (repeatable, curl's meaning), ``--cacert FILE``,
  ``--cert FILE``/``--key FILE`` (mTLS), ``--insecure`` (no certificate verification; a warning
  on stderr).

`Transport.target()` builds the command's `Target`; `Transport.check()` runs the preflight (a
certificate or name problem: one sentence, exit 3); `Transport.redact()` removes the run's
secrets from anything about to be printed or stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from crisisctl.cli.output import err_console, fail
from crisisctl.transport.headers import Auth, Redactor, build_auth
from crisisctl.transport.preflight import run_preflight
from crisisctl.transport.settings import TransportSpec
from crisisctl.transport.target import Target
from crisisctl.transport.tls import TransportError

HeaderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "-H", "--header", help="Extra header 'Name: value' (repeat); value may be env:NAME."
    ),
]
BearerOpt = Annotated[
    str | None,
    typer.Option("--bearer", help="Authorization: Bearer TOKEN (or env:NAME)."),
]
BasicOpt = Annotated[
    str | None,
    typer.Option("--basic", help="HTTP basic auth USER:PASS (or env:NAME)."),
]
ResolveOpt = Annotated[
    list[str] | None,
    typer.Option("--resolve", help="Pin HOST:PORT to ADDR, as curl does (repeat)."),
]
CacertOpt = Annotated[
    str | None, typer.Option("--cacert", help="Trust this PEM CA bundle (https://).")
]
CertOpt = Annotated[str | None, typer.Option("--cert", help="Client certificate (PEM) for mTLS.")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Private key of --cert (PEM).")]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="Do not verify the server's certificate (warns).")
]


@dataclass(frozen=True)
class Transport:
    """What the shared flags said: TLS and pins (`spec`), headers and secrets (`auth`)."""

    spec: TransportSpec
    auth: Auth

    def target(self, url: str, tool: str) -> Target:
        """The command's `Target` (auth headers on every request); exit 2 when unusable."""
        try:
            target = self.spec.target(url, tool, self.auth.headers)
        except ValueError as exc:
            fail(str(exc))
        if target.is_tls and self.spec.insecure:
            err_console.print(
                f"[bold yellow]warning:[/] --insecure: the certificate of {target.host} is not "
                "verified; anyone on the path could read or change this traffic.",
                highlight=False,
            )
        return target

    def check(self, target: Target) -> None:
        """The preflight: a name that does not resolve or any TLS failure exits 3."""
        try:
            run_preflight(target, client_cert=self.spec.cert is not None)
        except TransportError as exc:
            fail(exc.message, exc.code)

    def redact(self, data: Any, more: tuple[str, ...] = ()) -> Any:
        """`data` (a report, a record) without this run's secrets (and the `more` a scenario
        file read from the environment)."""
        return Redactor((*self.auth.secrets, *more)).tree(data)


def build(
    header: list[str] | None = None,
    bearer: str | None = None,
    basic: str | None = None,
    resolve: list[str] | None = None,
    cacert: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    insecure: bool = False,
) -> Transport:
    """Check the shared flags (exit 2 with one sentence when one is wrong)."""
    try:
        auth = build_auth(header or [], bearer, basic)
        spec = TransportSpec(
            resolve=list(resolve or []), cacert=cacert, cert=cert, key=key, insecure=insecure
        )
        from crisisctl.transport.settings import context_for

        if spec.cacert or spec.cert or spec.key or spec.insecure:
            context_for(spec.tls)  # an unreadable file is a usage error now, not mid-run
    except ValueError as exc:
        message = str(exc)
        if "validation error" in message:  # pydantic: the --resolve validator's sentence
            message = message.split("Value error, ", 1)[-1].split("[type=")[0].strip()
        fail(message)
    return Transport(spec, auth)
