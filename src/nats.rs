//! What an origin (`--nats-publish`, [`crate::net::nats`]) and an edge (`--source nats://…`,
//! [`crate::source::nats`]) share, without I/O: feed URLs and subjects, credentials (never
//! logged), the counters, and the edge's rule for which origin it follows.
//!
//! # Origins
//! Each origin stamps its frames with a random id in the [`ORIGIN_HEADER`] header. An edge follows
//! one origin at a time ([`OriginTracker`]): frames from another one are dropped and logged
//! loudly (two origins publishing one feed would interleave two unrelated counters and states).
//! When the followed origin has been silent for [`TAKEOVER_AFTER`], the next origin heard is
//! followed instead: that is an origin restart (a new id) or a failover.

use crate::counters::Histogram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The header naming the publishing origin.
pub const ORIGIN_HEADER: &str = "Aerobridge-Origin";

/// The origin id a feed message carries, if any.
pub fn origin_of(msg: &async_nats::Message) -> Option<&str> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(ORIGIN_HEADER))
        .map(|v| v.as_str())
}

/// How long the followed origin must be silent before an edge follows another one.
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(1);

/// The subjects of one feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// Every frame the origin builds.
    pub frames: String,
    /// Command requests to the origin.
    pub commands: String,
}

/// The subjects of `feed`.
pub fn subjects(feed: &str) -> Subjects {
    Subjects {
        frames: format!("aerobridge.{feed}.frames"),
        commands: format!("aerobridge.{feed}.commands"),
    }
}

/// `nats://[USER:PASS@|TOKEN@]HOST:PORT/FEED` (or `tls://…`) → (server URL with its credentials,
/// FEED). The feed defaults to `default`.
pub fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "nats" || *s == "tls")
        .ok_or_else(|| {
            anyhow::anyhow!(
                "expected nats://HOST:PORT/FEED or tls://HOST:PORT/FEED, got {:?}",
                redact(url)
            )
        })?;
    let (server, feed) = rest.split_once('/').unwrap_or((rest, "default"));
    let feed = if feed.is_empty() { "default" } else { feed };
    let host = server.rsplit_once('@').map_or(server, |(_, h)| h);
    anyhow::ensure!(
        !host.is_empty()
            && feed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "expected {scheme}://HOST:PORT/FEED (FEED: letters, digits, - and _), got {:?}",
        redact(url)
    );
    Ok((format!("{scheme}://{server}"), feed.to_string()))
}

/// The URL with any user, password or token replaced by `***`: the only form that is logged.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority_end..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Credentials given in a URL's user-info part.
#[derive(PartialEq, Eq)]
pub enum UrlAuth {
    /// `USER:PASS@`.
    UserPassword(String, String),
    /// `TOKEN@`.
    Token(String),
}

impl std::fmt::Debug for UrlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlAuth::UserPassword(..) => "UserPassword(***)",
            UrlAuth::Token(_) => "Token(***)",
        })
    }
}

/// Splits the credentials off a server URL (async-nats does not read them from the URL):
/// `nats://bob:pw@host:4222` → (`nats://host:4222`, user and password). Percent-escapes in them
/// are decoded.
pub fn split_credentials(url: &str) -> (String, Option<UrlAuth>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some((userinfo, host)) = rest[..authority_end].rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = match userinfo.split_once(':') {
        Some((user, pass)) => UrlAuth::UserPassword(decode(user), decode(pass)),
        None => UrlAuth::Token(decode(userinfo)),
    };
    (
        format!("{scheme}://{host}{}", &rest[authority_end..]),
        Some(auth),
    )
}

/// Credentials and TLS, as async-nats takes them. Secrets stay out of `Debug` and the logs.
#[derive(Clone, Default)]
pub struct Security {
    /// `--nats-creds`: a `.creds` file (user JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// `--nats-token` (or `AEROBRIDGE_NATS_TOKEN`).
    pub token: Option<String>,
    /// `--nats-tls-ca`: root certificates (PEM) to trust; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// `--nats-tls-cert` and `--nats-tls-key`: a client certificate; implies TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("creds", &self.creds)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .finish()
    }
}

impl Security {
    /// Connection options for `url` (its credentials, if any, taken out of it) as `role` (`origin`
    /// or `edge`, the client name the server shows): credentials, TLS, unlimited reconnects, and
    /// connection events counted in `stats`. Returns the URL to connect to, without credentials.
    pub async fn connect_options(
        &self,
        url: &str,
        role: &'static str,
        stats: std::sync::Arc<NatsStats>,
    ) -> std::io::Result<(String, async_nats::ConnectOptions)> {
        let (url, url_auth) = split_credentials(url);
        let mut options = match &self.creds {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("--nats-creds {}: {e}", path.display()))
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        match url_auth {
            Some(UrlAuth::UserPassword(user, pass)) => {
                options = options.user_and_password(user, pass);
            }
            Some(UrlAuth::Token(token)) => options = options.token(token),
            None => {}
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok((
            url,
            options
                .name(format!("aerobridge-{role}"))
                .retry_on_initial_connect()
                .connection_timeout(Duration::from_secs(2))
                .event_callback(move |event| {
                    let stats = std::sync::Arc::clone(&stats);
                    async move { stats.on_event(role, &event) }
                }),
        ))
    }
}

/// Why a frame did not go on (the metric's `reason` label).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter, strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
pub enum Dropped {
    /// Origin: not connected to NATS (frames of an outage are not worth sending late).
    Disconnected,
    /// Origin: the publisher could not keep up with the tick.
    Busy,
    /// Edge: not a telemetry frame (never forwarded).
    Invalid,
    /// Edge: from an origin other than the one followed (two origins on one feed).
    OtherOrigin,
    /// Edge: older than a frame already delivered (after a stale frame took its place).
    Late,
    /// Edge: a newer frame arrived before this one was used (latest wins).
    Superseded,
}

/// What one end of a NATS link counts (an origin and an edge each have their own).
#[derive(Debug, Default)]
pub struct NatsStats {
    /// 1 while connected to the NATS server.
    pub connected: AtomicU64,
    /// Connections after the first (the client reconnects by itself).
    pub reconnects: AtomicU64,
    /// Failed connection attempts (unreachable, refused credentials, untrusted certificate).
    pub connect_failures: AtomicU64,
    /// Origin: frames published.
    pub published: AtomicU64,
    /// Edge: frames received on the feed.
    pub received: AtomicU64,
    /// Frames dropped, by [`Dropped`].
    pub dropped: [AtomicU64; <Dropped as strum::EnumCount>::COUNT],
    /// Origin: command requests answered. Edge: command requests sent.
    pub requests: AtomicU64,
    /// Edge: requests without an answer (timeout, or no origin).
    pub request_failures: AtomicU64,
    /// Origin: time to answer a request. Edge: round trip. One writer thread in each.
    pub request_time: Histogram,
    /// Edge: times it began following another origin (a restart, or a failover).
    pub origin_changes: AtomicU64,
    /// Connections so far (the first one is not a reconnect).
    connects: AtomicU64,
}

impl NatsStats {
    /// Counts a dropped frame.
    pub fn drop_frame(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts `n` of `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A connection event from the client (any thread).
    pub fn on_event(&self, role: &str, event: &async_nats::Event) {
        match event {
            async_nats::Event::Connected => {
                self.connected.store(1, Relaxed);
                if self.connects.fetch_add(1, Relaxed) > 0 {
                    self.reconnects.fetch_add(1, Relaxed);
                    tracing::info!(role, "NATS: reconnected");
                }
            }
            async_nats::Event::Disconnected => {
                self.connected.store(0, Relaxed);
                tracing::warn!(role, "NATS: disconnected; reconnecting");
            }
            async_nats::Event::Closed => self.connected.store(0, Relaxed),
            async_nats::Event::ClientError(e) => {
                self.connect_failures.fetch_add(1, Relaxed);
                crate::limited!(
                crate::log_limit::NATS_LINK,
                warn,
                role,
                error = %e,
                "NATS: cannot connect; retrying (check the address, the credentials and, for TLS, --nats-tls-ca)"
                )
            }
            other => tracing::warn!(role, event = %other, "NATS"),
        }
    }
}

/// An edge's verdict on a frame's origin.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// From the origin followed.
    Follow,
    /// The first origin heard, or one that took over from a silent one: follow it from now on.
    Switch {
        /// The origin followed so far, if any.
        previous: Option<String>,
    },
    /// Another origin publishes the same feed: drop the frame.
    Conflict {
        /// The origin followed.
        followed: String,
    },
}

/// Which origin an edge follows (see the module documentation).
#[derive(Debug, Default)]
pub struct OriginTracker {
    followed: Option<(String, Instant)>,
    /// Origins caught publishing beside the followed one (each logged loudly once).
    intruders: Vec<String>,
}

impl OriginTracker {
    /// Judges a frame from `origin` (`""` if it had no header) received at `now`.
    pub fn judge(&mut self, origin: &str, now: Instant) -> OriginVerdict {
        match &mut self.followed {
            Some((id, last)) if id == origin => {
                *last = now;
                OriginVerdict::Follow
            }
            Some((id, last)) if now.duration_since(*last) < TAKEOVER_AFTER => {
                OriginVerdict::Conflict {
                    followed: id.clone(),
                }
            }
            followed => {
                let previous = followed.take().map(|(id, _)| id);
                *followed = Some((origin.to_string(), now));
                self.intruders.retain(|i| i != origin);
                OriginVerdict::Switch { previous }
            }
        }
    }

    /// True the first time `origin` is caught in a conflict (log it loudly then, count always).
    pub fn first_conflict(&mut self, origin: &str) -> bool {
        if self.intruders.iter().any(|i| i == origin) {
            return false;
        }
        if self.intruders.len() >= 16 {
            self.intruders.remove(0);
        }
        self.intruders.push(origin.to_string());
        true
    }
}

/// The largest `update_counter` an edge accepts: 2^53, the last integer every JSON parser reads
/// exactly (JavaScript's `Number`). A bigger one is garbage, dropped as invalid.
pub const MAX_COUNTER: u64 = 1 << 53;

/// An edge's `update_counter`s: the origin's where it can, and never repeating or going back
/// for a connected client (see [`crate::manual`], NATS).
///
/// The tick numbers each frame one more than the last, or the origin's number if that is higher.
/// A frame built in a silence (stale) takes the next number; the origin's frame of that number,
/// if it arrives after all, is late and dropped, so the following ones keep the origin's numbers.
/// When a new origin generation begins (a restart: its counter starts again), its numbers are
/// shifted to continue ours.
#[derive(Debug, Default, Clone)]
pub struct FeedCounters {
    emitted: u64,
    offset: u64,
    epoch: u64,
}

impl FeedCounters {
    /// Where the origin's frame `upstream` of generation `epoch` goes: its counter at the edge,
    /// or `None` when it is late (a stale frame took its number).
    pub fn place(&mut self, epoch: u64, upstream: u64) -> Option<u64> {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.offset = self.emitted.saturating_add(1).saturating_sub(upstream);
        }
        let counter = upstream.saturating_add(self.offset);
        (counter > self.emitted).then_some(counter)
    }

    /// Records a frame built by the tick, with the counter [`place`](Self::place) gave it or
    /// `None` (stale), and returns the counter it carries (the tick's rule, mirrored).
    pub fn emit(&mut self, placed: Option<u64>) -> u64 {
        self.emitted = (self.emitted.saturating_add(1)).max(placed.unwrap_or(0));
        self.emitted
    }

    /// What is added to the origin's counters (0 unless an origin restarted).
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// The origin's broadcast period, estimated from its frames' counters and timestamps, so an edge
/// knows when a frame is missing (two periods without one make its frames stale).
#[derive(Debug, Default, Clone, Copy)]
pub struct PeriodEstimate {
    last: Option<(u64, u64)>,
    period_us: Option<f64>,
}

impl PeriodEstimate {
    /// Takes a frame's `update_counter` and `timestamp` (µs).
    pub fn observe(&mut self, counter: u64, timestamp_us: u64) {
        if let Some((c, t)) = self.last {
            if counter > c && timestamp_us > t && counter - c <= 50 {
                let sample = (timestamp_us - t) as f64 / (counter - c) as f64;
                // Clamped to 200 Hz … 1 Hz: a clock step must not make the edge stale or deaf.
                let sample = sample.clamp(5_000.0, 1_000_000.0);
                self.period_us = Some(match self.period_us {
                    None => sample,
                    Some(p) => p + (sample - p) / 16.0,
                });
            }
        }
        self.last = Some((counter, timestamp_us));
    }

    /// The estimate, once there is one.
    pub fn period(&self) -> Option<Duration> {
        self.period_us.map(|p| Duration::from_micros(p as u64))
    }

    /// Forgets the previous frame (a new origin: its counter and clock are unrelated).
    pub fn restart(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_credentials_for_the_client_and_never_show_them() {
        assert_eq!(
            parse_url("nats://127.0.0.1:4222/class-a").unwrap(),
            ("nats://127.0.0.1:4222".into(), "class-a".into())
        );
        assert_eq!(parse_url("nats://host:4222").unwrap().1, "default");
        assert_eq!(
            parse_url("tls://bob:s3cret@host:4222/f").unwrap(),
            ("tls://bob:s3cret@host:4222".into(), "f".into())
        );
        assert!(parse_url("tcp://x:1/a").is_err());
        assert!(parse_url("nats://x:1/a.b").is_err(), "no subject tokens");
        assert!(parse_url("nats://tok@/a").is_err(), "no host");
        let e = parse_url("nats://bob:s3cret@x:1/a.b")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert_eq!(redact("nats://bob:s3cret@h:1/f"), "nats://***@h:1/f");
        assert_eq!(redact("nats://t0ken@h:1"), "nats://***@h:1");
        assert_eq!(redact("nats://h:1/f@x"), "nats://h:1/f@x");
        assert_eq!(
            split_credentials("tls://bob:p%40ss@h:1"),
            (
                "tls://h:1".into(),
                Some(UrlAuth::UserPassword("bob".into(), "p@ss".into()))
            )
        );
        assert_eq!(
            split_credentials("nats://t0k@h:1"),
            ("nats://h:1".into(), Some(UrlAuth::Token("t0k".into())))
        );
        assert_eq!(split_credentials("nats://h:1"), ("nats://h:1".into(), None));
        assert!(!format!("{:?}", split_credentials("nats://t0k@h:1").1).contains("t0k"));
        let s = Security {
            token: Some("t0ken".into()),
            ..Security::default()
        };
        assert!(!format!("{s:?}").contains("t0ken"));
        assert_eq!(subjects("a").frames, "aerobridge.a.frames");
        assert_eq!(subjects("a").commands, "aerobridge.a.commands");
    }

    #[test]
    fn an_edge_follows_one_origin_and_takes_over_after_silence() {
        let mut t = OriginTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.judge("a", t0), OriginVerdict::Switch { previous: None });
        assert_eq!(t.judge("a", t0), OriginVerdict::Follow);
        let conflict = t.judge("b", t0 + Duration::from_millis(20));
        assert_eq!(
            conflict,
            OriginVerdict::Conflict {
                followed: "a".into()
            }
        );
        assert!(t.first_conflict("b"));
        assert!(!t.first_conflict("b"), "logged loudly once");
        // "a" keeps publishing: "b" never takes over.
        for ms in (40..3000).step_by(20) {
            assert_eq!(
                t.judge("a", t0 + Duration::from_millis(ms)),
                OriginVerdict::Follow
            );
            assert!(matches!(
                t.judge("b", t0 + Duration::from_millis(ms + 1)),
                OriginVerdict::Conflict { .. }
            ));
        }
        // "a" goes silent (it restarted as "c"): "c" is followed after TAKEOVER_AFTER.
        let later = t0 + Duration::from_millis(2980) + TAKEOVER_AFTER;
        assert_eq!(
            t.judge("c", later),
            OriginVerdict::Switch {
                previous: Some("a".into())
            }
        );
        assert_eq!(t.judge("c", later), OriginVerdict::Follow);
    }

    #[test]
    fn counters_stay_the_origins_across_hiccups_and_continue_across_restarts() {
        let mut c = FeedCounters::default();
        let arrive = |c: &mut FeedCounters, epoch, upstream| {
            let placed = c.place(epoch, upstream);
            c.emit(placed)
        };
        // The edge started first: two stale frames, then the origin at 100.
        assert_eq!(c.emit(None), 1);
        assert_eq!(c.emit(None), 2);
        assert_eq!(c.place(1, 100), Some(100));
        assert_eq!(c.emit(Some(100)), 100);
        assert_eq!(arrive(&mut c, 1, 101), 101);
        // A hiccup: a stale frame takes 102, so the origin's 102 is late; 103 is on time.
        assert_eq!(c.emit(None), 102);
        assert_eq!(c.place(1, 102), None);
        assert_eq!(arrive(&mut c, 1, 103), 103);
        // An outage: the origin went on counting; the edge follows with a gap.
        assert_eq!(c.emit(None), 104);
        assert_eq!(arrive(&mut c, 1, 250), 250);
        // The origin restarts (generation 2) from 1: ours continue, shifted.
        assert_eq!(c.emit(None), 251);
        assert_eq!(c.place(2, 1), Some(252));
        assert_eq!(c.offset(), 251);
        assert_eq!(c.emit(Some(252)), 252);
        assert_eq!(arrive(&mut c, 2, 2), 253);
        // A new origin ahead of us: its numbers as they are.
        assert_eq!(c.place(3, 9_000), Some(9_000));
        assert_eq!(c.offset(), 0);
    }

    #[test]
    fn the_period_is_learnt_from_counters_and_timestamps() {
        let mut p = PeriodEstimate::default();
        assert_eq!(p.period(), None);
        for i in 0..100u64 {
            // 20 ms, with a skipped frame now and then.
            if i % 7 != 3 {
                p.observe(i, 1_000_000 + i * 20_000 + (i % 3) * 300);
            }
        }
        let ms = p.period().unwrap().as_secs_f64() * 1e3;
        assert!((19.5..20.5).contains(&ms), "{ms}");
        // A clock step backwards or a counter reset teaches nothing.
        p.observe(5, 10);
        p.observe(6, 20_010);
        let ms = p.period().unwrap().as_secs_f64() * 1e3;
        assert!((19.5..20.5).contains(&ms), "{ms}");
    }
}
