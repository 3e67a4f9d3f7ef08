// aerobridge-client: session protocol v2 (docs/protocol-v2.md) for browsers and Node, one ES
// module, no dependencies.
//
//   import { connect } from "aerobridge-client";
//   const client = await connect("ws://127.0.0.1:8765/", { vars: ["Aircraft.*"], hz: 10 });
//   client.on("update", (u) => console.log(u.updateCounter, client.state["Aircraft.Altitude"]));
//   await client.set("Controls.Throttle", 0.75); // the server's ack, or a ClientError
//
// `client.state` is always the full view rebuilt from keyframes and deltas. A lost connection is
// reopened with jittered, capped backoff and the session *resumed*: the server acknowledges the
// same subscriptions again and sends current keyframes, so nothing is subscribed twice and a
// keyframe already shown is not shown again. `client.stale` is true while the source says its
// data is not live, no update came within two periods, or the connection is down.
//
// Node 22+ has a global WebSocket; Node 20 needs `--experimental-websocket`, or pass a class
// (e.g. the `ws` package's) as `options.WebSocket`.

export const SUBPROTOCOL = "aerobridge.v2";
/** Keyframes kept per profile: a delta names a keyframe at most a second old. */
const KEYS_KEPT = 4;
/** Updates kept for async iteration when the reader falls behind (`state` is always current). */
const UPDATES_KEPT = 1024;
/** Without a `welcome` this long while v1 frames arrive, the server is a plain v1 bridge. */
const V1_PATIENCE_MS = 1500;
/** A plain bridge's broadcast rate (upstream's default, 20 ms); `hz` keeps every n-th frame. */
const V1_RATE_HZ = 50;

/** An error with a stable `code`: the server's reason token (`read_only`, `unknown_variable`,
 * `unauthorized`, …; `message` is the server's text) or the client's own (`bad_url`,
 * `connect_failed`, `timeout`, `disconnected`, `closed`, `not_v2`, `no_websocket`). */
export class ClientError extends Error {
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = "ClientError";
    this.code = code;
    this.serverMessage = message;
    this.details = details;
  }
}

const refusal = (reply) => {
  const e = reply.error && typeof reply.error === "object" ? reply.error : reply;
  return new ClientError(String(e.code ?? "refused"), String(e.message ?? ""), e);
};

/** Checks a URL: `ws://` or `wss://` (a browser has no raw TCP). Throws `bad_url`. */
export function checkUrl(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new ClientError("bad_url", `${JSON.stringify(url)}: not a URL`);
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new ClientError("bad_url", `${JSON.stringify(url)}: expected ws://HOST:PORT/ or wss://HOST:PORT/`);
  }
  return parsed;
}

const toNumber = (x) => (x === null || x === undefined ? null : Number(x));
const toText = (x) => (x === null || x === undefined ? null : String(x));

/** The state of one v2 session, rebuilt message by message. No I/O: the benchmark and the unit
 * tests drive it with parsed messages. */
export class SessionState {
  constructor() {
    this.profiles = new Map();
    this.state = {};
    this.updateCounter = null;
    this.timestamp = null;
    this.valid = true;
    this.types = new Map();
  }

  /** A `sub` ack (first or resumed): its profile's names are known now. */
  subscribed(ack) {
    const names = ack.vars.slice();
    const old = this.profiles.get(ack.profile);
    const same = old && old.names.length === names.length && old.names.every((n, i) => n === names[i]);
    this.profiles.set(ack.profile, {
      names,
      convert: names.map((n) => (this.types.get(n) === "string" ? toText : toNumber)),
      every: Math.max(1, ack.every ?? 1),
      keys: same ? old.keys : new Map(),
      seq: same ? old.seq : null,
      base: null,
      dirty: [],
    });
  }

  /** A keyframe or delta: returns the update, or null for a frame already shown (a resumed
   * session's keyframe may repeat one) or a delta whose keyframe never came. */
  data(m) {
    const p = this.profiles.get(m.p);
    if (!p) return null;
    const seq = m.seq, key = m.op === "key", names = p.names, convert = p.convert, state = this.state;
    if (p.seq !== null && seq <= p.seq) {
      if (key) keep(p, seq, m.v.map((x, i) => convert[i](x)));
      return null;
    }
    const changed = {};
    const apply = (name, x) => {
      if (state[name] !== x || !(name in state)) { changed[name] = x; state[name] = x; }
    };
    if (key) {
      const values = m.v.map((x, i) => convert[i](x));
      keep(p, seq, values);
      for (let i = 0; i < names.length; i++) apply(names[i], values[i]);
      p.base = seq;
      p.dirty = [];
    } else {
      const base = p.keys.get(m.base);
      if (!base) return null;
      const delta = new Map();
      for (const [pos, x] of m.c) delta.set(pos, convert[pos](x));
      const value = (i) => (delta.has(i) ? delta.get(i) : base[i]);
      if (p.base === m.base) {
        // Only what the previous delta changed from this keyframe, and this one's, can differ.
        for (const i of p.dirty) if (!delta.has(i)) apply(names[i], base[i]);
        for (const [i, x] of delta) apply(names[i], x);
      } else {
        for (let i = 0; i < names.length; i++) apply(names[i], value(i));
      }
      p.base = m.base;
      p.dirty = [...delta.keys()];
    }
    p.seq = seq;
    this.updateCounter = seq;
    this.timestamp = m.t;
    this.valid = m.valid !== 0;
    return { updateCounter: seq, timestamp: m.t, values: changed, valid: this.valid, keyframe: key };
  }

  /** A v1 frame (a plain bridge): the wanted subset of its variables. */
  v1Frame(frame, wanted) {
    const vars = frame.variables ?? {};
    const seq = frame.update_counter ?? 0;
    if (this.updateCounter !== null && seq <= this.updateCounter) return null;
    const changed = {};
    for (const name of Object.keys(vars)) {
      if (wanted && !wanted(name)) continue;
      const x = typeof vars[name] === "string" ? vars[name] : toNumber(vars[name]);
      if (this.state[name] !== x) { changed[name] = x; this.state[name] = x; }
    }
    this.updateCounter = seq;
    this.timestamp = frame.timestamp ?? null;
    this.valid = frame.data_valid !== 0 && frame.data_valid !== false;
    return { updateCounter: seq, timestamp: this.timestamp, values: changed, valid: this.valid, keyframe: true };
  }
}

function keep(p, seq, values) {
  p.keys.set(seq, values);
  if (p.keys.size > KEYS_KEPT) p.keys.delete(Math.min(...p.keys.keys()));
}

const matches = (patterns) => (name) =>
  patterns.some((p) => (p.endsWith("*") ? name.startsWith(p.slice(0, -1)) : name === p));

const now = () => (typeof performance !== "undefined" ? performance.now() : Date.now());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One aerobridge session. Create it with {@link connect}. */
export class Client {
  constructor(url, options = {}) {
    this.url = checkUrl(url).href;
    this.vars = options.vars ?? null;
    this.hz = options.hz ?? null;
    this.mode = options.mode ?? "delta";
    if (this.mode !== "delta" && this.mode !== "full") throw new TypeError(`mode must be "delta" or "full", not ${this.mode}`);
    this.token = options.token ?? null;
    this.timeout = options.timeout ?? 10000;
    this.backoff = options.backoff ?? [250, 5000];
    this.clientName = options.clientName ?? "aerobridge-client-js/0.1";
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) {
      throw new ClientError("no_websocket", "no WebSocket class: Node 20 needs --experimental-websocket, or pass options.WebSocket");
    }
    /** Every variable the server publishes, in wire order: name → {name, type, unit, writable}. */
    this.catalog = new Map();
    this.session = null;
    /** 2, or 1 when the server is a plain bridge (v1 frames, read-only). */
    this.protocol = 2;
    this.welcome = {};
    /** The subscription's ack: vars (wire order), every, hz, profile, sub. */
    this.subscription = {};
    this.reconnects = 0;
    this.resumed = null;
    this.updatesDropped = 0;
    this.lastError = null;
    /** The last `Update` object handed out. */
    this.lastUpdate = null;
    /** Characters of the last message and of all messages received (after inflating). */
    this.lastMessageBytes = 0;
    this.bytesReceived = 0;
    this._s = new SessionState();
    this._ws = null;
    this._connected = false;
    this._closing = false;
    this._pending = new Map();
    this._nextId = 1;
    this._listeners = new Map();
    this._updates = [];
    this._wake = null;
    this._iterators = 0;
    this._welcomes = [];
    this._welcomeWaiter = null;
    this._v1Frames = 0;
    this._lastReceived = this._lastSent = this._lastUpdate = now();
    this._wasStale = null;
    this._timer = null;
  }

  /** Every subscribed variable's value (number, string or null, as the catalog says). */
  get state() { return this._s.state; }
  /** The `update_counter` of the frame `state` reflects. */
  get updateCounter() { return this._s.updateCounter; }
  /** That frame's timestamp, µs since the UNIX epoch. */
  get timestamp() { return this._s.timestamp; }
  get connected() { return this._connected; }
  /** The WebSocket extensions the server agreed to (e.g. permessage-deflate), "" for none. */
  get extensions() { return this._ws?.extensions ?? ""; }
  /** Milliseconds between updates: the subscription's `every` frames at the server's rate. */
  get period() {
    const rate = this.welcome.rate_hz ?? 50;
    if (this.protocol === 1) return (1000 * (this.hz ? Math.max(1, Math.round(V1_RATE_HZ / this.hz)) : 1)) / V1_RATE_HZ;
    return (1000 * Math.max(1, this.subscription.every ?? 1)) / rate;
  }
  /** True while the source says its data is not live (`data_valid` 0), no update came within
   * two periods, or the connection is down. */
  get stale() {
    return !this._connected || !this._s.valid || now() - this._lastUpdate > 2 * this.period;
  }

  /** Events: `update` (an Update), `stale` (boolean, on change), `connected`, `disconnected`
   * (the reason). Returns a function that removes the listener. */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this._listeners.get(event).delete(listener);
  }

  _fire(event, value) {
    for (const l of this._listeners.get(event) ?? []) {
      try { l(value); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }

  async *[Symbol.asyncIterator]() {
    this._iterators++;
    try {
      while (true) {
        while (this._updates.length) yield this._updates.shift();
        if (this._closing) return;
        await new Promise((r) => (this._wake = r));
      }
    } finally {
      if (--this._iterators === 0) this._updates.length = 0;
    }
  }

  /** Sets one variable, or several together: `set("Controls.Throttle", 0.75)` or
   * `set({"Controls.Throttle": 0.75, "Controls.Flaps": 0.5})`. Resolves to the server's ack
   * (`{frame}` or `{relayed: true}`); rejects with a ClientError carrying the server's code and
   * words, or `disconnected` / `timeout` when no answer came (it may or may not have applied). */
  async set(name, value) {
    if (this.protocol === 1) throw new ClientError("not_v2", `${this.url} is a v1 bridge: send commands to its command port`);
    const fields = typeof name === "object" ? { values: name } : { variable: name, value };
    const reply = await this._call("set", fields);
    if (reply.ok) return { frame: reply.frame ?? null, relayed: !!reply.relayed, raw: reply };
    throw refusal(reply);
  }

  /** Round trip to the server, in milliseconds. */
  async ping() {
    const start = now();
    await this._call("ping", {});
    return now() - start;
  }

  /** Closes the connection and stops reconnecting; async iteration ends. */
  async close() {
    if (this._closing) return;
    this._closing = true;
    this._connected = false;
    clearInterval(this._timer);
    this._failPending(new ClientError("closed", "the client was closed"));
    try { this._ws?.close(1000); } catch { /* already closed */ }
    this._wake?.();
  }

  // -- the connection ----------------------------------------------------------------------

  async _start() {
    await this._open();
    this._timer = setInterval(() => this._keepalive(), 100);
    this._timer.unref?.();
  }

  _open() {
    return new Promise((resolve, reject) => {
      let url = this.url;
      if (this.token) {
        const u = new URL(url);
        u.searchParams.set("token", this.token);
        url = u.href;
      }
      let ws;
      try {
        ws = new this.WebSocket(url, SUBPROTOCOL);
      } catch (e) {
        reject(new ClientError("bad_url", `${this.url}: ${e.message}`));
        return;
      }
      this._ws = ws;
      this._welcomes = [];
      this._v1Frames = 0;
      let opened = false, settled = false;
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try { ws.close(); } catch { /* closing */ }
        this._failPending(new ClientError("disconnected", "the connection ended"));
        reject(error);
      };
      const timer = setTimeout(() => fail(new ClientError("timeout", `${this.url}: no v2 session within ${this.timeout} ms`)), this.timeout);
      ws.onopen = () => {
        opened = true;
        this._lastReceived = now();
        this._greet(ws).then(() => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this._connected = true;
          this._lastUpdate = now();
          this._fire("connected", this.session);
          resolve();
        }, fail);
      };
      ws.onerror = () => { if (!opened) fail(new ClientError("connect_failed", `${this.url}: the connection failed (nothing listening, or the bridge refused this page's origin: see its --allowed-origin)`)); };
      ws.onclose = (e) => {
        const why = `connection closed (${e.code}${e.reason ? " " + e.reason : ""})`;
        this.lastError = why;
        if (!settled) {
          fail(new ClientError(opened ? "disconnected" : "connect_failed", `${this.url}: ${why}`));
          return;
        }
        if (ws !== this._ws || this._closing || !this._connected) return;
        this._connected = false;
        this._failPending(new ClientError("disconnected", `the connection ended (${why})`));
        this._fire("disconnected", why);
        this._reconnect();
      };
      ws.onmessage = (e) => {
        this._lastReceived = now();
        if (typeof e.data !== "string") return;
        this.lastMessageBytes = e.data.length;
        this.bytesReceived += e.data.length;
        let m;
        try { m = JSON.parse(e.data); } catch { this.lastError = "protocol: not JSON"; return; }
        try { this._dispatch(m); } catch (err) { this.lastError = `protocol: ${err.message}`; }
      };
    });
  }

  _nextWelcome(patienceMs) {
    if (this._welcomes.length) return Promise.resolve(this._welcomes.shift());
    return new Promise((resolve) => {
      const timer = patienceMs ? setTimeout(() => { this._welcomeWaiter = null; resolve(null); }, patienceMs) : null;
      this._welcomeWaiter = (m) => { clearTimeout(timer); resolve(m); };
    });
  }

  async _greet(ws) {
    const resume = this.protocol === 2 ? this.session : null;
    let welcome;
    if (ws.protocol === SUBPROTOCOL) {
      welcome = await this._nextWelcome();
      if (resume) {
        this._send(ws, { op: "hello", protocol: 2, client: this.clientName, resume });
        welcome = await this._nextWelcome();
      }
    } else {
      this._send(ws, { op: "hello", protocol: 2, client: this.clientName, ...(resume ? { resume } : {}) });
      for (;;) {
        welcome = await this._nextWelcome(V1_PATIENCE_MS);
        if (welcome) break;
        if (this._v1Frames) { this.protocol = 1; return; }
      }
    }
    if (welcome.op === "error") throw refusal(welcome);
    this.protocol = 2;
    this.welcome = welcome;
    const resumed = !!resume && welcome.resumed === true;
    this.session = welcome.session;
    if (welcome.catalog !== this._catalogHash || !this.catalog.size) {
      const reply = await this._call("catalog", {}, ws);
      this.catalog = new Map((reply.variables ?? []).map((v) => [v.name, v]));
      this._s.types = new Map([...this.catalog].map(([n, v]) => [n, v.type]));
      this._catalogHash = welcome.catalog;
    }
    if (resume) this.resumed = resumed;
    if (!resumed) {
      this._s.profiles.clear();
      const fields = { mode: this.mode };
      if (this.vars) fields.vars = this.vars;
      if (this.hz) fields.hz = this.hz;
      const ack = await this._call("sub", fields, ws);
      if (!ack.ok) throw refusal(ack);
      this._s.subscribed(ack);
      this.subscription = ack;
    }
  }

  _dispatch(m) {
    switch (m.op) {
      case "key":
      case "delta":
        this._emit(this._s.data(m));
        break;
      case "ack":
        if (m.vars && m.ok) {
          this._s.subscribed(m);
          this.subscription = m;
          if (m.resumed) break; // a resumed subscription: its id is the sub's, not a request's
        }
        this._resolve(m);
        break;
      case "welcome":
        this._welcome(m);
        break;
      case "catalog":
      case "pong":
        this._resolve(m);
        break;
      case "error":
        if (this._pending.has(m.id)) this._resolve(m);
        else if (m.code === "unsupported_protocol" && !this._connected) this._welcome(m);
        else this.lastError = `${m.code}: ${m.message}`;
        break;
      case undefined:
        if (m.schema) {
          this._v1Frames++;
          const every = this.hz ? Math.max(1, Math.round(V1_RATE_HZ / this.hz)) : 1;
          if (this.protocol === 1 && (m.update_counter ?? 0) % every === 0) {
            this._emit(this._s.v1Frame(m, this.vars ? matches(this.vars) : null));
          }
        }
        break;
      default:
        break; // hb, and ops added later
    }
  }

  _welcome(m) {
    const waiter = this._welcomeWaiter;
    this._welcomeWaiter = null;
    if (waiter) waiter(m); else this._welcomes.push(m);
  }

  _emit(update) {
    if (!update) return;
    this._lastUpdate = now();
    this.lastUpdate = update;
    if (this._updates.length >= UPDATES_KEPT) { this._updates.shift(); this.updatesDropped++; }
    // Only an async iterator drains the queue: without one, nothing is kept.
    if (this._iterators) this._updates.push(update);
    const wake = this._wake;
    this._wake = null;
    wake?.();
    this._fire("update", update);
    this._checkStale();
  }

  _checkStale() {
    const stale = this.stale;
    if (stale !== this._wasStale) {
      this._wasStale = stale;
      this._fire("stale", stale);
    }
  }

  async _reconnect() {
    let attempt = 0;
    while (!this._closing) {
      const [base, cap] = this.backoff;
      await sleep(Math.min(cap, base * 2 ** attempt) * (0.5 + Math.random() / 2));
      if (this._closing) return;
      try {
        await this._open();
        this.reconnects++;
        return;
      } catch (e) {
        this.lastError = e.message;
        attempt = Math.min(attempt + 1, 16);
      }
    }
  }

  /** Heartbeats (the server drops a v2 client silent for `idle_timeout_ms`); a connection
   * silent for three heartbeat periods is presumed dead; stale changes are announced. */
  _keepalive() {
    this._checkStale();
    const ws = this._ws;
    if (!this._connected || !ws || this.protocol === 1) return;
    const t = now();
    const idle = this.welcome.idle_timeout_ms ?? 90000;
    if (t - this._lastSent > Math.min(idle / 3, 20000)) this._send(ws, { op: "hb" });
    if (t - this._lastReceived > Math.max(3 * (this.welcome.heartbeat_ms ?? 1000), 3000)) {
      this.lastError = "the server went silent";
      try { ws.close(); } catch { /* closing */ }
    }
  }

  // -- requests ----------------------------------------------------------------------------

  _send(ws, message) {
    ws.send(JSON.stringify(message));
    this._lastSent = now();
  }

  _call(op, fields, ws = this._connected ? this._ws : null) {
    if (!ws || ws.readyState !== 1) {
      return Promise.reject(this._closing
        ? new ClientError("closed", "the client was closed")
        : new ClientError("disconnected", `not connected to ${this.url} (reconnecting)`));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new ClientError("timeout", `no reply to ${op} within ${this.timeout} ms`));
      }, this.timeout);
      this._pending.set(id, { resolve: (m) => { clearTimeout(timer); resolve(m); }, reject: (e) => { clearTimeout(timer); reject(e); } });
      this._send(ws, { op, id, ...fields });
    });
  }

  _resolve(m) {
    const p = this._pending.get(m.id);
    if (!p) return;
    this._pending.delete(m.id);
    p.resolve(m);
  }

  _failPending(error) {
    const all = [...this._pending.values()];
    this._pending.clear();
    for (const p of all) p.reject(error);
  }
}

/**
 * Connects to an aerobridge (or a plain v1 bridge) and subscribes.
 * @param {string} url `ws://HOST:PORT/` or `wss://HOST:PORT/`
 * @param {object} [options] `vars` (names or prefixes ending in `*`; all when absent), `hz`,
 *   `mode` ("delta" or "full"), `token` (the server's --command-token, for `set`), `timeout`
 *   (ms), `backoff` ([first, cap] ms), `clientName`, `WebSocket` (a class, where there is no
 *   global one).
 * @returns {Promise<Client>} once subscribed; rejects with a ClientError (`bad_url`,
 *   `connect_failed`, `timeout`, or the server's refusal such as `unknown_variable`).
 */
export async function connect(url, options = {}) {
  const client = new Client(url, options);
  try {
    await client._start();
  } catch (e) {
    await client.close();
    throw e;
  }
  return client;
}
