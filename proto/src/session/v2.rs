//! Session protocol v2 (`design/protocol-v2.md`, copied to `docs/protocol-v2.md`): one
//! connection's subscriptions, heartbeats, idle rule, acknowledged commands and resume. The
//! transport-neutral part: [`super::messages`] routes each text message here or to the v1
//! command path, and the WebSocket and TCP data-port sessions feed it.
//!
//! Replies are JSON, framed for the connection ([`Framing`]); telemetry is not sent from here but
//! by the fan-out from the profiles this session holds ([`Action::Profiles`]).

use super::{Action, Applied, Settings};
use crate::command::CommandError;
use crate::packet::Framing;
use crate::profile::{every_for, Mode, ProfileKey, ProfileMsg, ProfileRef, Profiles};
use crate::telemetry::encoder::{write_json_string, write_number};
use crate::telemetry::{ValueKind, VARIABLES};
use simd_json::prelude::*;
use simd_json::BorrowedValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Protocol v2's limits and timers (`--v2-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V2Limits {
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Distinct profiles server-wide.
    pub max_profiles: usize,
    /// Heartbeat after this long without sending a connection anything.
    pub heartbeat: Duration,
    /// Disconnect after this long without hearing from a connection.
    pub idle_timeout: Duration,
    /// Subscriptions kept after a connection ends.
    pub resume_window: Duration,
}

impl Default for V2Limits {
    /// The documented defaults: 16 subscriptions, 256 profiles, 1 s heartbeat, 90 s idle
    /// timeout, 60 s resume window.
    fn default() -> Self {
        Self {
            max_subscriptions: 16,
            max_profiles: 256,
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(90),
            resume_window: Duration::from_secs(60),
        }
    }
}

/// What v2 sessions share server-wide.
#[derive(Debug, Clone)]
pub struct V2Settings {
    /// Limits and timers.
    pub limits: V2Limits,
    /// The broadcast rate (`rate_hz` in `welcome`; `every` is computed from it).
    pub rate_hz: f64,
    /// The profile table (shared with the tick).
    pub profiles: Arc<Profiles>,
    /// Sessions waiting to be resumed.
    pub parked: Arc<Parked>,
    /// Where new session ids come from (the shell's random source).
    pub ids: Arc<dyn SessionIds>,
}

impl V2Settings {
    /// Settings with fresh tables, drawing session ids from `ids`.
    pub fn new(limits: V2Limits, rate_hz: f64, ids: Arc<dyn SessionIds>) -> Self {
        Self {
            limits,
            rate_hz,
            profiles: Profiles::new(limits.max_profiles),
            parked: Arc::new(Parked::default()),
            ids,
        }
    }
}

/// What the shell tells a session about the world when it feeds it (sessions read no clocks).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock µs since the UNIX epoch (`t` of pongs and heartbeats).
    pub wall_us: u64,
    /// The last tick's `update_counter` (`seq` of heartbeats).
    pub seq: u64,
    /// When the connection was last sent something (heartbeats go out after silence).
    pub last_sent: Instant,
}

/// One subscription.
#[derive(Clone, Debug)]
struct Sub {
    id: u64,
    profile: ProfileRef,
}

/// A session whose connection ended, kept for `resume`: what [`Action::Park`] hands the shell,
/// which puts it in the server's [`Parked`] store.
#[derive(Debug, Clone)]
pub struct ParkedSession {
    id: Arc<str>,
    expires: Instant,
    subs: Vec<Sub>,
    next_sub: u64,
}

impl ParkedSession {
    /// The session id (the key a `resume` names).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When it is let go.
    pub fn expires(&self) -> Instant {
        self.expires
    }
}

impl PartialEq for ParkedSession {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.expires == other.expires && self.next_sub == other.next_sub
    }
}

/// Sessions kept after their connection ended (they hold their profiles alive meanwhile): a map
/// keyed by session id, and an index by expiry so that letting expired ones go touches only
/// those (never a scan of the whole store under the lock).
#[derive(Debug, Default)]
pub struct Parked {
    store: Mutex<ParkedStore>,
}

#[derive(Debug, Default)]
struct ParkedStore {
    by_id: HashMap<Arc<str>, (ParkedSession, u64)>,
    /// (expiry, insertion number) → id; the number keeps equal expiries apart.
    by_expiry: std::collections::BTreeMap<(Instant, u64), Arc<str>>,
    inserted: u64,
}

impl ParkedStore {
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            self.by_id.remove(&id);
        }
    }

    fn remove(&mut self, id: &str) -> Option<ParkedSession> {
        let (session, n) = self.by_id.remove(id)?;
        self.by_expiry.remove(&(session.expires, n));
        Some(session)
    }
}

/// Most sessions kept for resume at once (the oldest are let go first).
pub const MAX_PARKED: usize = 20_000;

impl Parked {
    /// Keeps `session` until it expires or is resumed (what the shell does with
    /// [`Action::Park`]); expired ones go first, then the oldest past [`MAX_PARKED`].
    pub fn park(&self, session: ParkedSession, now: Instant) {
        let mut store = self.store.lock().expect("poisoned");
        store.expire(now);
        store.remove(&session.id);
        if store.by_id.len() >= MAX_PARKED {
            if let Some((_, oldest)) = store.by_expiry.pop_first() {
                store.by_id.remove(&oldest);
            }
        }
        store.inserted += 1;
        let n = store.inserted;
        store
            .by_expiry
            .insert((session.expires, n), Arc::clone(&session.id));
        store.by_id.insert(Arc::clone(&session.id), (session, n));
    }

    /// Takes the session `id` for a `resume`, if it is kept and not expired.
    pub fn take(&self, id: &str, now: Instant) -> Option<ParkedSession> {
        let mut store = self.store.lock().expect("poisoned");
        store.expire(now);
        store.remove(id)
    }

    /// Lets expired sessions go (and their profiles with them); returns how many are kept.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut store = self.store.lock().expect("poisoned");
        store.expire(now);
        store.by_id.len()
    }
}

/// The catalog's hash and the `"hash":…,"variables":[…]}` tail of its reply, rendered once.
fn catalog() -> &'static (String, Vec<u8>) {
    static CATALOG: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut vars = Vec::new();
        vars.push(b'[');
        for (i, v) in VARIABLES.iter().enumerate() {
            if i > 0 {
                vars.push(b',');
            }
            vars.extend_from_slice(b"{\"name\":");
            write_json_string(&mut vars, v.name);
            vars.extend_from_slice(match v.kind {
                ValueKind::Number => b",\"type\":\"number\",\"unit\":",
                ValueKind::Text => b",\"type\":\"string\",\"unit\":",
            });
            write_json_string(&mut vars, v.unit);
            vars.extend_from_slice(if v.writable {
                b",\"writable\":true}"
            } else {
                b",\"writable\":false}"
            });
        }
        vars.push(b']');
        use sha1::Digest;
        let digest = sha1::Sha1::digest(&vars);
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let mut tail = Vec::with_capacity(vars.len() + 64);
        tail.extend_from_slice(b",\"hash\":\"");
        tail.extend_from_slice(hash.as_bytes());
        tail.extend_from_slice(b"\",\"variables\":");
        tail.extend_from_slice(&vars);
        tail.push(b'}');
        (hash, tail)
    })
}

/// The catalog hash (changes only when the variable table does).
pub fn catalog_hash() -> &'static str {
    &catalog().0
}

/// Where session ids come from. The core draws no randomness: the shell supplies a source of
/// unguessable ids (the server's reads the OS's random generator), tests a predictable one.
pub trait SessionIds: Send + Sync + std::fmt::Debug {
    /// 128 bits that no one can guess (a session id is a capability: whoever knows it may
    /// `resume` the session's subscriptions).
    fn next_id(&self) -> [u8; 16];
}

/// Predictable ids (a counter), for tests and fuzzing only: anyone could guess them.
#[derive(Debug, Default)]
pub struct CountingIds(std::sync::atomic::AtomicU64);

impl SessionIds for CountingIds {
    fn next_id(&self) -> [u8; 16] {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut id = [0xa5; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }
}

/// A session id from 16 bytes: hex.
fn render_session_id(bytes: [u8; 16]) -> Arc<str> {
    let mut hex = String::with_capacity(32);
    for b in bytes {
        hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    hex.into()
}

/// Error codes of v2 replies that are not command reasons.
pub mod code {
    /// Malformed JSON, an unknown op, a field of the wrong type.
    pub const BAD_REQUEST: &str = "bad_request";
    /// A `hello` with a protocol the server does not speak.
    pub const UNSUPPORTED_PROTOCOL: &str = "unsupported_protocol";
    /// `sub` named variables that do not exist.
    pub const UNKNOWN_VARIABLE: &str = "unknown_variable";
    /// `sub` past `--v2-max-subscriptions`.
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    /// `sub` past `--v2-max-profiles`.
    pub const TOO_MANY_PROFILES: &str = "too_many_profiles";
    /// `unsub` of a subscription the connection does not hold.
    pub const UNKNOWN_SUBSCRIPTION: &str = "unknown_subscription";
    /// No message for `--v2-idle-timeout`.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
}

/// A small JSON object writer for replies.
struct Json(Vec<u8>);

impl Json {
    fn op(op: &str) -> Self {
        let mut v = Vec::with_capacity(128);
        v.extend_from_slice(b"{\"op\":\"");
        v.extend_from_slice(op.as_bytes());
        v.push(b'"');
        Json(v)
    }
    fn key(&mut self, k: &str) -> &mut Self {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(k.as_bytes());
        self.0.extend_from_slice(b"\":");
        self
    }
    fn raw(&mut self, k: &str, raw: &[u8]) -> &mut Self {
        self.key(k);
        self.0.extend_from_slice(raw);
        self
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        write_json_string(&mut self.0, v);
        self
    }
    fn uint(&mut self, k: &str, v: u64) -> &mut Self {
        self.raw(k, itoa::Buffer::new().format(v).as_bytes())
    }
    fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        write_number(&mut self.0, v);
        self
    }
    fn id(&mut self, id: Option<&str>) -> &mut Self {
        if let Some(id) = id {
            self.raw("id", id.as_bytes());
        }
        self
    }
    fn done(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

/// The error for a `hello` asking for protocol `p`; `stays` says what the connection stays at.
pub fn unsupported_protocol(id: Option<&str>, p: u64, stays: &str) -> Vec<u8> {
    let msg = format!("protocol {p} is not spoken here; the connection stays {stays}");
    error_json(
        id,
        code::UNSUPPORTED_PROTOCOL,
        &msg,
        b",\"supported\":[1,2]",
    )
}

/// `{"op":"error","id":…,"code":…,"message":…}` (+ `extra` members, rendered).
pub fn error_json(id: Option<&str>, code: &str, message: &str, extra: &[u8]) -> Vec<u8> {
    let mut j = Json::op("error");
    j.id(id).str("code", code).str("message", message);
    j.0.extend_from_slice(extra);
    j.done()
}

fn ack_error(id: Option<&str>, code: &str, message: &str, extra: &[u8]) -> Vec<u8> {
    let mut j = Json::op("ack");
    j.id(id).raw("ok", b"false").key("error");
    let mut e = Json(Vec::new());
    e.0.push(b'{');
    e.0.extend_from_slice(b"\"code\":");
    write_json_string(&mut e.0, code);
    e.str("message", message);
    e.0.extend_from_slice(extra);
    e.0.push(b'}');
    j.0.extend_from_slice(&e.0);
    j.done()
}

/// The `id` of a request, rendered as JSON (number or string), if it has a usable one.
pub fn render_id(v: Option<&BorrowedValue<'_>>) -> Option<Box<str>> {
    let v = v?;
    let mut buf = Vec::new();
    if let Some(s) = v.as_str() {
        write_json_string(&mut buf, s);
    } else if let Some(u) = v.as_u64() {
        buf.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
    } else if let Some(i) = v.as_i64() {
        buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    } else if v.is_number() {
        write_number(&mut buf, v.cast_f64().unwrap_or(0.0));
    } else {
        return None;
    }
    String::from_utf8(buf).ok().map(String::into_boxed_str)
}

/// A `hello`'s fields.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Hello {
    /// `id`, rendered.
    pub id: Option<Box<str>>,
    /// `protocol` (absent: 2).
    pub protocol: Option<u64>,
    /// `client`.
    pub client: Option<String>,
    /// `framing` (TCP only).
    pub framing: Option<Framing>,
    /// `resume`.
    pub resume: Option<String>,
}

impl Hello {
    /// Reads a `hello` object; `Err` is a `bad_request` message.
    pub fn parse(obj: &simd_json::borrowed::Object<'_>) -> Result<Hello, String> {
        let mut hello = Hello {
            id: render_id(obj.get("id")),
            ..Hello::default()
        };
        if let Some(p) = obj.get("protocol") {
            hello.protocol = Some(
                p.as_u64()
                    .ok_or("'protocol' must be a non-negative integer")?,
            );
        }
        if let Some(c) = obj.get("client") {
            let c = c.as_str().ok_or("'client' must be a string")?;
            hello.client = Some(c.chars().take(64).collect());
        }
        if let Some(f) = obj.get("framing") {
            hello.framing = Some(match f.as_str() {
                Some("lines") => Framing::Lines,
                Some("length") => Framing::Length,
                _ => return Err("'framing' must be \"lines\" or \"length\"".into()),
            });
        }
        if let Some(r) = obj.get("resume") {
            hello.resume = Some(r.as_str().ok_or("'resume' must be a string")?.to_string());
        }
        Ok(hello)
    }
}

/// One v2 connection.
#[derive(Debug)]
pub struct V2 {
    all: Arc<Settings>,
    settings: V2Settings,
    session: Arc<str>,
    client: Option<String>,
    framing: Framing,
    subs: Vec<Sub>,
    next_sub: u64,
    /// A `set` with the tick: its id and how many commands it holds.
    pending: Option<Option<Box<str>>>,
    idle_deadline: Instant,
    hb_due: Instant,
    last_now: Instant,
    /// [`park`](Self::park) was called: the subscriptions left with it.
    parked: bool,
}

impl V2 {
    /// Enters v2: `EnterV2`, `welcome` (resumed or fresh), and on resume the subscriptions'
    /// acks and current keyframes.
    pub fn start(
        settings: &Arc<Settings>,
        framing: Framing,
        hello: Hello,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> V2 {
        let s = settings.v2.clone();
        let mut v2 = V2 {
            session: render_session_id(settings.v2.ids.next_id()),
            client: None,
            framing,
            subs: Vec::new(),
            next_sub: 1,
            pending: None,
            idle_deadline: now + s.limits.idle_timeout,
            hb_due: now + s.limits.heartbeat,
            last_now: now,
            parked: false,
            settings: s,
            all: Arc::clone(settings),
        };
        out.push(Action::EnterV2(framing));
        v2.hello(hello, now, out);
        v2
    }

    /// Answers a `hello` with `welcome`; with `resume`, takes over the parked session (its id,
    /// its subscriptions, acked again, and their current keyframes). A WebSocket client that
    /// chose the subprotocol got a `welcome` unasked and resumes with a `hello` of its own.
    fn hello(&mut self, hello: Hello, now: Instant, out: &mut Vec<Action>) {
        if hello.client.is_some() {
            self.client = hello.client;
        }
        let resumed = hello
            .resume
            .as_deref()
            .and_then(|id| self.settings.parked.take(id, now));
        if let Some(parked) = &resumed {
            self.session = Arc::clone(&parked.id);
        }
        let mut j = Json::op("welcome");
        j.id(hello.id.as_deref())
            .uint("protocol", 2)
            .str("session", &self.session)
            .str("server", concat!("aerobridge ", env!("CARGO_PKG_VERSION")))
            .num("rate_hz", self.settings.rate_hz)
            .uint(
                "heartbeat_ms",
                self.settings.limits.heartbeat.as_millis() as u64,
            )
            .uint(
                "idle_timeout_ms",
                self.settings.limits.idle_timeout.as_millis() as u64,
            )
            .str("catalog", catalog_hash());
        j.key("limits");
        j.0.extend_from_slice(b"{\"subscriptions\":");
        j.0.extend_from_slice(
            itoa::Buffer::new()
                .format(self.settings.limits.max_subscriptions)
                .as_bytes(),
        );
        j.0.extend_from_slice(b",\"profiles\":");
        j.0.extend_from_slice(
            itoa::Buffer::new()
                .format(self.settings.limits.max_profiles)
                .as_bytes(),
        );
        j.0.push(b'}');
        if hello.resume.is_some() {
            j.raw(
                "resumed",
                if resumed.is_some() { b"true" } else { b"false" },
            );
        }
        let welcome = j.done();
        self.send(welcome, out);
        if let Some(parked) = resumed {
            let mut restored = Vec::new();
            for sub in parked.subs {
                // Subscriptions made on this connection before the resume keep their ids.
                if !self.subs.iter().any(|s| s.id == sub.id) {
                    restored.push(sub.clone());
                    self.subs.push(sub);
                }
            }
            self.next_sub = self.next_sub.max(parked.next_sub);
            for sub in &restored {
                let mut ack = self.sub_ack(sub, Some(&sub.id.to_string()));
                ack.pop();
                ack.extend_from_slice(b",\"resumed\":true}");
                self.send(ack, out);
            }
            let keys = self
                .distinct()
                .iter()
                .filter(|p| restored.iter().any(|r| r.profile.same(p)))
                .filter_map(|p| p.shared().current_key())
                .collect();
            self.profiles_action(keys, out);
        }
        self.describe(out);
    }

    /// How this connection's messages are framed.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The session id.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Whether a `set` is with the tick.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// When [`on_timeout`](Self::on_timeout) is due.
    pub fn deadline(&self) -> Instant {
        self.idle_deadline.min(self.hb_due)
    }

    /// The peer sent something (any bytes count against the idle rule).
    pub fn touch(&mut self, now: Instant) {
        self.last_now = now;
        self.idle_deadline = now + self.settings.limits.idle_timeout;
    }

    /// Heartbeat or idle disconnect. Returns true when the session closed.
    pub fn on_timeout(&mut self, now: Instant, clock: &Clock, out: &mut Vec<Action>) -> bool {
        self.last_now = now;
        if now >= self.idle_deadline {
            let secs = self.settings.limits.idle_timeout.as_secs_f64();
            self.send(
                error_json(
                    None,
                    code::IDLE_TIMEOUT,
                    &format!("nothing received for {secs} s; send any op (e.g. {{\"op\":\"hb\"}}) at least every {:.0} s", (secs / 3.0).max(1.0)),
                    b"",
                ),
                out,
            );
            return true;
        }
        let heartbeat = self.settings.limits.heartbeat;
        if now >= self.hb_due {
            let quiet_since = clock.last_sent;
            if now.saturating_duration_since(quiet_since) >= heartbeat {
                let mut j = Json::op("hb");
                j.uint("seq", clock.seq).uint("t", clock.wall_us);
                self.send(j.done(), out);
                self.hb_due = now + heartbeat;
            } else {
                self.hb_due = quiet_since + heartbeat;
            }
        }
        false
    }

    fn send(&self, json: Vec<u8>, out: &mut Vec<Action>) {
        out.push(Action::Send {
            bytes: self.framing.frame(&json),
            unread: "replies not read",
        });
    }

    fn distinct(&self) -> Vec<ProfileRef> {
        let mut v: Vec<ProfileRef> = Vec::with_capacity(self.subs.len());
        for s in &self.subs {
            if !v.iter().any(|p| p.same(&s.profile)) {
                v.push(s.profile.clone());
            }
        }
        v
    }

    fn profiles_action(&self, keyframes: Vec<Arc<ProfileMsg>>, out: &mut Vec<Action>) {
        out.push(Action::Profiles {
            profiles: self.distinct(),
            keyframes,
        });
    }

    fn describe(&self, out: &mut Vec<Action>) {
        let mut d = Vec::new();
        // A prefix only: the page is open to anyone who can reach the port, and a whole id
        // would let them take over the session's subscriptions with `resume`.
        d.extend_from_slice(b"\"session\":");
        write_json_string(&mut d, &format!("{}…", &self.session[..8]));
        if let Some(c) = &self.client {
            d.extend_from_slice(b",\"client\":");
            write_json_string(&mut d, c);
        }
        d.extend_from_slice(match self.framing {
            Framing::Lines => b",\"framing\":\"lines\"".as_slice(),
            Framing::Length => b",\"framing\":\"length\"",
            Framing::WebSocket => b",\"framing\":\"websocket\"",
        });
        d.extend_from_slice(b",\"subscriptions\":[");
        for (i, s) in self.subs.iter().enumerate() {
            if i > 0 {
                d.push(b',');
            }
            let key = &s.profile.shared().key;
            d.extend_from_slice(
                format!(
                    "{{\"sub\":{},\"profile\":{},\"every\":{},\"mode\":\"{}\",\"vars\":{}}}",
                    s.id,
                    s.profile.id(),
                    key.every,
                    key.mode.as_str(),
                    key.vars.len()
                )
                .as_bytes(),
            );
        }
        d.push(b']');
        out.push(Action::Detail(String::from_utf8(d).unwrap_or_default()));
    }

    fn sub_ack(&self, sub: &Sub, id: Option<&str>) -> Vec<u8> {
        let key = &sub.profile.shared().key;
        let mut j = Json::op("ack");
        j.id(id)
            .raw("ok", b"true")
            .uint("sub", sub.id)
            .uint("profile", u64::from(sub.profile.id()))
            .uint("every", u64::from(key.every))
            .num("hz", self.settings.rate_hz / f64::from(key.every))
            .str("mode", key.mode.as_str())
            .key("vars");
        j.0.push(b'[');
        for (i, &v) in key.vars.iter().enumerate() {
            if i > 0 {
                j.0.push(b',');
            }
            write_json_string(&mut j.0, VARIABLES[v as usize].name);
        }
        j.0.push(b']');
        j.done()
    }

    /// Handles one v2 message (`op` is its op); commands go through `gate`.
    pub fn on_op(
        &mut self,
        op: &str,
        obj: &simd_json::borrowed::Object<'_>,
        gate: &mut super::commands::Commands,
        now: Instant,
        clock: &Clock,
        out: &mut Vec<Action>,
    ) {
        let id = render_id(obj.get("id"));
        let id = id.as_deref();
        match op {
            "hb" => {}
            "ping" => {
                let mut j = Json::op("pong");
                j.id(id).uint("t", clock.wall_us);
                self.send(j.done(), out);
            }
            "catalog" => {
                let mut j = Json::op("catalog");
                j.id(id);
                j.0.extend_from_slice(&catalog().1);
                self.send(j.0, out);
            }
            "hello" => match Hello::parse(obj) {
                Err(msg) => self.bad_request(id, &msg, out),
                Ok(Hello {
                    protocol: Some(p), ..
                }) if p != 2 => self.send(unsupported_protocol(id, p, "at 2"), out),
                Ok(hello) => self.hello(hello, now, out),
            },
            "sub" => self.subscribe(obj, id, out),
            "unsub" => self.unsubscribe(obj, id, out),
            "set" => self.set(obj, id, gate, now, out),
            other => {
                let msg = format!(
                    "unknown op {:?}; ops: hello, catalog, sub, unsub, set, ping, hb",
                    other.chars().take(32).collect::<String>()
                );
                self.send(error_json(id, code::BAD_REQUEST, &msg, b""), out)
            }
        }
    }

    /// A `bad_request` error for a message that is not a v2 op.
    pub fn bad_request(&self, id: Option<&str>, message: &str, out: &mut Vec<Action>) {
        self.send(error_json(id, code::BAD_REQUEST, message, b""), out);
    }

    fn subscribe(
        &mut self,
        obj: &simd_json::borrowed::Object<'_>,
        id: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        let bad = |this: &Self, msg: &str, out: &mut Vec<Action>| {
            this.send(error_json(id, code::BAD_REQUEST, msg, b""), out)
        };
        let vars: Vec<u16> = match obj.get("vars") {
            None => (0..VARIABLES.len() as u16).collect(),
            Some(v) => {
                let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
                    return bad(
                        self,
                        "'vars' must be a non-empty array of names (leave it out for every variable)",
                        out,
                    );
                };
                let mut vars = Vec::new();
                let mut unknown: Vec<String> = Vec::new();
                for item in list {
                    let Some(name) = item.as_str() else {
                        return bad(self, "'vars' must be an array of names", out);
                    };
                    let before = vars.len();
                    match name.strip_suffix('*') {
                        Some(prefix) => vars.extend(
                            VARIABLES
                                .iter()
                                .enumerate()
                                .filter(|(_, v)| v.name.starts_with(prefix))
                                .map(|(i, _)| i as u16),
                        ),
                        None => vars
                            .extend(crate::telemetry::table::variable_id(name).map(|v| v.0 as u16)),
                    }
                    if vars.len() == before {
                        unknown.push(name.chars().take(128).collect());
                    }
                }
                if !unknown.is_empty() {
                    let mut names = b",\"names\":[".to_vec();
                    for (i, n) in unknown.iter().take(32).enumerate() {
                        if i > 0 {
                            names.push(b',');
                        }
                        write_json_string(&mut names, n);
                    }
                    names.push(b']');
                    let hints: Vec<String> = unknown
                        .iter()
                        .take(8)
                        .filter_map(|n| {
                            crate::telemetry::table::did_you_mean(n.trim_end_matches('*'))
                                .map(|meant| format!("{n} → {meant}"))
                        })
                        .collect();
                    let msg = format!(
                        "unknown variable{} {}{}; the catalog lists them all ({{\"op\":\"catalog\"}})",
                        if unknown.len() == 1 { "" } else { "s" },
                        unknown.join(", "),
                        if hints.is_empty() {
                            String::new()
                        } else {
                            format!(" (did you mean: {})", hints.join(", "))
                        }
                    );
                    return self.send(ack_error(id, code::UNKNOWN_VARIABLE, &msg, &names), out);
                }
                vars
            }
        };
        let hz = match obj.get("hz") {
            None => None,
            Some(h) => match h.cast_f64() {
                Some(hz) if hz > 0.0 && hz.is_finite() => Some(hz),
                _ => return bad(self, "'hz' must be a number greater than 0", out),
            },
        };
        let mode = match obj.get("mode").map(|m| m.as_str()) {
            None | Some(Some("full")) => Mode::Full,
            Some(Some("delta")) => Mode::Delta,
            Some(_) => return bad(self, "'mode' must be \"full\" or \"delta\"", out),
        };
        let limit = self.settings.limits.max_subscriptions;
        if self.subs.len() >= limit {
            let msg = format!("this connection holds {limit} subscriptions already (--v2-max-subscriptions); unsub one first");
            return self.send(ack_error(id, code::TOO_MANY_SUBSCRIPTIONS, &msg, b""), out);
        }
        let every = every_for(self.settings.rate_hz, hz);
        let profile = match self
            .settings
            .profiles
            .acquire(ProfileKey::new(vars, every, mode))
        {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("the server serves {} distinct profiles already (--v2-max-profiles); subscribe to what other clients use, or fewer combinations", e.limit);
                return self.send(ack_error(id, code::TOO_MANY_PROFILES, &msg, b""), out);
            }
        };
        // The sub id is the request's id when that is a free non-negative integer.
        let wanted = id.and_then(|i| i.parse::<u64>().ok());
        let sub_id = match wanted {
            Some(w) if !self.subs.iter().any(|s| s.id == w) => w,
            _ => {
                while self.subs.iter().any(|s| s.id == self.next_sub) {
                    self.next_sub += 1;
                }
                self.next_sub
            }
        };
        self.next_sub = self.next_sub.max(sub_id + 1);
        let new_profile = !self.subs.iter().any(|s| s.profile.same(&profile));
        let sub = Sub {
            id: sub_id,
            profile,
        };
        let ack = self.sub_ack(&sub, id);
        let key = new_profile
            .then(|| sub.profile.shared().current_key())
            .flatten();
        self.subs.push(sub);
        self.send(ack, out);
        self.profiles_action(key.into_iter().collect(), out);
        self.describe(out);
    }

    fn unsubscribe(
        &mut self,
        obj: &simd_json::borrowed::Object<'_>,
        id: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        let Some(sub) = obj.get("sub").and_then(|s| s.as_u64()) else {
            return self.bad_request(id, "'sub' must be the id of a subscription", out);
        };
        let Some(i) = self.subs.iter().position(|s| s.id == sub) else {
            let msg = format!("this connection holds no subscription {sub}");
            return self.send(ack_error(id, code::UNKNOWN_SUBSCRIPTION, &msg, b""), out);
        };
        self.subs.remove(i);
        let mut j = Json::op("ack");
        j.id(id).raw("ok", b"true").uint("sub", sub);
        self.send(j.done(), out);
        self.profiles_action(Vec::new(), out);
        self.describe(out);
    }

    fn set(
        &mut self,
        obj: &simd_json::borrowed::Object<'_>,
        id: Option<&str>,
        gate: &mut super::commands::Commands,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let settings = Arc::clone(&self.all);
        let mut pairs: Vec<(&str, Option<&BorrowedValue<'_>>)> = Vec::new();
        match (obj.get("variable"), obj.get("values")) {
            (Some(v), None) => match v.as_str() {
                Some(name) => pairs.push((name, obj.get("value"))),
                None => return self.bad_request(id, "'variable' must be a string", out),
            },
            (None, Some(values)) => match values.as_object() {
                Some(map) if !map.is_empty() => {
                    if map.len() > settings.parse.max_batch {
                        let msg = format!(
                            "at most {} values in one set (--command-max-batch)",
                            settings.parse.max_batch
                        );
                        return self.bad_request(id, &msg, out);
                    }
                    pairs.extend(map.iter().map(|(k, v)| (k.as_ref(), Some(v))))
                }
                _ => {
                    return self.bad_request(
                        id,
                        "'values' must be an object of variable names to numbers",
                        out,
                    )
                }
            },
            _ => {
                return self.bad_request(
                    id,
                    "set takes either 'variable' and 'value', or 'values'",
                    out,
                )
            }
        }
        let mut batch = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match crate::command::check(name, value) {
                Ok(c) => batch.push(c),
                Err(e) => {
                    let reason = e.reason();
                    self.command_error(id, &e, Some(name), out);
                    out.push(Action::Tally {
                        accepted: 0,
                        rejected: vec![reason],
                    });
                    return;
                }
            }
        }
        // One request, one token: the values are applied together or not at all.
        if let Err(e) = gate.admit(&settings, now) {
            out.push(Action::Tally {
                accepted: 0,
                rejected: vec![e.reason()],
            });
            self.command_error(id, &e, None, out);
            return;
        }
        self.pending = Some(id.map(Into::into));
        out.push(Action::Submit(batch));
    }

    fn command_error(
        &self,
        id: Option<&str>,
        e: &CommandError,
        variable: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        let mut extra = Vec::new();
        if let Some(v) = variable {
            extra.extend_from_slice(b",\"variable\":");
            write_json_string(&mut extra, v);
        }
        self.send(
            ack_error(id, e.reason().as_str(), &e.to_string(), &extra),
            out,
        );
    }

    /// The tick's answer to this session's `set`.
    pub fn applied(&mut self, result: Option<Applied>, stopping: bool, out: &mut Vec<Action>) {
        let Some(id) = self.pending.take() else {
            return;
        };
        let id = id.as_deref();
        let error = match &result {
            None if stopping => Some(CommandError::Unavailable("server shutting down")),
            None => Some(CommandError::Busy),
            Some(a) => a.results.iter().find_map(|r| r.clone().err()),
        };
        match (error, result) {
            (Some(e), result) => {
                let n = result.map_or(1, |a| a.results.len().max(1));
                out.push(Action::Tally {
                    accepted: 0,
                    rejected: vec![e.reason(); n],
                });
                self.command_error(id, &e, None, out);
            }
            (None, Some(a)) => {
                out.push(Action::Tally {
                    accepted: a.results.len() as u64,
                    rejected: Vec::new(),
                });
                let mut j = Json::op("ack");
                j.id(id).raw("ok", b"true");
                if a.relayed {
                    j.raw("relayed", b"true");
                } else {
                    j.uint("frame", a.frame);
                }
                self.send(j.done(), out);
            }
            (None, None) => unreachable!("no result is an error"),
        }
    }
}

impl V2 {
    /// The connection ended at `now`: the session to keep for `resume` ([`Action::Park`]), unless
    /// the resume window is zero. The subscriptions move into it, so call this once, last.
    pub fn park(&mut self, now: Instant) -> Option<Action> {
        let window = self.settings.limits.resume_window;
        if window.is_zero() || self.parked {
            return None;
        }
        self.parked = true;
        Some(Action::Park(Box::new(ParkedSession {
            id: Arc::clone(&self.session),
            expires: now.max(self.last_now) + window,
            subs: std::mem::take(&mut self.subs),
            next_sub: self.next_sub,
        })))
    }
}
