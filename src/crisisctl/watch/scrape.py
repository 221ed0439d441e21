"""Scraping: every target of a watch file, concurrently and time-bounded, into samples.

Each target gives ``up{service, instance, target}`` (1 answered, 0 did not) and its figures,
labelled ``service`` and ``instance``:

* a guard (``guards:``): ``<prefix>/metrics`` (Prometheus text) and ``<prefix>/status`` (JSON)
  read at once with the control token as bearer; summed over routes:
  ``guard_requests_total``, ``guard_errors_total`` (5xx), ``guard_rejected_total``,
  ``guard_duration_count_total``, ``guard_duration_le_total{le}``, ``guard_in_flight``; from
  the status: ``guard_latency_p50_ms``/``p95``/``p99`` (the guard's recent window),
  ``guard_emergency`` (1 in emergency mode), ``guard_mode_code`` (0 normal, 1 emergency,
  2 recovering), ``guard_limit`` (the concurrency limit now), ``guard_rss_bytes``,
  ``guard_cpu_percent``, ``guard_loop_lag_ms``; and ``guard_shed_total{reason}`` (the
  refusals by reason, summed over routes: a handful of fixed reasons);
* a Prometheus endpoint (``metrics:``): every sample under its own name and labels;
* a probe (``probes:``): ``probe_success`` (status expected), ``probe_duration_ms``,
  ``probe_status``;
* this host (``host: true``): ``host_cpu_percent``, ``host_memory_percent``,
  ``host_memory_used_bytes``, ``host_load1``, ``host_disk_percent`` (psutil, in a thread).

With ``discover: dns`` a URL's host name is resolved every cycle and each A/AAAA record is
one instance (reached through a ``--resolve``-style pin, so TLS and Host stay the name's).
HTTP goes through ``crisisctl.probe.http.probe`` over the shared transport (pins, TLS,
headers). Scrapes run at most `concurrency` at a time, each bounded by its timeout.

Parsing stays off the event loop when it is long: a body over `PARSE_IN_THREAD_BYTES` (64 KiB,
about a thousand samples: a few milliseconds of parsing) is decoded and parsed in a worker
thread (`asyncio.to_thread`), so one large exposition does not stall the other scrapes, the
rules or the responder. Smaller bodies are parsed in place (a thread hand-off costs more than
they do). The thread still shares the GIL, but the interpreter switches away from it every few
milliseconds (``sys.getswitchinterval``), so the loop keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import psutil
from prometheus_client.parser import text_string_to_metric_families

from crisisctl.probe.http import ProbeResult, probe, with_path
from crisisctl.transport.settings import TransportSpec
from crisisctl.transport.target import DEFAULT_PORTS
from crisisctl.watch.config import (
    ProbeSpec,
    ServiceSpec,
    WatchConfig,
    resolve_secret,
    resolved_headers,
)
from crisisctl.watch.model import GuardEndpoint, SeriesKey, labels_of

__all__ = [
    "MODE_CODES",
    "Instance",
    "Sample",
    "Scraper",
    "guard_samples",
    "instance_name",
    "prometheus_samples",
]

Sample = tuple[SeriesKey, float]
#: body bytes read from a metrics endpoint (a guard with many routes writes a lot)
METRICS_CAP: Final = 8 * 1024 * 1024
#: bodies larger than this are parsed in a worker thread
PARSE_IN_THREAD_BYTES: Final = 64 * 1024
T = TypeVar("T")
_REQUESTS: Final = "crisisctl_http_requests_total"
_DURATION: Final = "crisisctl_http_request_duration_seconds"
_REJECTED: Final = "crisisctl_guard_rejected_total"
_IN_FLIGHT: Final = "crisisctl_http_requests_in_flight"
_BUCKET: Final = _DURATION + "_bucket"
_COUNT: Final = _DURATION + "_count"
_WANTED: Final = (_REQUESTS, _BUCKET, _COUNT, _REJECTED, _IN_FLIGHT)
#: the ``le`` label of a bucket line (the guard writes labels sorted: ``le`` comes first)
_LE: Final = re.compile(r'(?:^|,)le="([^"]*)"')
_REASON: Final = re.compile(r'(?:^|,)reason="([^"]*)"')
#: ``guard_mode_code`` of each guard mode
MODE_CODES: Final = {"normal": 0.0, "emergency": 1.0, "recovering": 2.0}


@dataclass(frozen=True)
class Instance:
    """One thing to scrape: its kind, URL, labels and how to reach it."""

    kind: str  # guard | metrics | probe | host
    service: str
    url: str
    instance: str
    transport: TransportSpec = field(default_factory=TransportSpec)
    headers: tuple[tuple[str, str], ...] = ()
    prefix: str = "/_crisis"
    timeout: float = 5.0
    probe: ProbeSpec | None = None
    labels: tuple[tuple[str, str], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        pairs = {"service": self.service, "instance": self.instance}
        object.__setattr__(self, "labels", labels_of(pairs))

    def key(self, name: str, **extra: str) -> SeriesKey:
        if not extra:
            return SeriesKey(name, self.labels)
        return SeriesKey(name, labels_of({**dict(self.labels), **extra}))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def prometheus_samples(text: str, instance: Instance) -> list[Sample]:
    """Every sample of a Prometheus text document, labelled with the instance's labels
    (its own ``service``/``instance`` labels, if any, are kept as ``exported_*``)."""
    out = []
    base = dict(instance.labels)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {f"exported_{k}" if k in base else k: v for k, v in sample.labels.items()}
            value = float(sample.value)
            if math.isfinite(value):
                out.append((SeriesKey(sample.name, labels_of({**labels, **base})), value))
    return out


def _prometheus_body(body: bytes, instance: Instance) -> list[Sample]:
    return prometheus_samples(body.decode("utf-8", "replace"), instance)


def _guard_bodies(
    metrics: bytes | None, status: bytes | None, instance: Instance
) -> tuple[list[Sample], bool]:
    """The guard's samples, and whether it answered (its metrics, or a JSON status)."""
    text = metrics.decode("utf-8", "replace") if metrics is not None else None
    document = _json(status) if status is not None else None
    return guard_samples(text, document, instance), text is not None or document is not None


async def _parse(size: int, parse: Callable[..., T], *args: Any) -> T:
    """`parse(*args)`, in a worker thread when the body is over `PARSE_IN_THREAD_BYTES`."""
    if size > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(parse, *args)
    return parse(*args)


def guard_lines(text: str) -> Iterator[tuple[str, str, float]]:
    """(name, raw label text, value) of the guard's own sample lines that watch reads.

    The guard writes one format (``crisisctl.guard.digest``: ``name{labels} value``, no
    timestamps), so its lines are split directly: prometheus_client's parser costs ten times
    more, which a watch of a thousand guards notices. Other endpoints use that parser."""
    for line in text.split("\n"):  # not splitlines(): a label value may hold a raw \r
        if not line.startswith(_WANTED):
            continue
        brace = line.find("{")
        head, _, number = line.rpartition(" ")
        if brace < 0:
            name, labels = head, ""
        else:
            name, labels = line[:brace], head[brace + 1 : head.rfind("}")]
        if name not in _WANTED:
            continue
        try:
            value = float(number)
        except ValueError:
            continue
        if math.isfinite(value):
            yield name, labels, value


def guard_samples(
    metrics: str | None, status: dict[str, Any] | None, inst: Instance
) -> list[Sample]:
    """The guard's figures (see the module docstring) from its metrics text and status."""
    out: list[Sample] = []
    if metrics is not None:
        requests = errors = rejected = count = in_flight = 0.0
        buckets: dict[str, float] = {}
        reasons: dict[str, float] = {}
        for name, labels, amount in guard_lines(metrics):
            if name == _REQUESTS:
                requests += amount
                if 'status_class="5xx"' in labels:
                    errors += amount
            elif name == _BUCKET:
                match = _LE.search(labels)
                le = match.group(1) if match else ""
                buckets[le] = buckets.get(le, 0.0) + amount
            elif name == _COUNT:
                count += amount
            elif name == _REJECTED:
                rejected += amount
                found = _REASON.search(labels)
                reason = found.group(1) if found else ""
                reasons[reason] = reasons.get(reason, 0.0) + amount
            elif name == _IN_FLIGHT:
                in_flight += amount
        out += [
            (inst.key("guard_requests_total"), requests),
            (inst.key("guard_errors_total"), errors),
            (inst.key("guard_rejected_total"), rejected),
            (inst.key("guard_duration_count_total"), count),
            (inst.key("guard_in_flight"), in_flight),
        ]
        out += [(inst.key("guard_duration_le_total", le=le), n) for le, n in buckets.items()]
        out += [(inst.key("guard_shed_total", reason=r), n) for r, n in reasons.items()]
    if status is not None:
        latency = _section(status, "latency_ms")
        if latency and (_num(latency.get("count")) or 0) > 0:
            for pct in ("p50", "p95", "p99"):
                value = _num(latency.get(pct))
                if value is not None:
                    out.append((inst.key(f"guard_latency_{pct}_ms"), value))
        mode = _section(status, "mode")
        out.append((inst.key("guard_emergency"), 1.0 if mode.get("mode") == "emergency" else 0.0))
        code = MODE_CODES.get(str(mode.get("mode")))
        if code is not None:
            out.append((inst.key("guard_mode_code"), code))
        limit = _num(_section(status, "concurrency").get("limit"))
        if limit is not None:
            out.append((inst.key("guard_limit"), limit))
        process = _section(status, "process")
        for name, field_name in (
            ("guard_rss_bytes", "rss_bytes"),
            ("guard_cpu_percent", "cpu_percent_recent"),
        ):
            value = _num(process.get(field_name))
            if value is not None:
                out.append((inst.key(name), value))
        lag = process.get("loop_lag_ms")
        lag_value = _num(lag.get("recent_max") if isinstance(lag, dict) else lag)
        if lag_value is not None:
            out.append((inst.key("guard_loop_lag_ms"), lag_value))
    return out


def host_samples(inst: Instance) -> list[Sample]:
    """This host's figures with psutil (blocking: run it in a thread)."""
    vm = psutil.virtual_memory()
    out = [
        (inst.key("host_cpu_percent"), float(psutil.cpu_percent(interval=None))),
        (inst.key("host_memory_percent"), float(vm.percent)),
        (inst.key("host_memory_used_bytes"), float(vm.total - vm.available)),
    ]
    with contextlib.suppress(OSError, AttributeError):
        out.append((inst.key("host_load1"), float(os.getloadavg()[0])))
    with contextlib.suppress(OSError):
        out.append((inst.key("host_disk_percent"), float(psutil.disk_usage("/").percent)))
    return out


def instance_name(url: str) -> str:
    """The ``instance`` label of a target URL: ``host:port`` (``[v6]:port``)."""
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_all(host: str, port: int) -> list[str]:
    """Every distinct address of `host` (A and AAAA), in the order the resolver gave."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class Scraper:
    """Scrapes every target of a watch file; `scrape` returns one cycle's samples."""

    def __init__(
        self, config: WatchConfig, *, concurrency: int = 64, resolver: Resolver = resolve_all
    ) -> None:
        self.config = config
        self.semaphore = asyncio.Semaphore(concurrency)
        self.resolver = resolver
        self.tokens = {
            name: resolve_secret(spec.token) if spec.token else None
            for name, spec in config.services.items()
        }
        for spec in config.services.values():
            resolved_headers(spec)  # an unset env:NAME fails now (one sentence), not each scrape
        #: guards found by DNS, per service (the response side reads them as the directory)
        self.discovered: dict[str, list[GuardEndpoint]] = {}

    def _static(self, service: str, spec: ServiceSpec, kind: str, url: str) -> Instance:
        return Instance(
            kind,
            service,
            url,
            instance_name(url),
            spec.transport,
            tuple(spec.headers.items()),
            spec.prefix,
            spec.timeout,
        )

    async def _expand(self, service: str, spec: ServiceSpec, kind: str, url: str) -> list[Instance]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if spec.discover != "dns" or _is_literal(host):
            return [self._static(service, spec, kind, url)]
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
        try:
            addresses = await self.resolver(host, port)
        except OSError:
            addresses = []
        if not addresses:  # the name does not resolve: one instance, which will be down
            return [self._static(service, spec, kind, url)]
        out = []
        for address in addresses:
            pin = f"{host}:{port}:{address}"
            transport = spec.transport.model_copy(
                update={"resolve": [*spec.transport.resolve, pin]}
            )
            name = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            out.append(
                Instance(
                    kind,
                    service,
                    url,
                    name,
                    transport,
                    tuple(spec.headers.items()),
                    spec.prefix,
                    spec.timeout,
                )
            )
        return out

    async def instances(self) -> list[Instance]:
        """Every target of this cycle (DNS names expanded)."""
        jobs = []
        for service, spec in self.config.services.items():
            for url in spec.guards:
                jobs.append(self._expand(service, spec, "guard", url))
            for url in spec.metrics:
                jobs.append(self._expand(service, spec, "metrics", url))
            for check in spec.probes:
                one = self._static(service, spec, "probe", check.url)
                jobs.append(
                    _ready(
                        [
                            Instance(
                                "probe",
                                service,
                                check.url,
                                one.instance,
                                spec.transport,
                                one.headers,
                                spec.prefix,
                                check.timeout,
                                check,
                            )
                        ]
                    )
                )
            if spec.host:
                jobs.append(_ready([Instance("host", service, "", socket.gethostname())]))
        found = [inst for group in await asyncio.gather(*jobs) for inst in group]
        discovered: dict[str, list[GuardEndpoint]] = {}
        for inst in found:
            if inst.kind == "guard":
                spec = self.config.services[inst.service]
                added = inst.transport.resolve[len(spec.transport.resolve) :]  # the DNS pin
                discovered.setdefault(inst.service, []).append(
                    GuardEndpoint(
                        inst.url,
                        inst.prefix,
                        self.tokens.get(inst.service),
                        tuple(added),
                        spec.transport,
                        resolved_headers(spec),
                    )
                )
        self.discovered = discovered
        return found

    async def scrape(self) -> list[Sample]:
        """One cycle: every target at once (at most `concurrency` in flight)."""
        found = await self.instances()
        groups = await asyncio.gather(*(self._bounded(inst) for inst in found))
        return [sample for group in groups for sample in group]

    async def _bounded(self, inst: Instance) -> list[Sample]:
        async with self.semaphore:
            try:
                samples, answered = await self.scrape_one(inst)
            except (ValueError, OSError):
                samples, answered = [], False
        return [*samples, (inst.key("up", target=inst.kind), 1.0 if answered else 0.0)]

    def _headers(self, inst: Instance) -> dict[str, str]:
        headers = {k: resolve_secret(v) for k, v in inst.headers}
        token = self.tokens.get(inst.service)
        if inst.kind == "guard" and token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _get(self, inst: Instance, path: str | None, cap: int) -> ProbeResult:
        target = inst.transport.target(inst.url, "crisisctl watch")
        if path is not None:
            target = with_path(target, path)
        return await probe(
            target, headers=self._headers(inst), timeout_s=inst.timeout, body_cap=cap
        )

    async def scrape_one(self, inst: Instance) -> tuple[list[Sample], bool]:
        """One target's samples and whether it answered."""
        if inst.kind == "host":
            return await asyncio.to_thread(host_samples, inst), True
        if inst.kind == "probe":
            assert inst.probe is not None
            target = inst.transport.target(inst.url, "crisisctl watch")
            result = await probe(
                target,
                method=inst.probe.method,
                headers=self._headers(inst),
                timeout_s=inst.timeout,
                body_cap=0,
            )
            ok = result.status is not None and result.status in inst.probe.expect_status
            out = [(inst.key("probe_success"), 1.0 if ok else 0.0)]
            if result.total_ms is not None:
                out.append((inst.key("probe_duration_ms"), result.total_ms))
            if result.status is not None:
                out.append((inst.key("probe_status"), float(result.status)))
            return out, result.answered
        if inst.kind == "metrics":
            result = await self._get(inst, None, METRICS_CAP)
            if result.status != 200:
                return [], False
            return await _parse(len(result.body), _prometheus_body, result.body, inst), True
        metrics_r, status_r = await asyncio.gather(
            self._get(inst, f"{inst.prefix}/metrics", METRICS_CAP),
            self._get(inst, f"{inst.prefix}/status", METRICS_CAP),
        )
        metrics = metrics_r.body if metrics_r.status == 200 else None
        status = status_r.body if status_r.status == 200 else None
        size = len(metrics or b"") + len(status or b"")
        return await _parse(size, _guard_bodies, metrics, status, inst)


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


async def _ready(value: list[Instance]) -> list[Instance]:
    return value
