"""Rate limits shared by several server instances through Redis, with a local fallback.

`RedisStorage` is what `ratelimit.open_storage` returns for a Redis URL: one client and one
`StorageHealth` for the guard's limiters, and the fleet's mode sync (guard/fleet.py).
`RedisRateLimiter` is a `RateLimiter` like `MemoryRateLimiter` (same `Decision`, same policy,
same GCRA and sliding-window arithmetic) but keeps its state in Redis, so every instance of a
service draws on one budget per key. Each hit is one atomic Lua script (EVALSHA, reloaded by
redis-py on NOSCRIPT) that evaluates every stacked limit of the policy on the Redis server's
own clock (``TIME``), so instances with skewed clocks still agree.

Keys: the state of `key` under limit i of a policy named NAME is ``{PREFIX:NAME:KEY}:i``. The
braces are a Redis Cluster hash tag: all keys of one script share it, so they live in one slot
and the multi-key script runs on a cluster too (``redis+cluster://host:port``, served by
redis-py's RedisCluster) instead of failing with CROSSSLOT. PREFIX is the guard's
`storage_prefix` + ":rl" (default ``crisisctl:rl``).

Redis is a dependency the guard must survive losing: every call is bounded by
`storage_timeout_s`, and on any error or timeout the limiter answers from an in-memory
limiter of the same policy (limits then hold per instance rather than globally). One
`StorageHealth` per guard records the outage, logs it once, exposes it on the status
endpoint, and lets at most one probe through per `retry_interval_s` until Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis.asyncio
import redis.asyncio.cluster
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from crisisctl.guard.config import GuardConfigError, RateLimit
from crisisctl.guard.ratelimit import Decision, MemoryRateLimiter, RateLimitPolicy

if TYPE_CHECKING:
    from crisisctl.guard.fleet import FleetSync
    from crisisctl.guard.modes import ModeState

__all__ = [
    "GCRA_SCRIPT",
    "SLIDING_WINDOW_SCRIPT",
    "RedisClient",
    "RedisRateLimiter",
    "RedisStorage",
    "StorageHealth",
    "create_limiter",
    "is_cluster_url",
    "make_redis_client",
    "mask_url",
]

log = logging.getLogger("crisisctl.guard")

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

#: a client of one Redis server or of a Redis Cluster (both take the same commands here)
RedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

# GCRA over every stacked limit of one policy, atomically, on the Redis server clock.
#   KEYS[i]                 theoretical arrival time TAT of limit i, µs since the epoch
#   ARGV[2i-1], ARGV[2i]    amount and period (µs) of limit i
# With T = period / amount and now = TIME (µs):
#   tat'      = max(TAT, now) + T
#   admit     iff tat' - now <= period          (every limit must admit)
#   remaining = floor((period - (tat' - now)) / T)
#   reset     = tat' - now    (admitted)   |   max(TAT, now) - now   (refused)
#   retry     = max(TAT, now) + T - period - now                     (refused)
# A refused request writes nothing; an admitted one stores every tat' with PX = period
# (tat' - now <= period, so the key is worthless once it expires). eps = 1 µs absorbs the
# rounding of T: at ~1.7e15 µs a double keeps 0.25 µs, and TAT is stored with %.17g.
# Returns {allowed, limit index (0-based), remaining, reset ms, retry-after ms}, ms rounded up.
GCRA_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local eps = 1
local best_index, best_remaining, best_reset = 0, -1, 0
local new_tats = {}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local interval = period / amount
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if not tat or tat < now then tat = now end
  local new_tat = tat + interval
  local ahead = new_tat - now
  if ahead > period + eps then
    local retry = tat + interval - period - now
    if retry < 0 then retry = 0 end
    return {0, i - 1, 0, math.ceil((tat - now) / 1000), math.ceil(retry / 1000)}
  end
  local remaining = math.floor((period - ahead + eps) / interval)
  if best_remaining < 0 or remaining < best_remaining then
    best_index, best_remaining, best_reset = i - 1, remaining, ahead
  end
  new_tats[i] = new_tat
end
for i = 1, #KEYS do
  local ttl = math.ceil(tonumber(ARGV[2 * i]) / 1000)
  redis.call('SET', KEYS[i], string.format('%.17g', new_tats[i]),
             'PX', string.format('%d', ttl))
end
return {1, best_index, best_remaining, math.ceil(best_reset / 1000), 0}
"""

# Sliding-window counter over every stacked limit of one policy, on the Redis server clock.
#   KEYS[i]                 "window previous current" of limit i (a string)
#   ARGV[2i-1], ARGV[2i]    amount and period (µs) of limit i
# With now = TIME (µs):
#   window    = floor(now / period)      (a stored window one behind shifts current into
#                                         previous; any other stale window starts from zero)
#   elapsed   = now - window * period
#   estimate  = previous * (1 - elapsed / period) + current
#   admit     iff estimate + 1 <= amount (every limit must admit; then current += 1 for all,
#               PX = 2 * period: the count still weighs in the next window)
#   remaining = floor(amount - estimate - 1)
#   reset     = period - elapsed
#   retry     = time until the estimate leaves room for one (see window_retry below,
#               the same as ratelimit._window_retry)
# A refused request writes nothing (a window shift is recomputed identically next time).
# Returns {allowed, limit index (0-based), remaining, reset ms, retry-after ms}, ms rounded up.
SLIDING_WINDOW_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local function window_retry(prev, cur, amount, period, elapsed)
  local room = amount - 1 - cur
  if room >= 0 and prev > 0 then
    -- prev * (1 - x / period) + cur <= amount - 1  ->  x >= period * (1 - room / prev)
    local needed = period * (1 - room / prev)
    if needed <= period then
      return math.max(0, needed - elapsed)
    end
  end
  local to_next = period - elapsed
  if cur > 0 then
    local needed = 0
    if cur > amount - 1 then needed = period * (1 - (amount - 1) / cur) end
    return to_next + math.max(0, needed)
  end
  return to_next
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local eps = 1e-9
local best_index, best_remaining, best_reset = 0, -1, 0
local windows, prevs, curs = {}, {}, {}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local window = math.floor(now / period)
  local prev, cur = 0, 0
  local raw = redis.call('GET', KEYS[i])
  if raw then
    local sw, sp, sc = string.match(raw, '^(%S+) (%S+) (%S+)$')
    sw, sp, sc = tonumber(sw), tonumber(sp), tonumber(sc)
    if sw and sp and sc then
      if sw == window then
        prev, cur = sp, sc
      elseif sw == window - 1 then
        prev, cur = sc, 0
      end
    end
  end
  local elapsed = now - window * period
  local estimate = prev * (1 - elapsed / period) + cur
  if estimate + 1 > amount + eps then
    local retry = window_retry(prev, cur, amount, period, elapsed)
    return {0, i - 1, 0, math.ceil((period - elapsed) / 1000), math.ceil(retry / 1000)}
  end
  local remaining = math.floor(amount - estimate - 1 + eps)
  if best_remaining < 0 or remaining < best_remaining then
    best_index, best_remaining, best_reset = i - 1, remaining, period - elapsed
  end
  windows[i], prevs[i], curs[i] = window, prev, cur
end
for i = 1, #KEYS do
  local ttl = math.ceil(2 * tonumber(ARGV[2 * i]) / 1000)
  redis.call('SET', KEYS[i], string.format('%d %d %d', windows[i], prevs[i], curs[i] + 1),
             'PX', string.format('%d', ttl))
end
if best_remaining < 0 then best_remaining = 0 end
return {1, best_index, best_remaining, math.ceil(best_reset / 1000), 0}
"""


def mask_url(url: str) -> str:
    """`url` with its password (userinfo or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(name.lower() == "password" for name, _ in pairs):
                masked = [(n, "***" if n.lower() == "password" else v) for n, v in pairs]
                query = urlencode(masked, safe="*")
        if netloc == parts.netloc and query == parts.query:
            return url
        # rebuilt by hand: urlunsplit would drop the "//" of unix:///path (empty netloc)
        masked_url = f"{parts.scheme}://{netloc}{parts.path}"
        if query:
            masked_url += f"?{query}"
        if parts.fragment:
            masked_url += f"#{parts.fragment}"
        return masked_url
    except ValueError:
        return "<unparsable storage url>"


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, (redis.exceptions.MovedError, redis.exceptions.ClusterCrossSlotError)):
        # a plain client sent to a node of a Redis Cluster
        text += " (this server is a node of a Redis Cluster: use redis+cluster://host:port)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StorageHealth:
    """Health of the shared rate-limit storage, shared by all limiters of one guard.

    Healthy: every hit goes to Redis. After a failure: the outage is logged once (WARNING),
    hits go straight to the local fallback, and at most one probe per `retry_interval_s`
    (monotonic clock) tries Redis again; the first success logs the recovery once (INFO).
    """

    def __init__(
        self,
        url: str,
        *,
        backend: str = "redis",
        retry_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if retry_interval_s < 0:
            raise ValueError("retry_interval_s must be ≥ 0")
        self.backend = backend
        #: the storage URL with its password masked
        self.url = mask_url(url)
        self.retry_interval_s = retry_interval_s
        self.healthy = True
        self.errors_total = 0
        self.fallback_hits_total = 0
        self.last_error: str | None = None
        #: wall-clock time (time.time()) of the last error
        self.last_error_at: float | None = None
        #: wall-clock time (time.time()) the current outage began; None while healthy
        self.down_since: float | None = None
        self._clock = clock
        self._next_attempt_at = 0.0

    def should_attempt(self) -> bool:
        """Whether this hit may ask Redis (always while healthy; one probe per interval after)."""
        if self.healthy:
            return True
        now = self._clock()
        if now >= self._next_attempt_at:
            # claim the probe slot so concurrent requests don't all pile onto a dead server
            self._next_attempt_at = now + self.retry_interval_s
            return True
        return False

    def record_failure(self, exc: BaseException, detail: str | None = None) -> None:
        """Count one failed round trip; log the outage once when it begins."""
        self.errors_total += 1
        self.last_error = detail or _error_text(exc)
        self.last_error_at = time.time()
        self._next_attempt_at = self._clock() + self.retry_interval_s
        if self.healthy:
            self.healthy = False
            self.down_since = self.last_error_at
            log.warning(
                "rate-limit storage %s unreachable (%s); using local in-memory limits "
                "until it recovers",
                self.url,
                self.last_error,
            )

    def record_success(self) -> None:
        """Note a successful round trip; log the recovery once when an outage ends."""
        if self.healthy:
            return
        down_for = time.time() - self.down_since if self.down_since is not None else 0.0
        self.healthy = True
        self.down_since = None
        log.info(
            "rate-limit storage %s recovered after %.1f s; shared limits restored",
            self.url,
            down_for,
        )

    def record_fallback(self) -> None:
        """Count one hit answered by the local fallback limiter."""
        self.fallback_hits_total += 1

    def describe(self) -> dict[str, object]:
        """JSON-able description for the status endpoint."""
        return {
            "backend": self.backend,
            "url": self.url,
            "healthy": self.healthy,
            "errors_total": self.errors_total,
            "fallback_hits_total": self.fallback_hits_total,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "down_since": self.down_since,
            "retry_interval_s": self.retry_interval_s,
        }


def _client_url(client: RedisClient) -> str:
    """A best-effort URL naming `client`'s server (for logs when no health was given)."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        nodes = client.get_nodes() or client.nodes_manager.startup_nodes.values()
        return "redis+cluster://" + ",".join(sorted(node.name for node in nodes))
    kwargs: dict[str, Any] = dict(client.connection_pool.connection_kwargs)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host = kwargs.get("host", "localhost")
    return f"redis://{host}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


class RedisRateLimiter:
    """Limiter for one policy whose state lives in Redis; same interface, but `hit` is async.

    `hit` never raises: on any Redis error or timeout it records the failure in `health` and
    answers from `fallback` (a MemoryRateLimiter of the same policy).
    """

    is_async = True

    def __init__(
        self,
        policy: RateLimitPolicy,
        client: RedisClient,
        *,
        fallback: MemoryRateLimiter | None = None,
        health: StorageHealth | None = None,
        timeout_s: float = 0.25,
        key_prefix: str = "crisisctl:rl",
    ) -> None:
        if policy.strategy not in ("gcra", "sliding-window"):
            raise GuardConfigError(f"unknown strategy {policy.strategy!r}")
        if fallback is not None and fallback.policy is not policy:
            raise ValueError("the fallback limiter must serve the same policy")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.policy = policy
        self.client = client
        self.fallback = fallback if fallback is not None else MemoryRateLimiter(policy)
        self.health = health if health is not None else StorageHealth(_client_url(client))
        self.timeout_s = timeout_s
        self.key_prefix = key_prefix
        source = GCRA_SCRIPT if policy.strategy == "gcra" else SLIDING_WINDOW_SCRIPT
        self._script = client.register_script(source)
        self._args_for: tuple[RateLimit, ...] | None = None
        self._args: list[int] = []

    def __len__(self) -> int:
        return len(self.fallback)

    def rotate(self, now: float) -> None:
        """Rotate the fallback's generations (Redis expires idle keys by itself)."""
        self.fallback.rotate(now)

    def keys(self, key: str) -> list[str]:
        """The Redis keys holding `key`'s state, one per current limit, in one cluster slot.

        ``{prefix:name:key}:i``: Redis Cluster hashes only the text between the first ``{``
        and the next ``}``. That text is the same for every limit of one call (even when the
        policy name or the key holds braces, it is cut at the same place), and never empty
        (the prefix comes first and holds no braces), so one script's keys share one slot.
        """
        tag = f"{{{self.key_prefix}:{self.policy.name}:{key}}}"
        return [f"{tag}:{i}" for i in range(len(self.policy.limits))]

    def _current_args(self) -> tuple[Sequence[RateLimit], list[int]]:
        limits = self.policy.limits
        if limits is not self._args_for:
            args: list[int] = []
            for limit in limits:
                args.append(limit.amount)
                args.append(max(1, round(limit.period * 1_000_000)))
            self._args_for, self._args = limits, args
        return limits, self._args

    async def hit(self, key: str, now: float) -> Decision:
        """Count one request for `key`; `now` (monotonic seconds) is used only by the fallback.

        Redis decides on its own clock; on error, timeout or while the storage is known to be
        down (between probes) the in-memory fallback decides.
        """
        health = self.health
        if health.should_attempt():
            try:
                limits, args = self._current_args()
                async with asyncio.timeout(self.timeout_s):
                    reply = await self._script(keys=self.keys(key), args=args)
                decision = _decision(reply, len(limits))
            except TimeoutError as exc:
                health.record_failure(exc, f"no answer within {self.timeout_s:g} s")
            except Exception as exc:
                health.record_failure(exc)
            else:
                health.record_success()
                return decision
        health.record_fallback()
        return self.fallback.hit(key, now)

    async def decide(self, key: str, now: float) -> Decision:
        """`hit` (the `RateLimiter` call shared with the memory limiter)."""
        return await self.hit(key, now)


def _decision(reply: Any, n_limits: int) -> Decision:
    """Build a Decision from a script reply {allowed, index, remaining, reset ms, retry ms}."""
    allowed, index, remaining, reset_ms, retry_ms = (int(value) for value in reply)
    if not 0 <= index < n_limits:
        raise ValueError(f"limit index {index} out of range in script reply {reply!r}")
    return Decision(allowed == 1, index, remaining, reset_ms / 1000.0, retry_ms / 1000.0)


def is_cluster_url(url: str) -> bool:
    """Whether `url` names a Redis Cluster (redis+cluster:// or rediss+cluster://)."""
    return url.startswith(_CLUSTER_SCHEMES)


def make_redis_client(url: str, timeout_s: float) -> RedisClient:
    """An asyncio client for `url` whose socket operations give up after `timeout_s`.

    redis://, rediss:// and unix:// give a client of one server; redis+cluster://host:port
    (rediss+cluster:// with TLS) a RedisCluster client that discovers the other nodes from
    that one and sends each command to the node owning its keys' slot. It retries a failed
    command once, at once (a pooled connection may have died with a restarted server); the
    caller's own timeout still bounds the whole call.
    """
    if is_cluster_url(url):
        plain = url.replace("+cluster://", "://", 1)
        return redis.asyncio.cluster.RedisCluster.from_url(
            plain,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
    return redis.asyncio.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )


class RedisStorage:
    """Rate-limit state (and the fleet's mode) in Redis or a Redis Cluster, from one URL.

    One client and one `StorageHealth` serve every limiter of the guard; the fleet sync gets
    a client of its own (its pub/sub connection must not take a request-path connection).
    """

    def __init__(self, url: str, *, timeout_s: float = 0.25, prefix: str = "crisisctl") -> None:
        if not url.startswith(_REDIS_SCHEMES + _CLUSTER_SCHEMES):
            raise GuardConfigError(
                f"unknown storage {mask_url(url)!r}: use redis://host:port/db "
                "or redis+cluster://host:port"
            )
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.backend = "redis-cluster" if is_cluster_url(url) else "redis"
        self.url = mask_url(url)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._raw_url = url
        self.health = StorageHealth(url, backend=self.backend)
        self._client: RedisClient | None = None
        self._closers: list[RedisClient] = []

    @property
    def client(self) -> RedisClient:
        """The limiters' client (built on first use; no I/O until a command is sent)."""
        if self._client is None:
            self._client = self.new_client(self.timeout_s)
        return self._client

    def new_client(self, timeout_s: float) -> RedisClient:
        """Another client of this storage, closed with it."""
        client = make_redis_client(self._raw_url, timeout_s)
        self._closers.append(client)
        return client

    async def warm_up(self) -> None:
        """Connect the limiters' client and load their scripts, so that the first requests
        do not spend their `timeout_s` on it (a cluster client first discovers its nodes and
        loads the scripts on every primary: more than 0.25 s on a busy host). Best effort,
        bounded; run by the fleet sync at start-up (before the guard's lifespan completes)."""
        client = self.client
        try:
            async with asyncio.timeout(max(2.0, self.timeout_s)):
                if isinstance(client, redis.asyncio.cluster.RedisCluster):
                    await client.initialize()
                for script in (GCRA_SCRIPT, SLIDING_WINDOW_SCRIPT):
                    await client.script_load(script)
        except Exception as exc:  # the limiters fall back on their own if Redis is down
            log.debug("warming up the rate-limit storage failed: %s", _error_text(exc))

    def limiter(self, policy: RateLimitPolicy) -> RedisRateLimiter:
        return RedisRateLimiter(
            policy,
            self.client,
            fallback=MemoryRateLimiter(policy),
            health=self.health,
            timeout_s=self.timeout_s,
            key_prefix=f"{self.prefix}:rl",
        )

    def fleet(self, modes: ModeState, on_change: Callable[[], None]) -> FleetSync:
        from crisisctl.guard.fleet import FleetSync

        return FleetSync(
            self.new_client(max(self.timeout_s, 1.0)),
            modes,
            on_change,
            prefix=self.prefix,
            timeout_s=max(self.timeout_s, 1.0),
            url=self.url,
            on_start=self.warm_up,
        )

    async def aclose(self) -> None:
        closers, self._closers, self._client = self._closers, [], None
        for client in closers:
            try:
                await client.aclose()
            except Exception as exc:  # closing must not fail the shutdown
                log.debug("closing a Redis client failed: %s", _error_text(exc))


def create_limiter(
    policy: RateLimitPolicy,
    storage_url: str,
    *,
    health: StorageHealth | None,
    client: RedisClient | None,
    timeout_s: float,
    key_prefix: str = "crisisctl:rl",
) -> MemoryRateLimiter | RedisRateLimiter:
    """The limiter for `policy` on `storage_url`, with an explicit client and health.

    Pass one `client` and one `health` for all limiters of a guard so they share a connection
    pool and one outage state; without them each limiter builds its own. (The guard itself
    goes through `ratelimit.open_storage`, which does this once per storage.)
    """
    if storage_url.startswith("memory://"):
        return MemoryRateLimiter(policy)
    if not storage_url.startswith(_REDIS_SCHEMES + _CLUSTER_SCHEMES):
        raise GuardConfigError(
            f"unknown storage {mask_url(storage_url)!r}: use memory:// or redis://host:port/db"
        )
    if client is None:
        client = make_redis_client(storage_url, timeout_s)
    if health is None:
        health = StorageHealth(
            storage_url, backend="redis-cluster" if is_cluster_url(storage_url) else "redis"
        )
    return RedisRateLimiter(
        policy,
        client,
        fallback=MemoryRateLimiter(policy),
        health=health,
        timeout_s=timeout_s,
        key_prefix=key_prefix,
    )
