//! The session client: what the Python and JavaScript libraries do, over std sockets, for
//! programs that want v2 without writing it — `connect`, the rebuilt `state`, updates, `set`
//! with the server's ack, resume after a lost connection, `stale`.
//!
//! It is driven by its caller (no thread of its own): [`Client::next_update`] reads, answers
//! heartbeats, and reconnects when the connection is lost — with jittered, capped backoff, and
//! by *resuming* the session, so the server acknowledges the same subscriptions again and sends
//! current keyframes (a keyframe already shown is not shown again).
//!
//! ```no_run
//! use aerobridge_client::session::{Client, Options};
//! use std::time::Duration;
//! let mut client = Client::connect("ws://127.0.0.1:8765/", Options::vars(&["Aircraft.*"]).hz(10.0))?;
//! while let Some(update) = client.next_update(Duration::from_secs(5))? {
//!     println!("{} {:?}", update.update_counter, client.state().get("Aircraft.Altitude"));
//! }
//! # Ok::<(), aerobridge_client::session::ClientError>(())
//! ```

use crate::blocking::{Connection, Received};
use crate::v2::{self, Event, V2State, Value};
use simd_json::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

/// How to connect and what to subscribe to.
#[derive(Clone, Debug)]
pub struct Options {
    /// Names, or prefixes ending in `*`; empty for every variable.
    pub vars: Vec<String>,
    /// Updates per second (at most the server's rate); `None` for every frame.
    pub hz: Option<f64>,
    /// Deltas against keyframes (`true`, the default) or full keyframes only.
    pub delta: bool,
    /// The server's `--command-token`, needed for `set`.
    pub token: Option<String>,
    /// For connecting and for each request's answer.
    pub timeout: Duration,
    /// Reconnect backoff: the first delay and the cap (each jittered down to half).
    pub backoff: (Duration, Duration),
    /// Shown in the server's `/connections`.
    pub client_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vars: Vec::new(),
            hz: None,
            delta: true,
            token: None,
            timeout: Duration::from_secs(10),
            backoff: (Duration::from_millis(250), Duration::from_secs(5)),
            client_name: "aerobridge-client-rs/0.1".into(),
        }
    }
}

impl Options {
    /// Subscribes to `vars`.
    pub fn vars(vars: &[&str]) -> Self {
        Options {
            vars: vars.iter().map(|v| v.to_string()).collect(),
            ..Options::default()
        }
    }

    /// At `hz` updates per second.
    pub fn hz(mut self, hz: f64) -> Self {
        self.hz = Some(hz);
        self
    }

    /// With the command token.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// An error with a stable `code`: the server's reason token (`read_only`, `unknown_variable`,
/// `unauthorized`, …; `message` is the server's text) or the client's own (`bad_url`,
/// `connect_failed`, `timeout`, `disconnected`, `protocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// The code to branch on.
    pub code: String,
    /// The server's words, or the client's.
    pub message: String,
}

impl ClientError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        ClientError {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ClientError {}

/// One catalog entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// `number` or `string`.
    pub kind: String,
    /// Its unit.
    pub unit: String,
    /// Whether `set` may change it.
    pub writable: bool,
}

/// One data message, applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The `update_counter` of the frame it reflects.
    pub update_counter: u64,
    /// µs since the UNIX epoch.
    pub timestamp: u64,
    /// The subscribed values that differ from the state before it.
    pub values: Vec<(String, Value)>,
    /// The source's `data_valid`.
    pub valid: bool,
    /// A keyframe.
    pub keyframe: bool,
}

/// A command the server accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The first `update_counter` that shows it (`None` through a relay).
    pub frame: Option<u64>,
    /// Delivered to an upstream bridge (a relay source).
    pub relayed: bool,
}

/// The subscription as the server acknowledged it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subscription {
    /// The names, in wire order.
    pub vars: Vec<String>,
    /// Every `every`-th frame.
    pub every: u64,
    /// The server's profile id.
    pub profile: u64,
    /// The subscription id.
    pub sub: u64,
}

/// One aerobridge session over `ws://HOST:PORT/` or `tcp://HOST:PORT`.
pub struct Client {
    url: String,
    options: Options,
    conn: Option<Connection>,
    v2: V2State,
    state: HashMap<String, Value>,
    update_counter: Option<u64>,
    timestamp: Option<u64>,
    valid: bool,
    /// The last seq shown per profile: a resumed session's keyframe may repeat one.
    shown: HashMap<u64, u64>,
    catalog: Vec<Variable>,
    catalog_hash: Option<String>,
    session: Option<String>,
    rate_hz: f64,
    heartbeat: Duration,
    idle_timeout: Duration,
    subscription: Subscription,
    reconnects: u64,
    resumed: Option<bool>,
    next_id: u64,
    /// Updates read while waiting for an answer, for the next `next_update`.
    queued: VecDeque<Update>,
    last_update: Instant,
    last_received: Instant,
    last_sent: Instant,
    /// When the connection was lost, and the reconnect attempts since.
    lost: Option<(Instant, u32)>,
    /// Why the last connection ended or the last reconnect failed.
    pub last_error: Option<String>,
}

impl Client {
    /// Connects and subscribes; an error (bad URL, refused, timeout, the server's refusal such
    /// as `unknown_variable`) comes back at once, never a hang beyond `options.timeout`.
    pub fn connect(url: &str, options: Options) -> Result<Client, ClientError> {
        if !(url.starts_with("ws://") || url.starts_with("tcp://")) {
            return Err(ClientError::new(
                "bad_url",
                format!("{url:?}: expected ws://HOST:PORT/ or tcp://HOST:PORT"),
            ));
        }
        let now = Instant::now();
        let mut client = Client {
            url: url.to_string(),
            options,
            conn: None,
            v2: V2State::default(),
            state: HashMap::new(),
            update_counter: None,
            timestamp: None,
            valid: true,
            shown: HashMap::new(),
            catalog: Vec::new(),
            catalog_hash: None,
            session: None,
            rate_hz: 50.0,
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(90),
            subscription: Subscription::default(),
            reconnects: 0,
            resumed: None,
            next_id: 1,
            queued: VecDeque::new(),
            last_update: now,
            last_received: now,
            last_sent: now,
            lost: None,
            last_error: None,
        };
        client.open()?;
        Ok(client)
    }

    /// Every subscribed variable's value: the full view rebuilt from keyframes and deltas.
    pub fn state(&self) -> &HashMap<String, Value> {
        &self.state
    }

    /// The `update_counter` of the frame `state` reflects.
    pub fn update_counter(&self) -> Option<u64> {
        self.update_counter
    }

    /// That frame's timestamp (µs since the UNIX epoch).
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    /// Every variable the server publishes, in wire order.
    pub fn catalog(&self) -> &[Variable] {
        &self.catalog
    }

    /// The session id (the same after a resume).
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The subscription as acknowledged.
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    /// Connections reopened after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Whether the last reconnect resumed the session (`false`: subscribed afresh).
    pub fn resumed(&self) -> Option<bool> {
        self.resumed
    }

    /// Time between updates: the subscription's `every` frames at the server's rate.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(self.subscription.every.max(1) as f64 / self.rate_hz)
    }

    /// True while the source says its data is not live (`data_valid` 0), no update came within
    /// two periods, or the connection is down.
    pub fn stale(&self) -> bool {
        self.conn.is_none() || !self.valid || self.last_update.elapsed() > 2 * self.period()
    }

    /// The next update, waiting at most `timeout` (`None` when none came). Reconnects and
    /// resumes by itself when the connection is lost.
    pub fn next_update(&mut self, timeout: Duration) -> Result<Option<Update>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(u) = self.queued.pop_front() {
                return Ok(Some(u));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.pump(deadline)?;
        }
    }

    /// Sets one variable. Returns the server's ack, or its refusal (code and words), or
    /// `disconnected` / `timeout` when no answer came (it may or may not have been applied).
    pub fn set(&mut self, name: &str, value: f64) -> Result<Ack, ClientError> {
        self.set_all(&[(name, value)])
    }

    /// Sets several variables together (all or none).
    pub fn set_all(&mut self, values: &[(&str, f64)]) -> Result<Ack, ClientError> {
        let id = self.next_id();
        let reply = self.call(id, &v2::set(id, values))?;
        let v = parse(&reply)?;
        if v.get("ok").and_then(|o| o.as_bool()) == Some(true) {
            return Ok(Ack {
                frame: v.get("frame").and_then(|f| f.as_u64()),
                relayed: v.get("relayed").and_then(|r| r.as_bool()) == Some(true),
            });
        }
        Err(refusal(&v))
    }

    // -- the connection -------------------------------------------------------------------

    fn open(&mut self) -> Result<(), ClientError> {
        let tcp = self.url.starts_with("tcp://");
        let mut headers = String::new();
        if !tcp {
            headers.push_str("Sec-WebSocket-Protocol: aerobridge.v2\r\n");
            if let Some(t) = &self.options.token {
                headers.push_str(&format!("Authorization: Bearer {t}\r\n"));
            }
        }
        let conn = Connection::connect(&self.url, &headers)
            .map_err(|e| ClientError::new("connect_failed", format!("{}: {e}", self.url)))?;
        let _ = conn.stream().set_read_timeout(Some(self.options.timeout));
        let selected =
            conn.upgraded.as_ref().and_then(|u| u.protocol.as_deref()) == Some("aerobridge.v2");
        self.conn = Some(conn);
        self.last_received = Instant::now();
        let result = self.greet(tcp, selected);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn greet(&mut self, tcp: bool, selected: bool) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.options.timeout;
        let resume = self.session.clone();
        let name = self.options.client_name.clone();
        if !selected {
            self.send(&v2::hello(&name, resume.as_deref(), tcp))?;
            if tcp {
                self.conn.as_mut().expect("open").expect_length();
                if let Some(t) = self.options.token.clone() {
                    let mut auth = String::from("{\"auth\":");
                    auth.push_str(&json_string(&t));
                    auth.push('}');
                    self.send(&auth)?;
                }
            }
        }
        let mut welcome = self.wait_for(deadline, |m| m.starts_with(b"{\"op\":\"welcome\""))?;
        if selected && resume.is_some() {
            self.send(&v2::hello(&name, resume.as_deref(), false))?;
            welcome = self.wait_for(deadline, |m| m.starts_with(b"{\"op\":\"welcome\""))?;
        }
        let w = parse(&welcome)?;
        let resumed = resume.is_some() && w.get("resumed").and_then(|r| r.as_bool()) == Some(true);
        self.session = w
            .get("session")
            .and_then(|s| s.as_str())
            .map(str::to_string);
        self.rate_hz = w.get("rate_hz").and_then(|r| r.cast_f64()).unwrap_or(50.0);
        let ms = |k: &str, default: u64| {
            Duration::from_millis(w.get(k).and_then(|x| x.as_u64()).unwrap_or(default))
        };
        self.heartbeat = ms("heartbeat_ms", 1000);
        self.idle_timeout = ms("idle_timeout_ms", 90_000);
        let hash = w
            .get("catalog")
            .and_then(|c| c.as_str())
            .map(str::to_string);
        if hash != self.catalog_hash || self.catalog.is_empty() {
            let id = self.next_id();
            let reply = self.call(id, &format!("{{\"op\":\"catalog\",\"id\":{id}}}"))?;
            let c = parse(&reply)?;
            let field = |v: &simd_json::OwnedValue, k: &str| {
                v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
            };
            self.catalog = c
                .get("variables")
                .and_then(|v| v.as_array())
                .map(|vars| {
                    vars.iter()
                        .map(|v| Variable {
                            name: field(v, "name"),
                            kind: field(v, "type"),
                            unit: field(v, "unit"),
                            writable: v.get("writable").and_then(|x| x.as_bool()) == Some(true),
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.catalog_hash = hash;
        }
        if resume.is_some() {
            self.resumed = Some(resumed);
        }
        if !resumed {
            self.v2 = V2State::default();
            self.shown.clear();
            let id = self.next_id();
            let vars: Vec<&str> = self.options.vars.iter().map(String::as_str).collect();
            let reply = self.call(id, &v2::sub(id, &vars, self.options.hz, self.options.delta))?;
            let a = parse(&reply)?;
            if a.get("ok").and_then(|o| o.as_bool()) != Some(true) {
                return Err(refusal(&a));
            }
            // V2State saw the ack as it went by (`call` hands every message to it).
        }
        Ok(())
    }

    /// Reads until a message `wanted` says is the one, handling every other message on the way.
    fn wait_for(
        &mut self,
        deadline: Instant,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>, ClientError> {
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::new(
                    "timeout",
                    format!(
                        "no answer from {} within {:?}",
                        self.url, self.options.timeout
                    ),
                ));
            }
            let Some(mut text) = self.read_one(deadline)? else {
                continue;
            };
            if wanted(&text) {
                // Acks also go through the state (a `sub` ack names the profile's variables).
                let copy = text.clone();
                if text.starts_with(b"{\"op\":\"ack\"") {
                    self.handle(&mut text)?;
                }
                return Ok(copy);
            }
            self.handle(&mut text)?;
        }
    }

    /// Sends a request with `id` and waits for its answer (`ack`, `catalog` or `error`).
    fn call(&mut self, id: u64, request: &str) -> Result<Vec<u8>, ClientError> {
        if self.conn.is_none() {
            return Err(ClientError::new(
                "disconnected",
                format!("not connected to {} (reconnecting)", self.url),
            ));
        }
        self.send(request)?;
        let deadline = Instant::now() + self.options.timeout;
        let tag = format!("\"id\":{id},");
        let tag_end = format!("\"id\":{id}}}");
        // Data messages carry no id; a resumed subscription's ack carries its sub id, which
        // may equal a request's.
        let data =
            |m: &[u8]| m.starts_with(b"{\"op\":\"key\"") || m.starts_with(b"{\"op\":\"delta\"");
        let resumed_ack = |m: &[u8]| {
            m.starts_with(b"{\"op\":\"ack\"")
                && memchr::memmem::find(m, b"\"resumed\":true").is_some()
        };
        let has_id = move |m: &[u8]| {
            memchr::memmem::find(m, tag.as_bytes()).is_some()
                || memchr::memmem::find(m, tag_end.as_bytes()).is_some()
        };
        self.wait_for(deadline, |m| !data(m) && !resumed_ack(m) && has_id(m))
            .map_err(|e| {
                if e.code == "connect_failed" {
                    ClientError::new("disconnected", e.message)
                } else {
                    e
                }
            })
    }

    /// One message, or `None` when the read timed out. A lost connection is an error here
    /// (`disconnected`) — `pump` turns it into a reconnect.
    fn read_one(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, ClientError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| ClientError::new("disconnected", "not connected"))?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        let _ = conn.stream().set_read_timeout(Some(wait));
        match conn.recv() {
            Ok(Received::Text(t)) => {
                self.last_received = Instant::now();
                Ok(Some(t))
            }
            Ok(Received::Close(code, reason)) => Err(ClientError::new(
                "disconnected",
                format!("closed by the server ({code} {reason})"),
            )),
            Ok(Received::Torn) => Err(ClientError::new("protocol", "a message that is not whole")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(ClientError::new(
                "disconnected",
                format!("the connection ended: {e}"),
            )),
        }
    }

    /// Reads and applies messages until `deadline` or an update; keeps the connection alive,
    /// and reopens it when it is lost.
    fn pump(&mut self, deadline: Instant) -> Result<(), ClientError> {
        if self.conn.is_none() {
            return self.reconnect(deadline);
        }
        let idle = (self.idle_timeout / 3).min(Duration::from_secs(20));
        if self.last_sent.elapsed() > idle {
            let _ = self.send(v2::HEARTBEAT);
        }
        if self.last_received.elapsed() > (3 * self.heartbeat).max(Duration::from_secs(3)) {
            self.lose("the server went silent".into());
            return Ok(());
        }
        match self.read_one(deadline) {
            Ok(Some(mut text)) => self.handle(&mut text),
            Ok(None) => Ok(()),
            Err(e) => {
                self.lose(e.to_string());
                Ok(())
            }
        }
    }

    fn lose(&mut self, why: String) {
        self.conn = None;
        self.last_error = Some(why);
        self.lost = Some((Instant::now(), 0));
    }

    fn reconnect(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let (since, attempt) = self.lost.unwrap_or((Instant::now(), 0));
        let (base, cap) = self.options.backoff;
        let delay = (base * 2u32.saturating_pow(attempt.min(16))).min(cap);
        // Jitter: half to all of the delay, from the clock's low bits (no randomness crate).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = 0.5 + f64::from(nanos % 1000) / 2000.0;
        let due = since + delay.mul_f64(jitter);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due.min(deadline) - now);
            if Instant::now() < due {
                return Ok(());
            }
        }
        match self.open() {
            Ok(()) => {
                self.reconnects += 1;
                self.lost = None;
                self.last_update = Instant::now();
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                self.lost = Some((Instant::now(), attempt + 1));
            }
        }
        Ok(())
    }

    fn handle(&mut self, text: &mut [u8]) -> Result<(), ClientError> {
        let event = self
            .v2
            .on_message(text)
            .map_err(|e| ClientError::new("protocol", e.0))?;
        if let Event::Subscribed {
            profile,
            sub,
            every,
            ..
        } = event
        {
            let vars = self.v2.profiles[&profile].names.clone();
            self.subscription = Subscription {
                vars,
                every,
                profile,
                sub,
            };
        }
        if let Event::Data {
            profile,
            seq,
            t,
            valid,
            ..
        } = event
        {
            if self.shown.get(&profile).is_some_and(|&s| seq <= s) {
                return Ok(()); // already shown (a resumed session's keyframe)
            }
            self.shown.insert(profile, seq);
            let p = &self.v2.profiles[&profile];
            let mut values = Vec::new();
            for (name, value) in p.names.iter().zip(&p.values) {
                if self.state.get(name) != Some(value) {
                    self.state.insert(name.clone(), value.clone());
                    values.push((name.clone(), value.clone()));
                }
            }
            self.update_counter = Some(seq);
            self.timestamp = Some(t);
            self.valid = valid;
            self.last_update = Instant::now();
            self.queued.push_back(Update {
                update_counter: seq,
                timestamp: t,
                values,
                valid,
                keyframe: matches!(event, Event::Data { key: true, .. }),
            });
        }
        Ok(())
    }

    fn send(&mut self, text: &str) -> Result<(), ClientError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| ClientError::new("disconnected", "not connected"))?;
        conn.send_text(text)
            .map_err(|e| ClientError::new("disconnected", format!("the connection ended: {e}")))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

fn parse(text: &[u8]) -> Result<simd_json::OwnedValue, ClientError> {
    simd_json::to_owned_value(&mut text.to_vec())
        .map_err(|e| ClientError::new("protocol", format!("not JSON: {e}")))
}

fn refusal(v: &simd_json::OwnedValue) -> ClientError {
    let e = v.get("error").filter(|e| e.is_object()).unwrap_or(v);
    let field = |k: &str| e.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    ClientError {
        code: field("code"),
        message: field("message"),
    }
}

fn json_string(s: &str) -> String {
    let mut out = Vec::new();
    aerobridge_proto::telemetry::encoder::write_json_string(&mut out, s);
    String::from_utf8(out).expect("JSON is UTF-8")
}
