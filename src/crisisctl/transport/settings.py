"""The transport options of a run: pins and TLS, as a picklable (pydantic) record.

`TransportSpec` is what the CLI's shared options produce and what a load scenario carries
(``transport:`` in YAML) to its engine processes; `TransportSpec.target(url)` builds the
`Target` every client of the run connects with. One TLS context per set of options and process
(`context_for`): making one reads the trust store, which is not free.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crisisctl.transport.resolve import parse_pins, parse_resolve
from crisisctl.transport.target import Target, parse_url
from crisisctl.transport.tls import TlsOptions, make_context

_CONTEXTS: dict[TlsOptions, ssl.SSLContext] = {}


def context_for(options: TlsOptions) -> ssl.SSLContext:
    """The shared client context for `options` (made on first use in this process)."""
    context = _CONTEXTS.get(options)
    if context is None:
        context = _CONTEXTS[options] = make_context(options)
    return context


class TransportSpec(BaseModel):
    """``--resolve`` pins and TLS options (``--cacert``, ``--cert``, ``--key``, ``--insecure``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolve: list[str] = Field(default_factory=list)
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False

    @field_validator("resolve")
    @classmethod
    def _pins(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_resolve(text)
        return value

    @property
    def tls(self) -> TlsOptions:
        """The TLS part, hashable (the key of the shared context)."""
        return TlsOptions(self.cacert, self.cert, self.key, self.insecure)

    def target(
        self, url: str, tool: str = "crisisctl", headers: Mapping[str, str] | None = None
    ) -> Target:
        """The `Target` of `url` under these options; ValueError (one sentence) when unusable."""
        context = context_for(self.tls) if url.lower().startswith("https:") else None
        return parse_url(url, tool, pins=parse_pins(self.resolve), tls=context, headers=headers)
