//! The feed rules an edge (`--source nats://…`) follows, without I/O: which origin it follows,
//! how its `update_counter`s stay the origin's, and how it learns the origin's period.
//!
//! # Origins
//! Each origin stamps its frames with a random id in the [`ORIGIN_HEADER`] header. An edge follows
//! one origin at a time ([`OriginTracker`]): frames from another one are dropped and logged
//! loudly (two origins publishing one feed would interleave two unrelated counters and states).
//! When the followed origin has been silent for [`TAKEOVER_AFTER`], the next origin heard is
//! followed instead: that is an origin restart (a new id) or a failover.

use std::time::{Duration, Instant};

/// The header naming the publishing origin.
pub const ORIGIN_HEADER: &str = "Aerobridge-Origin";

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
    /// Edge: published under an older lease than one already seen (a standby origin took over
    /// and the old leader woke up: see [`crate::lease::Fence`]).
    Fenced,
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

    /// `origin` holds a newer lease than any seen (a standby took over): follow it at once,
    /// without waiting [`TAKEOVER_AFTER`] for the old leader to fall silent.
    pub fn take_over(&mut self, origin: &str, now: Instant) -> OriginVerdict {
        match &mut self.followed {
            Some((id, last)) if id == origin => {
                *last = now;
                OriginVerdict::Follow
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
/// for a connected client (see the `manual` of the `aerobridge` crate, NATS).
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

/// How far into a message its `update_counter` must appear: an origin writes it sixth of the
/// top-level fields, before `variables` (about 170 bytes in).
const HEAD: usize = 512;

/// The cheap checks an edge makes before decoding a feed message in full: an origin's frame is
/// one JSON object ending in `}` (a `\n` may follow) whose head, before `"variables"`, carries an
/// `update_counter` of at most [`MAX_COUNTER`]. Returns that counter. A message that fails costs
/// a scan of its head and its last bytes, never a parse, so a flood of garbage in an origin's
/// name cannot keep real frames waiting behind it.
pub fn screen(payload: &[u8]) -> Result<u64, crate::telemetry::decode::DecodeError> {
    use crate::telemetry::decode::DecodeError;
    let trimmed = payload.trim_ascii_end();
    if trimmed.first() != Some(&b'{') || trimmed.last() != Some(&b'}') {
        return Err(DecodeError::NotAFrame);
    }
    let head = &trimmed[..trimmed.len().min(HEAD)];
    let head = match memchr::memmem::find(head, b"\"variables\"") {
        Some(end) => &head[..end],
        None => head,
    };
    const KEY: &[u8] = b"\"update_counter\":";
    let at = memchr::memmem::find(head, KEY).ok_or(DecodeError::Counter(None))?;
    let digits = &head[at + KEY.len()..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return Err(DecodeError::Counter(None));
    }
    let counter = std::str::from_utf8(&digits[..len])
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    if counter > MAX_COUNTER {
        return Err(DecodeError::Counter(Some(counter)));
    }
    Ok(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screening_passes_frames_and_rejects_garbage_without_parsing() {
        use crate::telemetry::decode::DecodeError;
        let frame = br#"{"schema":"aerofly-bridge-telemetry","schema_version":1,"timestamp":1,"timestamp_unit":"microseconds","data_valid":1,"update_counter":4242,"broadcast_rate_hz":50.0,"variables":{"A":1}}
"#;
        assert_eq!(screen(frame), Ok(4242));
        assert_eq!(screen(b"not json at all"), Err(DecodeError::NotAFrame));
        assert_eq!(
            screen(&frame[..frame.len() / 2]),
            Err(DecodeError::NotAFrame)
        );
        assert_eq!(
            screen(br#"{"schema":"something-else"}"#),
            Err(DecodeError::Counter(None))
        );
        let huge = br#"{"data_valid":1,"update_counter":1152921504606846976,"variables":{}}"#;
        assert_eq!(screen(huge), Err(DecodeError::Counter(Some(1 << 60))));
        let overflow = br#"{"update_counter":99999999999999999999999,"variables":{}}"#;
        assert_eq!(screen(overflow), Err(DecodeError::Counter(Some(u64::MAX))));
        // A counter that appears only inside `variables` is not the frame's.
        let inside = br#"{"data_valid":1,"variables":{"update_counter":5}}"#;
        assert_eq!(screen(inside), Err(DecodeError::Counter(None)));
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
