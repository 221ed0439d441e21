/**
 * live.js — the console's live feed: ONE tab holds the push stream, every tab gets the events.
 *
 * Browsers share ~6 HTTP/1.1 connections per origin across all tabs, so a page that opens its
 * own EventSource hangs from the seventh tab on. Here the tabs of one browser elect a leader:
 *   - Web Locks: `navigator.locks.request("crisisctl-sse")` — the holder leads until its page
 *     goes away (the browser releases the lock at once; the next waiting tab gets it);
 *   - without Web Locks: a localStorage lease `{owner, until}` renewed every 0.5 s for 1.5 s;
 *     a follower claims an expired lease, so a closed leader is replaced within 2 s (at once
 *     when it could say goodbye on `pagehide`).
 * The leader holds `EventSource("/api/events")` and re-broadcasts every event on
 * `BroadcastChannel("crisisctl-events")`; followers only listen. The last event id is kept in
 * localStorage: a new leader (or a reloaded page) resumes with `?last_event_id=`, and the
 * server replays what it missed from its ring buffer (`reset` when the id is too old: pages
 * then refetch their snapshot). EventSource's own reconnects send `Last-Event-ID`.
 *
 * Fallback to polling `/api/events/poll` when push fails: no EventSource at all; a stream
 * that holds back events the server has (a buffering proxy: after `stallMs` without an event
 * the poll endpoint is asked, see `#probeStall`); or `maxErrors` failures in a row before any
 * event arrived. The poll delay is `pollDelay`:
 * 5 s × 1.2^idle polls, capped at 30 s, ±15 % jitter, back to 5 s when events arrive. Polling
 * pauses while every console tab is hidden (tabs announce that they are visible over the
 * channel) and resumes at once when one is shown.
 */

export const POLL = Object.freeze({ startMs: 5000, factor: 1.2, maxMs: 30000, jitter: 0.15 });

/**
 * The delay before the next poll after `idlePolls` polls in a row that brought no event.
 * base = min(30 s, 5 s × 1.2^idle); delay = min(30 s, base × (1 + jitter × (2r − 1))),
 * r uniform in [0, 1) from `random`. Pure: the same arguments give the same delay.
 */
export function pollDelay(idlePolls, random = Math.random) {
  const idle = Math.max(0, Math.floor(Number(idlePolls) || 0));
  const base = Math.min(POLL.maxMs, POLL.startMs * POLL.factor ** idle);
  const jittered = base * (1 + POLL.jitter * (2 * random() - 1));
  return Math.round(Math.min(POLL.maxMs, jittered));
}

const CHANNEL = "crisisctl-events";
const LOCK = "crisisctl-sse";
const LEASE_KEY = "crisisctl-sse-lease";
const LAST_ID_KEY = "crisisctl-last-event-id";
const LEASE_MS = 1500;
const RENEW_MS = 500;
const VISIBLE_EVERY_MS = 4000;
const EVENT_TYPES = ["hello", "fleet", "alert", "incident", "timeline", "reset"];
const SEEN_MAX = 2000;

function readLease() {
  try {
    return JSON.parse(localStorage.getItem(LEASE_KEY) || "null");
  } catch {
    return null;
  }
}

export class LiveFeed {
  constructor(options = {}) {
    this.eventsUrl = options.eventsUrl || "/api/events";
    this.pollUrl = options.pollUrl || "/api/events/poll";
    this.stallMs = options.stallMs ?? 20000;
    this.maxErrors = options.maxErrors ?? 3;
    this.onStatus = options.onStatus || (() => {});
    this.onUnauthorized = options.onUnauthorized || (() => {});
    this.id = Math.random().toString(36).slice(2) + Date.now().toString(36);
    /** "follower" | "leader" */
    this.role = "follower";
    /** "connecting" | "sse" | "poll" | "shared" (a follower) */
    this.mode = "connecting";
    this.state = "starting";
    this.paused = false;
    this.received = 0;
    this.polls = 0;
    this.idlePolls = 0;
    this.nextPollMs = null;
    this.lastEventId = localStorage.getItem(LAST_ID_KEY);
    this.listeners = new Map();
    this.seen = new Set();
    this.source = null;
    this.errors = 0;
    this.delivered = false;
    this.stallTimer = null;
    this.pollTimer = null;
    this.leaseTimer = null;
    this.useLocks = false;
    this.otherVisibleAt = 0;
  }

  /** Call `fn(event)` for events of `type` ("*": all), event = {id, type, data}. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  start() {
    this.channel = new BroadcastChannel(CHANNEL);
    this.channel.onmessage = (message) => this.#fromChannel(message.data);
    document.addEventListener("visibilitychange", () => this.#visibilityChanged());
    window.addEventListener("pagehide", () => this.#goodbye());
    window.addEventListener("pageshow", (event) => {
      // back from the back/forward cache: a leader whose stream `pagehide` closed reopens it
      if (event.persisted && this.role === "leader" && this.mode === "sse" && !this.source) this.#openStream();
    });
    this.#announceVisible();
    setInterval(() => this.#announceVisible(), VISIBLE_EVERY_MS);
    this.channel.postMessage({ kind: "hello-leader" }); // the leader answers with its status
    this.#status();
    this.useLocks = Boolean(navigator.locks && typeof navigator.locks.request === "function");
    if (this.useLocks) {
      // held until the page goes away: the promise never settles
      navigator.locks.request(LOCK, () => new Promise(() => this.#lead()));
    } else {
      this.#leaseTick();
      this.leaseTimer = setInterval(() => this.#leaseTick(), RENEW_MS);
    }
    return this;
  }

  // -- leadership ---------------------------------------------------------------------------
  #lead() {
    this.role = "leader";
    this.mode = "connecting";
    this.delivered = false;
    this.errors = 0;
    if (typeof window.EventSource === "function") this.#openStream();
    else this.#startPolling("this browser has no EventSource");
  }

  #stepDown() {
    this.role = "follower";
    this.mode = "shared";
    this.#closeStream();
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
    this.#status();
  }

  #leaseTick() {
    const now = Date.now();
    const lease = readLease();
    if (this.role === "leader") {
      if (lease && lease.owner !== this.id && lease.until > now) {
        this.#stepDown(); // another tab claimed it (both saw it expired): one leader only
        return;
      }
      localStorage.setItem(LEASE_KEY, JSON.stringify({ owner: this.id, until: now + LEASE_MS }));
    } else if (!lease || lease.until <= now) {
      localStorage.setItem(LEASE_KEY, JSON.stringify({ owner: this.id, until: now + LEASE_MS }));
      setTimeout(() => {
        const mine = readLease();
        if (this.role !== "leader" && mine && mine.owner === this.id) this.#lead();
      }, 60); // the last writer wins; the others read its name back and stay followers
    }
  }

  #goodbye() {
    if (this.role !== "leader") return;
    this.#closeStream();
    if (!this.useLocks) {
      const lease = readLease();
      if (lease && lease.owner === this.id) localStorage.removeItem(LEASE_KEY);
    }
    this.channel.postMessage({ kind: "leader-gone" });
  }

  // -- the stream ---------------------------------------------------------------------------
  #openStream() {
    this.#closeStream();
    const url = this.lastEventId
      ? `${this.eventsUrl}?last_event_id=${encodeURIComponent(this.lastEventId)}`
      : this.eventsUrl;
    const source = new EventSource(url, { withCredentials: true });
    this.source = source;
    this.mode = "sse";
    this.state = "connecting";
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (event) => this.#fromStream(type, event));
    }
    source.onopen = () => {
      this.state = "open";
      this.#status();
    };
    source.onerror = () => this.#streamError(source);
    this.#armStall(source);
    this.#status();
  }

  /** After `stallMs` without an event, ask the poll endpoint whether the stream is stuck. */
  #armStall(source) {
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => this.#probeStall(source), this.stallMs);
  }

  /**
   * A quiet stream and a stuck one (a proxy that buffers it) look alike: comment pings never
   * reach JavaScript. So the poll endpoint is asked for the events after the last one seen: if
   * it has some that the stream still has not brought 2 s later, the stream is stuck and the
   * feed polls instead; otherwise the server is just quiet and the stream stays.
   */
  async #probeStall(source) {
    if (this.source !== source) return;
    let events = [];
    try {
      const query = this.lastEventId ? `?last_event_id=${encodeURIComponent(this.lastEventId)}` : "";
      const response = await fetch(this.pollUrl + query, { credentials: "same-origin" });
      if (response.ok) {
        const body = await response.json();
        events = body.events || [];
        // a page that saw no event yet takes the server's last id as the point to judge from
        if (!this.lastEventId && body.last_event_id != null) this.#remember(String(body.last_event_id));
      }
    } catch {
      // the server is away: the stream's own errors will tell
    }
    const missing = events.filter((e) => e.id != null && e.type !== "reset" && !this.seen.has(String(e.id)));
    if (this.source !== source) return;
    if (!missing.length) {
      this.#armStall(source);
      return;
    }
    this.stallTimer = setTimeout(() => {
      if (this.source !== source) return;
      if (missing.some((e) => !this.seen.has(String(e.id)))) {
        this.#startPolling("the stream holds back events the server has (a buffering proxy?)");
      } else {
        this.#armStall(source);
      }
    }, 2000);
  }

  #closeStream() {
    clearTimeout(this.stallTimer);
    if (this.source) this.source.close();
    this.source = null;
  }

  #streamError(source) {
    if (this.source !== source) return;
    this.errors += 1;
    this.state = "reconnecting";
    if (!this.delivered && this.errors >= this.maxErrors) {
      this.#startPolling("the stream failed repeatedly");
      return;
    }
    if (source.readyState === EventSource.CLOSED) {
      // an HTTP error (not a network one): EventSource gives up; find out why, then retry
      this.#checkSession().then((ok) => {
        if (ok && this.source === source) {
          setTimeout(() => {
            if (this.source === source) this.#openStream();
          }, pollDelay(this.errors - 1));
        }
      });
    }
    this.#status();
  }

  #fromStream(type, message) {
    this.delivered = true;
    this.errors = 0;
    if (this.source) this.#armStall(this.source);
    if (this.state !== "open") {
      this.state = "open";
      this.#status();
    }
    let data = null;
    try {
      data = message.data ? JSON.parse(message.data) : null;
    } catch {
      data = message.data;
    }
    // an event sent without `id:` keeps the stream's previous id in `lastEventId`: not its own
    const source = message.target;
    const fresh = message.lastEventId && message.lastEventId !== source.previousId;
    source.previousId = message.lastEventId;
    this.#publish({ id: fresh ? message.lastEventId : null, type, data });
  }

  // -- polling ------------------------------------------------------------------------------
  #startPolling(reason) {
    this.#closeStream();
    this.mode = "poll";
    this.state = "polling";
    this.reason = reason;
    this.idlePolls = 0;
    this.#status();
    this.#poll();
  }

  #pollingPaused() {
    return document.hidden && Date.now() - this.otherVisibleAt > VISIBLE_EVERY_MS + 2000;
  }

  #schedulePoll() {
    clearTimeout(this.pollTimer);
    this.nextPollMs = pollDelay(this.idlePolls);
    this.pollTimer = setTimeout(() => this.#poll(), this.nextPollMs);
  }

  async #poll() {
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
    if (this.role !== "leader" || this.mode !== "poll") return;
    if (this.#pollingPaused()) {
      this.paused = true; // resumed by #visibilityChanged or a visible tab's announcement
      this.#status();
      return;
    }
    this.paused = false;
    this.polls += 1;
    try {
      const query = this.lastEventId ? `?last_event_id=${encodeURIComponent(this.lastEventId)}` : "";
      const response = await fetch(this.pollUrl + query, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.status === 401) {
        this.onUnauthorized();
        return;
      }
      if (!response.ok) throw new Error(`poll answered ${response.status}`);
      const body = await response.json();
      const events = Array.isArray(body.events) ? body.events : [];
      for (const event of events) {
        this.#publish({ id: event.id == null ? null : String(event.id), type: event.type, data: event.data });
      }
      if (body.last_event_id != null) this.#remember(String(body.last_event_id));
      this.idlePolls = events.length ? 0 : this.idlePolls + 1;
      this.state = "polling";
    } catch {
      this.idlePolls += 1;
      this.state = "poll failed, retrying";
    }
    this.#status();
    if (this.role === "leader" && this.mode === "poll") this.#schedulePoll();
  }

  #visibilityChanged() {
    this.#announceVisible();
    if (!document.hidden && this.role === "leader" && this.mode === "poll" && this.paused) {
      this.#poll(); // shown again: poll at once
    } else if (document.hidden && this.role === "leader" && this.mode === "poll") {
      if (this.#pollingPaused()) {
        clearTimeout(this.pollTimer);
        this.pollTimer = null;
        this.paused = true;
        this.#status();
      }
    }
  }

  #announceVisible() {
    if (!document.hidden && this.channel) this.channel.postMessage({ kind: "visible" });
  }

  // -- events -------------------------------------------------------------------------------
  #remember(id) {
    this.lastEventId = id;
    localStorage.setItem(LAST_ID_KEY, id);
  }

  #publish(event) {
    if (event.type === "reset") this.seen.clear();
    if (event.id) this.#remember(event.id);
    this.channel.postMessage({ kind: "event", event });
    this.#dispatch(event);
  }

  #fromChannel(message) {
    if (!message || typeof message !== "object") return;
    if (message.kind === "event") {
      if (message.event.type === "reset") this.seen.clear();
      if (message.event.id) this.lastEventId = message.event.id;
      this.#dispatch(message.event);
    } else if (message.kind === "status" && this.role !== "leader") {
      this.mode = "shared";
      this.state = `${message.mode}: ${message.state}`;
      this.onStatus(this.snapshot());
    } else if (message.kind === "visible") {
      this.otherVisibleAt = Date.now();
      if (this.role === "leader" && this.mode === "poll" && this.paused) this.#poll();
    } else if (message.kind === "leader-gone" && !this.useLocks && this.role !== "leader") {
      // (with Web Locks the browser hands the lock over by itself)
      setTimeout(() => this.#leaseTick(), Math.random() * 100);
    } else if (message.kind === "hello-leader" && this.role === "leader") {
      this.#status();
    }
  }

  #dispatch(event) {
    if (event.id) {
      if (this.seen.has(event.id)) return; // a replay after a leader change
      this.seen.add(event.id);
      if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value);
    }
    this.received += 1;
    for (const key of [event.type, "*"]) {
      for (const fn of this.listeners.get(key) || []) {
        try {
          fn(event);
        } catch (error) {
          console.error("crisisctl: a live-event handler failed", error);
        }
      }
    }
  }

  async #checkSession() {
    try {
      const response = await fetch("/api/me", { credentials: "same-origin" });
      if (response.status === 401) {
        this.onUnauthorized();
        return false;
      }
    } catch {
      // the server is away: keep trying
    }
    return true;
  }

  #status() {
    if (this.role === "leader" && this.channel) {
      this.channel.postMessage({ kind: "status", mode: this.mode, state: this.state });
    }
    this.onStatus(this.snapshot());
  }

  /** What the feed is doing (shown in the header; read by the browser tests). */
  snapshot() {
    return {
      role: this.role,
      mode: this.mode,
      state: this.state,
      paused: this.paused,
      lastEventId: this.lastEventId,
      received: this.received,
      polls: this.polls,
      idlePolls: this.idlePolls,
      nextPollMs: this.nextPollMs,
      reason: this.reason || null,
    };
  }
}
