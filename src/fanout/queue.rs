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

use crate::packet::{Packet, Transport};
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

/// The result of writing one item.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Completed {
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
}

/// One client's queue.
#[derive(Debug)]
pub struct SendQueue {
    transport: Transport,
    limits: QueueLimits,
    frames: VecDeque<Arc<Packet>>,
    frame_bytes: usize,
    control: VecDeque<Bytes>,
    control_bytes: usize,
    in_flight: Option<InFlight>,
    closing: bool,
}

impl SendQueue {
    /// An empty queue for a client of `transport`.
    pub fn new(transport: Transport, limits: QueueLimits) -> Self {
        Self {
            transport,
            limits,
            frames: VecDeque::with_capacity(limits.max_frames.min(64) + 1),
            frame_bytes: 0,
            control: VecDeque::new(),
            control_bytes: 0,
            in_flight: None,
            closing: false,
        }
    }

    /// Queues a telemetry frame (a refcount bump, no copy).
    pub fn push_frame(&mut self, packet: &Arc<Packet>, now: Instant) -> Pushed {
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
        self.frame_bytes += packet.bytes(self.transport).len();
        self.frames.push_back(Arc::clone(packet));
        let mut skipped = 0;
        if self.frames.len() > self.limits.max_frames || self.frame_bytes > self.limits.max_bytes {
            while self.frames.len() > 1 {
                let old = self.frames.pop_front().expect("len > 1");
                self.frame_bytes -= old.bytes(self.transport).len();
                skipped += 1;
            }
        }
        Pushed::Queued {
            wake: self.in_flight.is_none(),
            skipped,
        }
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

    /// Takes the next item to write. Control items go first.
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
            });
            return Next::Write(bytes);
        }
        if let Some(packet) = self.frames.pop_front() {
            let bytes = packet.bytes(self.transport).clone();
            self.frame_bytes -= bytes.len();
            self.in_flight = Some(InFlight {
                built: Some(packet.built),
                counter: packet.counter,
                len: bytes.len(),
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
            },
            None => Completed::default(),
        }
    }

    /// Telemetry frames waiting (not counting the one in flight).
    pub fn waiting_frames(&self) -> usize {
        self.frames.len()
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
        let mut q = SendQueue::new(Transport::Tcp, limits());
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
                frame: Some((1, t0))
            }
        );
        assert_eq!(counter_of(q.take_next()), 2);
        q.complete();
        assert_eq!(q.take_next(), Next::Idle);
    }

    #[test]
    fn overflow_skips_to_the_newest_but_never_the_frame_in_flight() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(Transport::WebSocket, limits());
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
            Transport::Tcp,
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
        let mut q = SendQueue::new(Transport::Tcp, limits());
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
        let mut q = SendQueue::new(Transport::WebSocket, limits());
        q.push_frame(&packet(1, t0), t0);
        assert_eq!(q.push_control(Bytes::from_static(b"pong")), Ok(true));
        assert_eq!(q.take_next(), Next::Write(Bytes::from_static(b"pong")));
        assert_eq!(
            q.complete(),
            Completed {
                frames: 0,
                bytes: 4,
                frame: None
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
        let mut q = SendQueue::new(Transport::WebSocket, limits());
        assert!(q.push_control(Bytes::from(vec![0u8; 900])).is_ok());
        assert_eq!(
            q.push_control(Bytes::from(vec![0u8; 200])),
            Err(ControlOverflow)
        );
    }
}
