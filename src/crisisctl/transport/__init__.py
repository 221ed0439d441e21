"""The transport room: how crisisctl reaches a service, written once for every command.

Below `load/`, `probe/` and `validate/` (which all import it; it imports none of them):

* `target`  — parse an ``http://`` or ``https://`` URL into a `Target` (any host);
* `resolve` — ``--resolve HOST:PORT:ADDR`` pins (curl's meaning) and async name resolution;
* `tls`     — TLS client contexts (system store, ``--cacert``, ``--cert/--key``, ALPN
  ``http/1.1``, ``--insecure``) and one-sentence certificate errors;
* `headers` — ``-H``, ``--bearer``, ``--basic``, ``env:NAME`` values and redaction of secrets;
* `request` — the bytes of one HTTP/1.1 request;
* `client`  — the fast keep-alive HTTP/1.1 client (compiled with mypyc);
* `settings`— the picklable options that travel to engine processes and build targets;
* `preflight` — one handshake before a run, so a certificate problem is one sentence, exit 3.
"""
