//! Rate-limited logging for events an attacker can repeat at will (refused connections, failed
//! handshakes, slow consumers, command floods): a log line per event is itself a denial of
//! service on the disk or the journal. Per kind, the first [`BURST`] events of each
//! [`INTERVAL`] are logged in full; the rest are counted, and one summary line per interval says
//! how many were left out. Metrics still count every event — this only limits the log.
//!
//! Lock-free (a few relaxed atomics per event) because it runs on the accept threads and the
//! workers alike.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Events logged in full per kind and interval.
pub const BURST: u64 = 5;
/// Length of one interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated event.
pub struct Throttle {
    kind: &'static str,
    /// Start of the current interval, in ms since the process's first throttled event.
    window: AtomicU64,
    /// Events in the current interval (logged or not).
    seen: AtomicU64,
    /// Events left out of the log and not yet summarised.
    suppressed: AtomicU64,
}

/// Refused because `--max-clients` was reached.
pub static SERVER_FULL: Throttle = Throttle::new("refused connections (server full)");
/// Failed or timed-out WebSocket upgrades.
pub static HANDSHAKE: Throttle = Throttle::new("failed WebSocket handshakes");
/// Clients disconnected as slow consumers.
pub static SLOW_CONSUMER: Throttle = Throttle::new("slow-consumer disconnects");
/// Connections dropped for flooding commands.
pub static COMMAND_FLOOD: Throttle = Throttle::new("command-flood disconnects");
/// WebSocket protocol errors and ping timeouts.
pub static PROTOCOL: Throttle = Throttle::new("WebSocket protocol errors");
/// Rejected commands (no id, so nobody else hears of them).
pub static COMMAND_REJECTED: Throttle = Throttle::new("rejected commands");
/// `accept` failures (EMFILE and friends).
pub static ACCEPT: Throttle = Throttle::new("accept failures");

/// NATS feed messages that are not telemetry frames.
pub static NATS_FEED: Throttle = Throttle::new("invalid NATS feed messages");

/// Failed connection attempts to NATS (the client retries on its own).
pub static NATS_LINK: Throttle = Throttle::new("failed NATS connection attempts");

/// Failed TLS connections (garbage, plaintext on a TLS port, untrusted client certificates).
pub static TLS: Throttle = Throttle::new("failed TLS connections");

/// Every throttle, for [`flush_all`].
pub static ALL: [&Throttle; 10] = [
    &TLS,
    &NATS_FEED,
    &NATS_LINK,
    &SERVER_FULL,
    &HANDSHAKE,
    &SLOW_CONSUMER,
    &COMMAND_FLOOD,
    &PROTOCOL,
    &COMMAND_REJECTED,
    &ACCEPT,
];

/// `now` in ms since the first throttled event (the caller's clock; this module reads none).
fn now_ms(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    now.saturating_duration_since(*EPOCH.get_or_init(|| now))
        .as_millis() as u64
}

impl Throttle {
    /// A throttle for events described as `kind` in its summary line.
    pub const fn new(kind: &'static str) -> Self {
        Self {
            kind,
            window: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Records one event at `now`; true when it should be logged in full.
    pub fn allow(&self, now: Instant) -> bool {
        self.allow_at(now_ms(now))
    }

    fn allow_at(&self, now: u64) -> bool {
        let start = self.window.load(Relaxed);
        if now.saturating_sub(start) >= INTERVAL.as_millis() as u64
            && self
                .window
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
        {
            // This thread opened a new interval: summarise the last one.
            self.seen.store(0, Relaxed);
            self.summarise();
        }
        if self.seen.fetch_add(1, Relaxed) < BURST {
            true
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            false
        }
    }

    /// Logs one summary line for events left out so far, if any. Returns how many.
    pub fn summarise(&self) -> u64 {
        let n = self.suppressed.swap(0, Relaxed);
        if n > 0 {
            tracing::warn!(
                kind = self.kind,
                suppressed = n,
                "{n} more {} not logged (at most {BURST} per {} s; metrics count all)",
                self.kind,
                INTERVAL.as_secs()
            );
        }
        n
    }
}

/// Summarises every throttle (the periodic stats log and shutdown call this, so a flood that
/// stopped is still reported).
pub fn flush_all() {
    for t in ALL {
        t.summarise();
    }
}

/// Logs at `warn` (or the given level) through `throttle`, for an event at `now`:
/// `limited!(THROTTLE, now, warn, fields…)`.
#[macro_export]
macro_rules! limited {
    ($throttle:expr, $now:expr, $level:ident, $($arg:tt)+) => {
        if $throttle.allow($now) {
            ::tracing::$level!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_few_then_counted_then_a_new_interval() {
        let t = Throttle::new("test events");
        let logged = (0..100).filter(|_| t.allow_at(1_000)).count() as u64;
        assert_eq!(logged, BURST);
        assert_eq!(t.suppressed.load(Relaxed), 100 - BURST);
        // Next interval: the summary takes the count, and a new burst is allowed.
        let later = 1_000 + INTERVAL.as_millis() as u64;
        assert!(t.allow_at(later));
        assert_eq!(t.suppressed.load(Relaxed), 0);
        let logged = (0..10).filter(|_| t.allow_at(later + 1)).count() as u64;
        assert_eq!(logged, BURST - 1);
        assert_eq!(t.summarise(), 10 - (BURST - 1));
        assert_eq!(t.summarise(), 0);
    }
}
