"""TLS client contexts and what a failed handshake means, in one sentence.

`make_context` gives the context every https:// connection of a run shares (so sessions and
the work of loading the trust store are shared too): certificate verification on by default
against the system store (`ssl.create_default_context`), ``--cacert FILE`` for a private CA,
``--cert/--key`` for a client certificate (mTLS), ALPN ``http/1.1``, and ``--insecure``, which
turns verification off (the caller warns on stderr). SNI is the URL's host: the callers pass it
as ``server_hostname``, also when ``--resolve`` pins the address.

`describe_tls_error` turns a handshake failure into one sentence naming the host and what is
wrong: unknown CA, name mismatch, expired (or not yet valid), client certificate required.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

#: exit code for a target that cannot be reached, certificate problems included (DESIGN.md)
EXIT_UNREACHABLE = 3

# OpenSSL X509_V_ERR_* codes
_UNKNOWN_CA = {2, 18, 19, 20, 21, 27}
_EXPIRED = {10, 12}
_NOT_YET_VALID = {9, 11}
_NAME_MISMATCH = {62, 63, 64}


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """What the user said about TLS (picklable: it travels to engine processes)."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False


class TransportError(Exception):
    """A target that cannot be used: `message` is one sentence, `code` the exit code."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def make_context(options: TlsOptions) -> ssl.SSLContext:
    """The client context for `options`; ValueError (one sentence) for an unreadable file."""
    try:
        context = ssl.create_default_context(cafile=options.cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"--cacert {options.cacert} is not a readable PEM CA bundle ({_why(exc)})."
        ) from None
    if options.key is not None and options.cert is None:
        raise ValueError("--key needs --cert (the client certificate it belongs to).")
    if options.cert is not None:
        try:
            context.load_cert_chain(options.cert, options.key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"--cert {options.cert} (with --key {options.key or 'in the same file'}) is "
                f"not a usable PEM certificate and key ({_why(exc)})."
            ) from None
    context.set_alpn_protocols(["http/1.1"])
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(getattr(exc, "reason", None) or exc)


def is_tls_error(exc: BaseException) -> bool:
    """Whether `exc` came from TLS (a handshake or an alert), not from TCP."""
    return isinstance(exc, ssl.SSLError)


def describe_tls_error(exc: BaseException, host: str) -> str:
    """One sentence: which host, what is wrong with its certificate or our TLS set-up."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code in _UNKNOWN_CA:
            return (
                f"the certificate of {host} is signed by an unknown certificate authority: "
                "give its CA with --cacert FILE (or --insecure to skip verification)."
            )
        if code in _EXPIRED:
            return f"the certificate of {host} has expired: the service must renew it."
        if code in _NOT_YET_VALID:
            return (
                f"the certificate of {host} is not valid yet: check the clocks or the certificate."
            )
        if code in _NAME_MISMATCH:
            return (
                f"the certificate presented for {host} does not name {host} (name mismatch): "
                "check the URL's host or the service's certificate."
            )
        detail = exc.verify_message or exc.reason or "verification failed"
        return f"the certificate of {host} could not be verified ({detail})."
    reason = str(getattr(exc, "reason", "") or "").upper()
    if "CERTIFICATE_REQUIRED" in reason or ("HANDSHAKE_FAILURE" in reason and "ALERT" in reason):
        return f"{host} requires a client certificate: give one with --cert FILE --key FILE."
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "DECRYPT_ERROR" in reason:
        return f"{host} refused our client certificate ({reason.lower()}): check --cert/--key."
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
        return f"{host} does not speak TLS on this port: is it an http:// service?"
    return f"the TLS handshake with {host} failed ({reason.lower() or exc})."
