//! What one tick builds, as a function of its inputs: the source's values, the time, whether
//! anyone compresses. The shell's hub (`aerobridge::fanout::hub`) keeps what is not a function:
//! pacing on the grid, reading the clocks, applying commands to the source, handing the result
//! to the workers and the NATS publisher. Everything the tick *builds* — the frame, its TCP and
//! WebSocket packets, their deflate variants, each v2 profile's message, the numbers for the
//! counters — is built here, once per tick, and unit-tested without a socket or a sleep.

use crate::packet::Packet;
use crate::profile::build::{Frame, ProfileFrames};
use crate::profile::{ProfileBuilder, Profiles};
use crate::telemetry::{FrameEncoder, FrameHeader, Variables};
use crate::ws::deflate::{Deflater, Mode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One tick's output: the v1 frame for every v1 client, and the message of every v2 profile due
/// on this frame (indexed by profile slot).
#[derive(Debug)]
pub struct Tick {
    /// The full frame (v1).
    pub packet: Arc<Packet>,
    /// v2 profiles' keyframes and deltas.
    pub profiles: ProfileFrames,
}

/// What a tick is built from, besides the builder's own state.
#[derive(Debug)]
pub struct TickInput<'a> {
    /// The source's values, after it advanced to this tick.
    pub variables: &'a Variables,
    /// `data_valid`.
    pub valid: bool,
    /// The frame's `timestamp`: the wall clock now, or a source's own (a relayed aerobridge's).
    pub timestamp_us: u64,
    /// A source's own `update_counter` (a NATS edge keeps the origin's); `None`: count ours.
    pub upstream_counter: Option<u64>,
    /// When the build started (the packet's birth, for lag and latency accounting).
    pub now: Instant,
    /// Some client agreed to permessage-deflate: compress this tick's packets.
    pub compressing: bool,
}

/// What the counters learn from one tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// The frame's size in bytes.
    pub frame_bytes: u64,
    /// The v1 frame's compressed sizes (standalone, dictionary); 0 when not compressed or not
    /// smaller.
    pub deflate_bytes: [u64; 2],
    /// v2 messages built.
    pub profile_messages: u64,
    /// Time spent compressing (v1 frame and v2 messages), when compressing.
    pub compress_time: Option<Duration>,
    /// The running count of non-finite numbers sent as `null`, when it grew this tick.
    pub non_finite: Option<u64>,
}

/// Builds tick after tick (owned by the tick thread).
pub struct TickBuilder {
    encoder: FrameEncoder,
    profiles: ProfileBuilder,
    deflater: Option<Deflater>,
    compression: Mode,
    previous: Option<Arc<Packet>>,
    counter: u64,
    rate_hz: f64,
    non_finite: u64,
    clock: fn() -> Instant,
}

impl TickBuilder {
    /// A builder at `rate_hz` for `profiles`, compressing as `compression` says; `clock` is the
    /// shell's, read only to time compression.
    pub fn new(
        profiles: Arc<Profiles>,
        rate_hz: f64,
        compression: Mode,
        clock: fn() -> Instant,
    ) -> Self {
        Self {
            encoder: FrameEncoder::new(),
            profiles: ProfileBuilder::new(profiles, rate_hz, compression, clock),
            deflater: (compression != Mode::Off).then(Deflater::default),
            compression,
            previous: None,
            counter: 0,
            rate_hz,
            non_finite: 0,
            clock,
        }
    }

    /// The `update_counter` the next frame carries (unless its source passes a higher one):
    /// what commands applied before it are told (`frame` in their replies).
    pub fn next_counter(&self) -> u64 {
        self.counter + 1
    }

    /// Builds the next tick. Counters rise by one per frame; a source's own counter is taken
    /// when it is higher, never when it would go back (the NATS edge's rule, `feed`, keeps it
    /// ahead).
    pub fn build(&mut self, input: TickInput<'_>) -> (Arc<Tick>, TickReport) {
        self.counter = (self.counter + 1).max(input.upstream_counter.unwrap_or(0));
        let counter = self.counter;
        let header = FrameHeader {
            timestamp_us: input.timestamp_us,
            data_valid: input.valid,
            update_counter: counter,
            broadcast_rate_hz: self.rate_hz,
        };
        let mut report = TickReport::default();
        let payload = self.encoder.encode(&header, input.variables);
        let mut packet = Packet::build(counter, header.timestamp_us, input.now, payload);
        let mut compress_time = Duration::ZERO;
        // Dictionaries are the previous packets' payloads, kept either way, so compression can
        // start at any tick.
        if let Some(d) = self.deflater.as_mut().filter(|_| input.compressing) {
            let prev = self
                .previous
                .as_ref()
                .filter(|_| self.compression == Mode::Shared)
                .map(|p| (&p.tcp[..], p.counter));
            let start = (self.clock)();
            let c = d.packet(&packet.tcp, prev);
            compress_time += (self.clock)().saturating_duration_since(start);
            for (size, variant) in report
                .deflate_bytes
                .iter_mut()
                .zip([&c.standalone, &c.dict])
            {
                *size = variant.as_ref().map_or(0, |b| b.len() as u64);
            }
            packet.deflate = Some(c);
        }
        let packet = Arc::new(packet);
        self.previous = Some(Arc::clone(&packet));
        let profiles = self.profiles.build(
            input.compressing,
            &Frame {
                seq: counter,
                timestamp_us: header.timestamp_us,
                valid: input.valid,
                built: input.now,
                payload: &packet.tcp,
                spans: self.encoder.value_spans(),
            },
        );
        report.profile_messages = profiles.iter().flatten().count() as u64;
        if self.deflater.is_some() && input.compressing {
            report.compress_time = Some(compress_time + self.profiles.compress_time());
        }
        if self.encoder.non_finite_count() != self.non_finite {
            self.non_finite = self.encoder.non_finite_count();
            report.non_finite = Some(self.non_finite);
        }
        report.frame_bytes = packet.tcp.len() as u64;
        (Arc::new(Tick { packet, profiles }), report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Mode as ProfileMode, ProfileKey};
    use crate::sim::Sim;
    use std::time::UNIX_EPOCH;

    fn input<'a>(vars: &'a Variables, t0: Instant, n: u64, compressing: bool) -> TickInput<'a> {
        TickInput {
            variables: vars,
            valid: true,
            timestamp_us: 1_763_000_000_000_000 + n * 20_000,
            upstream_counter: None,
            now: t0 + Duration::from_millis(20 * n),
            compressing,
        }
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).expect("a frame is JSON")
    }

    #[test]
    fn counters_rise_by_one_and_follow_a_higher_upstream_never_back() {
        let sim = Sim::new(UNIX_EPOCH);
        let mut b = TickBuilder::new(Profiles::new(4), 50.0, Mode::Off, Instant::now);
        let t0 = Instant::now();
        assert_eq!(b.next_counter(), 1);
        let (tick, report) = b.build(input(sim.variables(), t0, 0, false));
        assert_eq!(tick.packet.counter, 1);
        assert_eq!(report.frame_bytes, tick.packet.tcp.len() as u64);
        let frame = json(&tick.packet.tcp);
        assert_eq!(frame["update_counter"], 1);
        assert_eq!(frame["timestamp"], 1_763_000_000_000_000u64);
        assert_eq!(frame["broadcast_rate_hz"], 50.0);
        assert!(tick.packet.tcp.ends_with(b"}\n"));
        // The WebSocket packet is the same payload behind a frame header.
        assert!(tick.packet.ws.ends_with(&tick.packet.tcp));
        let mut upstream = input(sim.variables(), t0, 1, false);
        upstream.upstream_counter = Some(40);
        assert_eq!(b.build(upstream).0.packet.counter, 40);
        let mut behind = input(sim.variables(), t0, 2, false);
        behind.upstream_counter = Some(7);
        assert_eq!(b.build(behind).0.packet.counter, 41, "never back");
        assert_eq!(b.next_counter(), 42);
    }

    #[test]
    fn packets_are_compressed_only_while_someone_agreed_and_against_the_previous_one() {
        let mut sim = Sim::new(UNIX_EPOCH);
        let mut b = TickBuilder::new(Profiles::new(4), 50.0, Mode::Shared, Instant::now);
        let t0 = Instant::now();
        let (plain, report) = b.build(input(sim.variables(), t0, 0, false));
        assert!(plain.packet.deflate.is_none());
        assert_eq!(report.compress_time, None);
        sim.advance(
            UNIX_EPOCH + Duration::from_millis(20),
            Duration::from_millis(20),
        );
        let (first, report) = b.build(input(sim.variables(), t0, 1, true));
        let c = first.packet.deflate.as_ref().expect("compressed");
        // The previous packet (built uncompressed) is the dictionary all the same.
        assert_eq!(c.base, plain.packet.counter);
        assert!(c.dict.as_ref().unwrap().len() < c.standalone.as_ref().unwrap().len());
        assert_eq!(
            report.deflate_bytes,
            [
                c.standalone.as_ref().unwrap().len() as u64,
                c.dict.as_ref().unwrap().len() as u64
            ]
        );
        assert!(report.compress_time.is_some());
        let mut standalone =
            TickBuilder::new(Profiles::new(4), 50.0, Mode::Standalone, Instant::now);
        standalone.build(input(sim.variables(), t0, 0, true));
        let (t, _) = standalone.build(input(sim.variables(), t0, 1, true));
        let c = t.packet.deflate.as_ref().unwrap();
        assert!(c.dict.is_none() && c.standalone.is_some());
    }

    #[test]
    fn due_profiles_get_one_message_each_built_from_the_frame() {
        let sim = Sim::new(UNIX_EPOCH);
        let profiles = Profiles::new(4);
        let every_frame = profiles
            .acquire(ProfileKey::new(vec![0, 1], 1, ProfileMode::Full))
            .unwrap();
        let every_fifth = profiles
            .acquire(ProfileKey::new(vec![2], 5, ProfileMode::Delta))
            .unwrap();
        let mut b = TickBuilder::new(profiles, 50.0, Mode::Off, Instant::now);
        let t0 = Instant::now();
        let mut seen = [0u64; 2];
        for n in 0..10 {
            let (tick, report) = b.build(input(sim.variables(), t0, n, false));
            for (i, p) in [&every_frame, &every_fifth].iter().enumerate() {
                if let Some(Some(msg)) = tick.profiles.get(p.shared().slot) {
                    seen[i] += 1;
                    assert_eq!(msg.seq, tick.packet.counter);
                }
            }
            assert_eq!(
                report.profile_messages,
                tick.profiles.iter().flatten().count() as u64
            );
        }
        assert_eq!(seen, [10, 2], "every frame, and every fifth (5 and 10)");
    }

    #[test]
    fn non_finite_numbers_are_reported_once_as_they_grow() {
        let mut vars = Variables::new();
        vars.set(crate::telemetry::VarId(0), f64::NAN);
        let mut b = TickBuilder::new(Profiles::new(1), 50.0, Mode::Off, Instant::now);
        let t0 = Instant::now();
        let (tick, report) = b.build(input(&vars, t0, 0, false));
        assert_eq!(report.non_finite, Some(1));
        let name = crate::telemetry::VARIABLES[0].name;
        assert!(json(&tick.packet.tcp)["variables"][name].is_null());
        let (_, report) = b.build(input(&vars, t0, 1, false));
        assert_eq!(report.non_finite, Some(2));
    }
}
