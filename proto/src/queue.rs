//! The per-client send queue and the slow-consumer policy. No I/O: the worker pushes frames,
//! the client's writer takes one item at a time and reports completion.
//!
//! Policy:
//! - The item being written (in flight) is always finished: frames are never torn or interleaved.
//! - Telemetry frames wait in FIFO order up to `max_frames` / `max_bytes`; a short hiccup costs
//!   latency, not data. On overflow every waiting frame but the newest is skipped (latest wins),
//!   so a client that cannot keep up gets fresh state rather than a backlog.
//! - Control items (pongs, command replies, the Close frame) are never skipped and go first.
//! - Lag = age of the frame in flight. Past `max_lag` the client is closed as a slow consumer.

use crate::packet::{Framing, Packet};
use crate::profile::{MsgKind, ProfileMsg};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds for one client's queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    /// Most telemetry frames waiting (not counting the one in flight).
    pub max_frames: usize,
    /// Most telemetry bytes waiting.
    pub max_bytes: usize,
    /// Most bytes of control items (replies, pongs) waiting.
    pub max_control_bytes: usize,
    /// How far behind a client may fall before it is disconnected.
    pub max_lag: Duration,
}

impl QueueLimits {
    /// The defaults; `--queue-frames`, `--queue-bytes` and `--max-lag` take theirs from here.
    pub const DEFAULT: QueueLimits = QueueLimits {
        max_frames: 8,
        max_bytes: 1 << 20,
        max_control_bytes: 256 << 10,
        max_lag: Duration::from_secs(2),
    };
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A telemetry item: a v1 frame, or a v2 profile's keyframe or delta. Both are shared by every
/// client that gets them (a refcount bump per client).
#[derive(Clone, Debug)]
pub enum Frame {
    /// The full v1 frame.
    Full(Arc<Packet>),
    /// A v2 profile message.
    Profile(Arc<ProfileMsg>),
}

impl Frame {
    fn bytes(&self, framing: Framing) -> &Bytes {
        match self {
            Frame::Full(p) => p.bytes(framing),
            Frame::Profile(m) => match framing {
                Framing::Lines => &m.line,
                Framing::Length => &m.length,
                Framing::WebSocket => &m.ws,
            },
        }
    }

    fn built(&self) -> Instant {
        match self {
            Frame::Full(p) => p.built,
            Frame::Profile(m) => m.built,
        }
    }

    fn counter(&self) -> u64 {
        match self {
            Frame::Full(p) => p.counter,
            Frame::Profile(m) => m.seq,
        }
    }

    fn compressed(&self) -> Option<&crate::ws::deflate::Compressed> {
        match self {
            Frame::Full(p) => p.deflate.as_ref(),
            Frame::Profile(m) => m.deflate.as_ref(),
        }
    }

    /// Latest-wins applies within a stream: the v1 stream (0) or one profile (its id).
    fn stream(&self) -> u32 {
        match self {
            Frame::Full(_) => 0,
            Frame::Profile(m) => m.profile,
        }
    }
}

/// What happened to a pushed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued; `wake` is true when the writer was idle and must be woken.
    Queued {
        /// Writer needs a wake-up.
        wake: bool,
        /// Older frames skipped to make room.
        skipped: u64,
    },
    /// The frame in flight is older than `max_lag`: close the client as a slow consumer.
    Lagging,
    /// The queue is closing; the frame was dropped.
    Closing,
}

/// What the writer should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Write these bytes (whole), then call [`SendQueue::complete`].
    Write(Bytes),
    /// Nothing to send: wait for a wake-up.
    Idle,
    /// Closing and everything owed has been written: shut the connection down.
    Finished,
}

/// Which form of a telemetry message went to a permessage-deflate client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Compressed on its own.
    Standalone,
    /// Compressed against the previous message of its stream, which the client's window holds.
    Dictionary,
    /// Uncompressed (compressing did not make it smaller).
    Raw,
}

/// The result of writing one item.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Completed {
    /// For a telemetry message to a permessage-deflate client: the form sent and the size it
    /// had uncompressed.
    pub deflate: Option<(Variant, u64)>,
    /// 1 if the item was a telemetry frame.
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
    /// For a telemetry frame: its `update_counter` and build time.
    pub frame: Option<(u64, Instant)>,
}

/// Control items could not be queued (a peer sending pings or commands without reading).
#[derive(Debug, PartialEq, Eq)]
pub struct ControlOverflow;

#[derive(Debug)]
struct InFlight {
    built: Option<Instant>,
    counter: u64,
    len: usize,
    deflate: Option<(Variant, u64)>,
}

/// A permessage-deflate client's window, as far as the queue needs to know it.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Dictionary variants allowed (the server may take context over).
    shared: bool,
    /// (stream, seq) of the last compressed message the client was sent: dictionary variants
    /// refer to exactly that.
    last: Option<(u32, u64)>,
}

/// One client's queue.
#[derive(Debug)]
pub struct SendQueue {
    framing: Framing,
    limits: QueueLimits,
    frames: VecDeque<Frame>,
    frame_bytes: usize,
    control: VecDeque<Bytes>,
    control_bytes: usize,
    in_flight: Option<InFlight>,
    /// v2: per profile, the seq of the last keyframe handed to the writer.
    keys: Vec<(u32, u64)>,
    /// permessage-deflate, when agreed.
    window: Option<Window>,
    closing: bool,
}

impl SendQueue {
    /// An empty queue for a client framed as `framing`.
    pub fn new(framing: Framing, limits: QueueLimits) -> Self {
        Self {
            framing,
            limits,
            frames: VecDeque::with_capacity(limits.max_frames.min(64) + 1),
            frame_bytes: 0,
            control: VecDeque::new(),
            control_bytes: 0,
            in_flight: None,
            keys: Vec::new(),
            window: None,
            closing: false,
        }
    }

    /// permessage-deflate was agreed: telemetry goes compressed (the dictionary variant when
    /// `shared` and the client's window holds its base).
    pub fn set_deflate(&mut self, shared: bool) {
        self.window = Some(Window { shared, last: None });
    }

    /// The bytes of `frame` for this client, and for a deflate client which form they are.
    fn wire(&mut self, frame: &Frame) -> (Bytes, Option<(Variant, u64)>) {
        let raw = frame.bytes(self.framing);
        let (Some(window), Framing::WebSocket) = (self.window.as_mut(), self.framing) else {
            return (raw.clone(), None);
        };
        let raw_len = raw.len() as u64;
        let Some(c) = frame.compressed() else {
            return (raw.clone(), Some((Variant::Raw, raw_len)));
        };
        let this = (frame.stream(), frame.counter());
        if window.shared && window.last == Some((frame.stream(), c.base)) {
            if let Some(dict) = &c.dict {
                window.last = Some(this);
                return (dict.clone(), Some((Variant::Dictionary, raw_len)));
            }
        }
        if let Some(standalone) = &c.standalone {
            window.last = Some(this);
            return (standalone.clone(), Some((Variant::Standalone, raw_len)));
        }
        // Uncompressed messages do not enter the client's window.
        (raw.clone(), Some((Variant::Raw, raw_len)))
    }

    /// How items are framed.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Switches the connection to v2 at the next frame boundary: the frame in flight finishes,
    /// waiting v1 frames are dropped (returned as a count), and from now on items are framed as
    /// `framing`.
    pub fn enter_v2(&mut self, framing: Framing) -> u64 {
        let before = self.frames.len();
        self.frames.retain(|f| !matches!(f, Frame::Full(_)));
        self.frame_bytes = self.frames.iter().map(|f| f.bytes(framing).len()).sum();
        self.framing = framing;
        (before - self.frames.len()) as u64
    }

    /// Forgets a profile the client no longer receives: its waiting messages are dropped
    /// (returned as a count) and its keyframe is no longer held.
    pub fn drop_profile(&mut self, profile: u32) -> u64 {
        let before = self.frames.len();
        self.frames.retain(|f| f.stream() != profile);
        let framing = self.framing;
        self.frame_bytes = self.frames.iter().map(|f| f.bytes(framing).len()).sum();
        self.keys.retain(|&(p, _)| p != profile);
        (before - self.frames.len()) as u64
    }

    /// Queues a v1 frame (a refcount bump, no copy).
    pub fn push_frame(&mut self, packet: &Arc<Packet>, now: Instant) -> Pushed {
        self.push(Frame::Full(Arc::clone(packet)), now)
    }

    /// Queues what one tick has for this client (the worker's dispatch, per client): the full
    /// frame for a v1 client (`v2: None`), or, for a v2 client, the message of each profile it
    /// holds that is due on this tick. Refcount bumps only.
    pub fn push_tick(
        &mut self,
        tick: &crate::tick::Tick,
        v2: Option<&[crate::profile::ProfileRef]>,
        now: Instant,
    ) -> Pushed {
        let Some(profiles) = v2 else {
            return self.push_frame(&tick.packet, now);
        };
        let (mut wake, mut skipped) = (false, 0);
        for p in profiles {
            let Some(Some(msg)) = tick.profiles.get(p.shared().slot) else {
                continue;
            };
            // A slot freed and reused between the tick's build and now belongs to another
            // profile.
            if msg.profile != p.id() {
                continue;
            }
            match self.push(Frame::Profile(Arc::clone(msg)), now) {
                Pushed::Queued {
                    wake: w,
                    skipped: s,
                } => {
                    wake |= w;
                    skipped += s;
                }
                other => return other,
            }
        }
        Pushed::Queued { wake, skipped }
    }

    /// Queues a telemetry item. On overflow each stream keeps only its newest item.
    pub fn push(&mut self, frame: Frame, now: Instant) -> Pushed {
        if self.closing {
            return Pushed::Closing;
        }
        if let Some(InFlight {
            built: Some(built), ..
        }) = self.in_flight
        {
            if now.saturating_duration_since(built) > self.limits.max_lag {
                return Pushed::Lagging;
            }
        }
        self.frame_bytes += frame.bytes(self.framing).len();
        self.frames.push_back(frame);
        let mut skipped = 0;
        if self.frames.len() > self.limits.max_frames || self.frame_bytes > self.limits.max_bytes {
            skipped = self.keep_newest_per_stream();
        }
        Pushed::Queued {
            wake: self.in_flight.is_none(),
            skipped,
        }
    }

    fn keep_newest_per_stream(&mut self) -> u64 {
        let before = self.frames.len();
        if self.frames.iter().all(|f| f.stream() == 0) {
            // v1 (the usual case): just the newest.
            self.frames.drain(..before - 1);
        } else {
            // Streams are few (subscriptions per connection are bounded): a small list will do.
            let mut seen: Vec<u32> = Vec::new();
            let mut keep = vec![false; before];
            for (i, f) in self.frames.iter().enumerate().rev() {
                if !seen.contains(&f.stream()) {
                    seen.push(f.stream());
                    keep[i] = true;
                }
            }
            let mut i = 0;
            self.frames.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        let framing = self.framing;
        self.frame_bytes = self.frames.iter().map(|f| f.bytes(framing).len()).sum();
        (before - self.frames.len()) as u64
    }

    /// Queues a control item (pong, reply). Returns whether the writer must be woken.
    pub fn push_control(&mut self, bytes: Bytes) -> Result<bool, ControlOverflow> {
        if self.closing {
            return Ok(false);
        }
        if self.control_bytes + bytes.len() > self.limits.max_control_bytes {
            return Err(ControlOverflow);
        }
        self.control_bytes += bytes.len();
        self.control.push_back(bytes);
        Ok(self.in_flight.is_none())
    }

    /// Starts closing: waiting telemetry is dropped (returned as a count), `last` (a Close frame,
    /// for WebSocket) is sent after the item in flight and any queued control items. Idempotent:
    /// only the first call has an effect. Returns whether the writer must be woken.
    pub fn close(&mut self, last: Option<Bytes>) -> (u64, bool) {
        if self.closing {
            return (0, false);
        }
        self.closing = true;
        let dropped = self.frames.len() as u64;
        self.frames.clear();
        self.frame_bytes = 0;
        if let Some(last) = last {
            self.control_bytes += last.len();
            self.control.push_back(last);
        }
        (dropped, self.in_flight.is_none())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Takes the next item to write. Control items go first. Before a delta whose base keyframe
    /// the client has not been sent, that keyframe goes (the delta stays first in line).
    pub fn take_next(&mut self) -> Next {
        debug_assert!(
            self.in_flight.is_none(),
            "complete() the item in flight first"
        );
        if let Some(bytes) = self.control.pop_front() {
            self.control_bytes -= bytes.len();
            self.in_flight = Some(InFlight {
                built: None,
                counter: 0,
                len: bytes.len(),
                deflate: None,
            });
            return Next::Write(bytes);
        }
        if let Some(Frame::Profile(msg)) = self.frames.front() {
            let held = self.keys.iter_mut().find(|(p, _)| *p == msg.profile);
            let want = msg.key_seq();
            let (built, seq) = (msg.built, msg.seq);
            let missing = match (&msg.kind, held) {
                (MsgKind::Key, Some(held)) => {
                    held.1 = want;
                    None
                }
                (MsgKind::Key, None) => {
                    self.keys.push((msg.profile, want));
                    None
                }
                (MsgKind::Delta { .. }, Some(held)) if held.1 == want => None,
                (MsgKind::Delta { base }, held) => {
                    let base = Arc::clone(base);
                    match held {
                        Some(h) => h.1 = want,
                        None => self.keys.push((msg.profile, want)),
                    }
                    Some(base)
                }
            };
            if let Some(base) = missing {
                let (bytes, deflate) = self.wire(&Frame::Profile(base));
                // Sent on the delta's behalf: its age is the delta's.
                self.in_flight = Some(InFlight {
                    built: Some(built),
                    counter: seq,
                    len: bytes.len(),
                    deflate,
                });
                return Next::Write(bytes);
            }
        }
        if let Some(frame) = self.frames.pop_front() {
            self.frame_bytes -= frame.bytes(self.framing).len();
            let (bytes, deflate) = self.wire(&frame);
            self.in_flight = Some(InFlight {
                built: Some(frame.built()),
                counter: frame.counter(),
                len: bytes.len(),
                deflate,
            });
            return Next::Write(bytes);
        }
        if self.closing {
            Next::Finished
        } else {
            Next::Idle
        }
    }

    /// The item in flight was written completely.
    pub fn complete(&mut self) -> Completed {
        match self.in_flight.take() {
            Some(f) => Completed {
                frames: f.built.is_some() as u64,
                bytes: f.len as u64,
                frame: f.built.map(|b| (f.counter, b)),
                deflate: f.deflate,
            },
            None => Completed::default(),
        }
    }

    /// Telemetry frames waiting (not counting the one in flight).
    pub fn waiting_frames(&self) -> usize {
        self.frames.len()
    }

    /// Age of the frame in flight (the client's lag), if one is.
    pub fn lag(&self, now: Instant) -> Duration {
        match self.in_flight {
            Some(InFlight { built: Some(b), .. }) => now.saturating_duration_since(b),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 100-byte packet whose payload names its counter (`{"c":N}` padded), so a test can
    /// tell which frame it was handed.
    fn packet(counter: u64, built: Instant) -> Arc<Packet> {
        let mut payload = format!("{{\"c\":{counter}}}").into_bytes();
        payload.resize(100, b' ');
        Arc::new(Packet::build(counter, 0, built, &payload))
    }

    #[test]
    fn a_tick_gives_v1_clients_the_frame_and_v2_clients_their_due_profiles() {
        use crate::profile::{Mode, ProfileKey, Profiles};
        use crate::tick::{TickBuilder, TickInput};
        let profiles = Profiles::new(4);
        let every = profiles
            .acquire(ProfileKey::new(vec![0], 1, Mode::Full))
            .unwrap();
        let fifth = profiles
            .acquire(ProfileKey::new(vec![1], 5, Mode::Full))
            .unwrap();
        let mut builder =
            TickBuilder::new(profiles, 50.0, crate::ws::deflate::Mode::Off, Instant::now);
        let vars = crate::telemetry::Variables::new();
        let t0 = Instant::now();
        let (mut v1, mut v2) = (
            SendQueue::new(Framing::Lines, QueueLimits::DEFAULT),
            SendQueue::new(Framing::Lines, QueueLimits::DEFAULT),
        );
        v2.enter_v2(Framing::Lines);
        let held = [every.clone(), fifth.clone()];
        let mut got = Vec::new();
        for n in 1..=5u64 {
            let (tick, _) = builder.build(TickInput {
                variables: &vars,
                valid: true,
                timestamp_us: n,
                upstream_counter: None,
                now: t0,
                compressing: false,
            });
            assert!(matches!(
                v1.push_tick(&tick, None, t0),
                Pushed::Queued { .. }
            ));
            assert!(matches!(
                v2.push_tick(&tick, Some(&held), t0),
                Pushed::Queued { .. }
            ));
            while let Next::Write(bytes) = v2.take_next() {
                got.push(String::from_utf8(bytes.to_vec()).unwrap());
                v2.complete();
            }
        }
        assert_eq!(v1.waiting_frames(), 5, "a v1 client gets every frame");
        let of = |p: u32| {
            got.iter()
                .filter(|m| m.contains(&format!("\"p\":{p},")))
                .count()
        };
        assert_eq!(of(every.id()), 5, "every frame: {got:?}");
        assert_eq!(of(fifth.id()), 1, "only on frame 5: {got:?}");
    }

    fn limits() -> QueueLimits {
        QueueLimits {
            max_frames: 3,
            max_bytes: 1 << 20,
            max_control_bytes: 1000,
            max_lag: Duration::from_millis(500),
        }
    }

    /// The counter of the frame `next` hands out (WebSocket: after the 2-byte header).
    fn counter_of(next: Next) -> u64 {
        let Next::Write(b) = next else {
            panic!("expected a frame, got {next:?}")
        };
        let text = std::str::from_utf8(&b[b.iter().position(|&c| c == b'{').unwrap()..]).unwrap();
        let digits: String = text[5..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    }

    #[test]
    fn fifo_then_idle_and_wake_only_when_idle() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(Framing::Lines, limits());
        assert_eq!(
            q.push_frame(&packet(1, t0), t0),
            Pushed::Queued {
                wake: true,
                skipped: 0
            }
        );
        assert_eq!(counter_of(q.take_next()), 1);
        assert_eq!(
            q.push_frame(&packet(2, t0), t0),
            Pushed::Queued {
                wake: false,
                skipped: 0
            }
        );
        assert_eq!(
            q.complete(),
            Completed {
                frames: 1,
                bytes: 100,
                frame: Some((1, t0)),
                deflate: None,
            }
        );
        assert_eq!(counter_of(q.take_next()), 2);
        q.complete();
        assert_eq!(q.take_next(), Next::Idle);
    }

    #[test]
    fn overflow_skips_to_the_newest_but_never_the_frame_in_flight() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(Framing::WebSocket, limits());
        q.push_frame(&packet(1, t0), t0);
        let in_flight = q.take_next();
        let in_flight_len = match &in_flight {
            Next::Write(b) => b.len() as u64,
            other => panic!("{other:?}"),
        };
        assert_eq!(counter_of(in_flight), 1);
        for c in 2..=4 {
            assert_eq!(
                q.push_frame(&packet(c, t0), t0),
                Pushed::Queued {
                    wake: false,
                    skipped: 0
                }
            );
        }
        assert_eq!(
            q.push_frame(&packet(5, t0), t0),
            Pushed::Queued {
                wake: false,
                skipped: 3
            }
        );
        assert_eq!(q.waiting_frames(), 1);
        // The frame in flight is untouched and completes whole; the survivor is the newest.
        assert_eq!(q.complete().bytes, in_flight_len);
        assert_eq!(counter_of(q.take_next()), 5);
        assert_eq!(q.frames.len(), 0);
    }

    #[test]
    fn byte_bound_also_triggers_skipping() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(
            Framing::Lines,
            QueueLimits {
                max_bytes: 250,
                ..limits()
            },
        );
        q.push_frame(&packet(1, t0), t0);
        q.push_frame(&packet(2, t0), t0);
        assert_eq!(
            q.push_frame(&packet(3, t0), t0),
            Pushed::Queued {
                wake: true,
                skipped: 2
            }
        );
        assert_eq!(counter_of(q.take_next()), 3, "the newest survives");
    }

    #[test]
    fn lag_is_the_age_of_the_frame_in_flight() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(Framing::Lines, limits());
        q.push_frame(&packet(1, t0), t0);
        let _ = q.take_next();
        let later = t0 + Duration::from_millis(400);
        assert!(matches!(
            q.push_frame(&packet(2, later), later),
            Pushed::Queued { .. }
        ));
        let too_late = t0 + Duration::from_millis(600);
        assert_eq!(
            q.push_frame(&packet(3, too_late), too_late),
            Pushed::Lagging
        );
        // A slow but progressing client is not lagging: each frame completes in time.
        q.complete();
        let _ = q.take_next(); // frame 2, built at `later`
        assert!(matches!(
            q.push_frame(&packet(4, too_late), too_late),
            Pushed::Queued { .. }
        ));
    }

    #[test]
    fn control_first_and_never_skipped_then_close_last() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(Framing::WebSocket, limits());
        q.push_frame(&packet(1, t0), t0);
        assert_eq!(q.push_control(Bytes::from_static(b"pong")), Ok(true));
        assert_eq!(q.take_next(), Next::Write(Bytes::from_static(b"pong")));
        assert_eq!(
            q.complete(),
            Completed {
                frames: 0,
                bytes: 4,
                frame: None,
                deflate: None,
            }
        );
        let _ = q.take_next(); // frame 1 in flight
        q.push_frame(&packet(2, t0), t0);
        let (dropped, wake) = q.close(Some(Bytes::from_static(b"bye")));
        assert_eq!((dropped, wake), (1, false));
        assert_eq!(q.push_frame(&packet(3, t0), t0), Pushed::Closing);
        assert_eq!(q.complete().frames, 1);
        assert_eq!(q.take_next(), Next::Write(Bytes::from_static(b"bye")));
        q.complete();
        assert_eq!(q.take_next(), Next::Finished);
        assert_eq!(q.close(None), (0, false));
    }

    #[test]
    fn control_overflow_is_reported() {
        let mut q = SendQueue::new(Framing::WebSocket, limits());
        assert!(q.push_control(Bytes::from(vec![0u8; 900])).is_ok());
        assert_eq!(
            q.push_control(Bytes::from(vec![0u8; 200])),
            Err(ControlOverflow)
        );
    }

    fn profile_msg(profile: u32, seq: u64, base: Option<&Arc<ProfileMsg>>) -> Arc<ProfileMsg> {
        let t0 = Instant::now();
        let json = format!("{{\"p\":{profile},\"seq\":{seq}}}");
        let kind = match base {
            None => MsgKind::Key,
            Some(b) => MsgKind::Delta {
                base: Arc::clone(b),
            },
        };
        Arc::new(ProfileMsg::frame(profile, seq, t0, kind, json.as_bytes()))
    }

    fn written(q: &mut SendQueue) -> Bytes {
        let Next::Write(b) = q.take_next() else {
            panic!("nothing to write")
        };
        q.complete();
        b
    }

    #[test]
    fn clients_of_one_profile_write_the_very_same_allocation() {
        let t0 = Instant::now();
        let key = profile_msg(3, 10, None);
        let mut a = SendQueue::new(Framing::WebSocket, limits());
        let mut b = SendQueue::new(Framing::WebSocket, limits());
        let mut c = SendQueue::new(Framing::Length, limits());
        for q in [&mut a, &mut b, &mut c] {
            q.enter_v2(q.framing());
            q.push(Frame::Profile(Arc::clone(&key)), t0);
        }
        let (wa, wb, wc) = (written(&mut a), written(&mut b), written(&mut c));
        assert_eq!(wa.as_ptr(), wb.as_ptr(), "one buffer for every client");
        assert_eq!(wa.as_ptr(), key.ws.as_ptr());
        assert_eq!(wc.as_ptr(), key.length.as_ptr());
        assert_eq!(
            Arc::strong_count(&key),
            1,
            "queues hold no copies once written"
        );
    }

    #[test]
    fn a_delta_whose_keyframe_was_skipped_brings_the_keyframe_first() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(Framing::Lines, limits());
        q.enter_v2(Framing::Lines);
        let k1 = profile_msg(1, 10, None);
        q.push(Frame::Profile(Arc::clone(&k1)), t0);
        assert_eq!(written(&mut q), k1.line);
        // Overflow: k2 and the deltas before the newest are skipped (latest wins per stream);
        // the other profile's only message survives.
        let k2 = profile_msg(1, 20, None);
        let other = profile_msg(2, 20, None);
        q.push(Frame::Profile(Arc::clone(&k2)), t0);
        q.push(Frame::Profile(Arc::clone(&other)), t0);
        q.push(Frame::Profile(profile_msg(1, 21, Some(&k2))), t0);
        let newest = profile_msg(1, 22, Some(&k2));
        let pushed = q.push(Frame::Profile(Arc::clone(&newest)), t0);
        assert_eq!(
            pushed,
            Pushed::Queued {
                wake: true,
                skipped: 2
            }
        );
        assert_eq!(written(&mut q), other.line);
        assert_eq!(written(&mut q), k2.line, "the skipped base goes first");
        assert_eq!(written(&mut q), newest.line);
        // Once held, later deltas on the same base go alone.
        q.push(Frame::Profile(profile_msg(1, 23, Some(&k2))), t0);
        let next = written(&mut q);
        assert!(next.starts_with(b"{\"p\":1,\"seq\":23"), "{next:?}");
        assert_eq!(q.take_next(), Next::Idle);
    }

    #[test]
    fn entering_v2_finishes_the_frame_in_flight_and_drops_waiting_v1_frames() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(Framing::Lines, limits());
        q.push_frame(&packet(1, t0), t0);
        q.push_frame(&packet(2, t0), t0);
        let Next::Write(in_flight) = q.take_next() else {
            panic!()
        };
        assert_eq!(q.enter_v2(Framing::Length), 1);
        q.push_control(Bytes::from_static(b"\0\0\0\x02{}")).unwrap();
        assert_eq!(q.complete().bytes, in_flight.len() as u64);
        assert_eq!(written(&mut q), Bytes::from_static(b"\0\0\0\x02{}"));
        assert_eq!(q.take_next(), Next::Idle);
    }

    /// Property: whatever the order of frames, skips (overflow, latest wins) and uncompressed
    /// control items, every message a permessage-deflate client is handed decodes in a reference
    /// inflater that keeps its context (as browsers do) to exactly the frame it stands for.
    #[test]
    fn every_compressed_message_decodes_in_the_clients_own_window() {
        use crate::ws::deflate::Deflater;
        use flate2::{Decompress, FlushDecompress};
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20 {
            let t0 = Instant::now();
            let mut deflater = Deflater::default();
            let shared = round % 4 != 3;
            let mut queues: Vec<(SendQueue, Decompress)> = (0..4)
                .map(|_| {
                    let mut q = SendQueue::new(
                        Framing::WebSocket,
                        QueueLimits {
                            max_frames: 1 + (next() % 4) as usize,
                            ..limits()
                        },
                    );
                    q.set_deflate(shared);
                    (q, Decompress::new_with_window_bits(false, 15))
                })
                .collect();
            let mut previous: Option<Arc<Packet>> = None;
            let mut decoded = [0usize; 2];
            for counter in 1..200u64 {
                // Telemetry-like text: a few values drift, most stay.
                let payload = format!(
                    "{{\"update_counter\":{counter},\"a\":{},\"b\":{},\"pad\":\"{}\"}}\n",
                    next() % 1000,
                    counter / 7,
                    "x".repeat((next() % 3000) as usize)
                );
                let mut p = Packet::build(counter, 0, t0, payload.as_bytes());
                let prev = previous.as_ref().map(|p| (&p.tcp[..], p.counter));
                p.deflate = Some(deflater.packet(&p.tcp, prev));
                let p = Arc::new(p);
                previous = Some(Arc::clone(&p));
                for (q, inflater) in &mut queues {
                    q.push_frame(&p, t0);
                    if next() % 5 == 0 {
                        q.push_control(crate::ws::frame::server_frame(
                            crate::ws::OpCode::Text,
                            b"{\"ok\":true}",
                        ))
                        .unwrap();
                    }
                    // Read 0..3 items: sometimes it falls behind, so frames get skipped.
                    for _ in 0..next() % 4 {
                        let Next::Write(bytes) = q.take_next() else {
                            break;
                        };
                        q.complete();
                        let h = crate::ws::frame::decode_header(&bytes).unwrap();
                        let body = &bytes[h.header_len..];
                        let text = if h.rsv & 0x4 != 0 {
                            let mut input = body.to_vec();
                            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
                            let mut out = Vec::with_capacity(64 * 1024);
                            inflater
                                .decompress_vec(&input, &mut out, FlushDecompress::Sync)
                                .expect("decodes in this client's window");
                            decoded[0] += 1;
                            out
                        } else {
                            decoded[1] += 1;
                            body.to_vec()
                        };
                        let v: serde_json::Value = serde_json::from_slice(&text)
                            .unwrap_or_else(|e| panic!("round {round}: {e}"));
                        if let Some(c) = v.get("update_counter") {
                            assert!(c.as_u64().unwrap() <= counter);
                        }
                    }
                }
            }
            assert!(decoded[0] > 100, "compressed messages decoded: {decoded:?}");
        }
    }
}
