"""``env:NAME`` values in a scenario file: read from the environment when the file is loaded.

A scenario's secrets stay out of the file (and of version control) the way the command line's
``-H``/``--bearer``/``--basic`` keep them out of shell history: any header value — the
scenario's ``headers``, ``login.headers``, each operation's or step's ``headers`` — and the
``transport:`` block's credential paths (``cacert``, ``cert``, ``key``) may be ``env:NAME``.
`resolve_env` replaces each with the variable's value before the scenario is validated (a
header value is a template: its braces are escaped, so the value is sent as it is) and returns
every value it read, for the run's `Redactor`: reports, HTML and the JSON config echo show
``[REDACTED]`` instead. A variable that is not set is a problem at ``file:line: field``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

__all__ = ["ENV_PREFIX", "resolve_env"]

#: the prefix of a value read from the environment
ENV_PREFIX = "env:"

#: fields of the ``transport:`` block that may name a variable (paths, not templates)
_TRANSPORT_FIELDS = ("cacert", "cert", "key")

Location = tuple[str | int, ...]


def _header_maps(data: dict[str, Any]) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Every ``headers`` mapping of a scenario's raw data, with its location."""
    if isinstance(data.get("headers"), dict):
        yield ("headers",), data["headers"]
    login = data.get("login")
    if isinstance(login, dict) and isinstance(login.get("headers"), dict):
        yield ("login", "headers"), login["headers"]
    for group in ("operations", "steps"):
        items = data.get(group)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("headers"), dict):
                yield (group, i, "headers"), item["headers"]


def _lookup(text: str) -> tuple[str | None, str]:
    """(the value, the variable's name); the value is None when the variable is not set."""
    name = text[len(ENV_PREFIX) :].strip()
    return (os.environ.get(name) if name else None), name


def _missing(name: str) -> str:
    return (
        f"the environment variable {name or '(no name)'!r} is not set: export it before the "
        "run, or write the value itself."
    )


def resolve_env(
    data: dict[str, Any],
) -> tuple[dict[str, Any], list[str], list[tuple[Location, str]]]:
    """(`data` with every ``env:NAME`` value read, the values read, the problems).

    `data` is not changed: the mappings holding a variable are copied. A header value with a
    line break is a problem too (it would split the request)."""
    out = dict(data)
    secrets: list[str] = []
    problems: list[tuple[Location, str]] = []
    for loc, headers in list(_header_maps(data)):
        if not any(isinstance(v, str) and v.startswith(ENV_PREFIX) for v in headers.values()):
            continue
        resolved = dict(headers)
        for name, value in headers.items():
            if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
                continue
            found, variable = _lookup(value)
            if found is None:
                problems.append(((*loc, name), _missing(variable)))
                continue
            if any(c in found for c in "\r\n"):
                problems.append(
                    ((*loc, name), f"the environment variable {variable!r} holds a line break.")
                )
                continue
            escaped = found.replace("{", "{{").replace("}", "}}")
            secrets += [found, escaped] if found else []  # the config echo shows it escaped
            resolved[name] = escaped
        _put(out, loc, resolved)
    transport = data.get("transport")
    if isinstance(transport, dict):
        copied = dict(transport)
        for field in _TRANSPORT_FIELDS:
            value = transport.get(field)
            if isinstance(value, str) and value.startswith(ENV_PREFIX):
                found, variable = _lookup(value)
                if found is None:
                    problems.append((("transport", field), _missing(variable)))
                    continue
                if found:
                    secrets.append(found)
                copied[field] = found
        out["transport"] = copied
    return out, list(dict.fromkeys(secrets)), problems


def _put(data: dict[str, Any], loc: Location, value: dict[str, Any]) -> None:
    """Set `loc` in `data` to `value`, copying each container on the way (not in place)."""
    node: Any = data
    for part in loc[:-1]:
        child = node[part]
        copy = dict(child) if isinstance(child, dict) else list(child)
        node[part] = copy
        node = copy
    node[loc[-1]] = value
