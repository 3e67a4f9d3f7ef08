//! Every telemetry connection's standing, for `GET /connections` (in the spirit of NATS's
//! `/connz`). Each client's counters live in one [`ConnectionInfo`] its own worker writes with
//! relaxed atomics (no contention: one writer thread); the page reads them from any thread.

use crate::packet::Transport;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One telemetry connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// Server-assigned id (order of arrival).
    pub id: u64,
    /// The peer.
    pub peer: SocketAddr,
    /// TCP or WebSocket.
    pub transport: Transport,
    /// When it connected (wall clock, for the page).
    pub since: SystemTime,
    /// When it connected (for ages).
    pub since_instant: Instant,
    /// 1 or 2.
    pub protocol: AtomicU8,
    /// Telemetry messages written whole.
    pub frames_sent: AtomicU64,
    /// Bytes written (telemetry and control).
    pub bytes_sent: AtomicU64,
    /// Telemetry messages skipped (latest wins) or dropped.
    pub frames_skipped: AtomicU64,
    /// Age of the frame in flight at the last tick, µs.
    pub lag_us: AtomicU64,
    /// When the client last sent something, ms after `since_instant` (0: never).
    pub last_activity_ms: AtomicU64,
    /// v2: session id, client name, framing and subscriptions, as a JSON object's members.
    pub detail: Mutex<String>,
    /// permessage-deflate: 0 none, 1 without server context takeover, 2 with (shared).
    pub deflate: AtomicU8,
    /// TLS: `{"version","cipher","client_subject"}` as JSON (unset: plaintext).
    pub tls: std::sync::OnceLock<Box<str>>,
}

impl ConnectionInfo {
    /// Adds to a counter (single writer: a plain load and store would do, but this is as cheap
    /// uncontended and stays right if that ever changes).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Notes that the client sent something at `now`.
    pub fn touch(&self, now: Instant) {
        let ms = now
            .saturating_duration_since(self.since_instant)
            .as_millis() as u64;
        self.last_activity_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Notes the connection's TLS (`None`: plaintext).
    pub fn set_tls(&self, summary: Option<&str>) {
        if let Some(summary) = summary {
            let _ = self.tls.set(summary.into());
        }
    }

    /// What `/connections` shows of this connection.
    fn to_json(&self, now: Instant) -> serde_json::Value {
        let since_us = self
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let age = now.saturating_duration_since(self.since_instant);
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        let idle_ms =
            (last != 0).then(|| age.saturating_sub(Duration::from_millis(last)).as_millis() as u64);
        let round1 = |x: f64| (x * 10.0).round() / 10.0;
        let mut entry = serde_json::json!({
            "id": self.id,
            "peer": self.peer.to_string(),
            "transport": match self.transport {
                Transport::Tcp => "tcp",
                Transport::WebSocket => "websocket",
            },
            "protocol": self.protocol.load(Ordering::Relaxed),
            "connected_since_us": since_us,
            "connected_s": round1(age.as_secs_f64()),
            "frames_sent": self.frames_sent.load(Ordering::Relaxed),
            "bytes_sent": self.bytes_sent.load(Ordering::Relaxed),
            "frames_skipped": self.frames_skipped.load(Ordering::Relaxed),
            "lag_ms": round1(self.lag_us.load(Ordering::Relaxed) as f64 / 1000.0),
            "idle_ms": idle_ms,
            "extensions": match self.deflate.load(Ordering::Relaxed) {
                1 => Some("permessage-deflate; client_no_context_takeover; server_no_context_takeover"),
                2 => Some("permessage-deflate; client_no_context_takeover"),
                _ => None,
            },
            "tls": self
                .tls
                .get()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()),
        });
        // The session's own members (v2: session, client, framing, subscriptions), as it
        // rendered them.
        let detail = self.detail.lock().expect("poisoned");
        if !detail.is_empty() {
            if let (Some(obj), Ok(serde_json::Value::Object(more))) = (
                entry.as_object_mut(),
                serde_json::from_str(&format!("{{{detail}}}")),
            ) {
                obj.extend(more);
            }
        }
        entry
    }
}

/// Every telemetry connection, by id.
#[derive(Debug, Default)]
pub struct Connections {
    next_id: AtomicU64,
    all: Mutex<BTreeMap<u64, Arc<ConnectionInfo>>>,
}

impl Connections {
    /// Registers a new connection.
    pub fn add(&self, peer: SocketAddr, transport: Transport) -> Arc<ConnectionInfo> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ConnectionInfo {
            id,
            peer,
            transport,
            since: SystemTime::now(),
            since_instant: Instant::now(),
            protocol: AtomicU8::new(1),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            lag_us: AtomicU64::new(0),
            tls: std::sync::OnceLock::new(),
            last_activity_ms: AtomicU64::new(0),
            detail: Mutex::new(String::new()),
            deflate: AtomicU8::new(0),
        });
        self.all
            .lock()
            .expect("poisoned")
            .insert(id, Arc::clone(&info));
        info
    }

    /// Forgets a connection.
    pub fn remove(&self, id: u64) {
        self.all.lock().expect("poisoned").remove(&id);
    }

    /// Connections now.
    pub fn len(&self) -> usize {
        self.all.lock().expect("poisoned").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `/connections` page: `{"now_us":…,"count":N,"connections":[…]}`, oldest first, at
    /// most `limit` entries.
    pub fn render(&self, limit: usize) -> String {
        let list: Vec<Arc<ConnectionInfo>> = {
            let all = self.all.lock().expect("poisoned");
            all.values().take(limit).cloned().collect()
        };
        let total = self.len();
        let now = Instant::now();
        let now_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let page = serde_json::json!({
            "now_us": now_us as u64,
            "count": total,
            "shown": list.len(),
            "connections": list.iter().map(|c| c.to_json(now)).collect::<Vec<_>>(),
        });
        format!("{page}\n")
    }
}
