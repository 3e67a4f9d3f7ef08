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

    fn render(&self, out: &mut String, now: Instant) {
        use std::fmt::Write;
        let since_us = self
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let age = now.saturating_duration_since(self.since_instant);
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        let idle_ms = if last == 0 {
            None
        } else {
            Some(age.saturating_sub(Duration::from_millis(last)).as_millis())
        };
        let _ = write!(
            out,
            "{{\"id\":{},\"peer\":\"{}\",\"transport\":\"{}\",\"protocol\":{},\"connected_since_us\":{},\"connected_s\":{:.1},\"frames_sent\":{},\"bytes_sent\":{},\"frames_skipped\":{},\"lag_ms\":{:.1},\"idle_ms\":{}",
            self.id,
            self.peer,
            match self.transport {
                Transport::Tcp => "tcp",
                Transport::WebSocket => "websocket",
            },
            self.protocol.load(Ordering::Relaxed),
            since_us,
            age.as_secs_f64(),
            self.frames_sent.load(Ordering::Relaxed),
            self.bytes_sent.load(Ordering::Relaxed),
            self.frames_skipped.load(Ordering::Relaxed),
            self.lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
            idle_ms.map_or("null".to_string(), |ms| ms.to_string()),
        );
        out.push_str(match self.deflate.load(Ordering::Relaxed) {
            1 => ",\"extensions\":\"permessage-deflate; client_no_context_takeover; server_no_context_takeover\"",
            2 => ",\"extensions\":\"permessage-deflate; client_no_context_takeover\"",
            _ => ",\"extensions\":null",
        });
        let detail = self.detail.lock().expect("poisoned");
        if !detail.is_empty() {
            out.push(',');
            out.push_str(&detail);
        }
        out.push('}');
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
        let mut out = String::with_capacity(64 + list.len() * 320);
        out.push_str(&format!(
            "{{\"now_us\":{now_us},\"count\":{total},\"shown\":{},\"connections\":[",
            list.len()
        ));
        for (i, c) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            c.render(&mut out, now);
        }
        out.push_str("]}\n");
        out
    }
}
