//! The tick's side: for every live profile due on this frame, one keyframe or delta, encoded once
//! and framed once ([`ProfileMsg::frame`]). Values are copied from the v1 frame's bytes (the
//! encoder's value spans), never encoded again, so a reconstructed state equals the v1 frame
//! value for value; a delta compares those bytes with the keyframe's.

use super::registry::{ProfileShared, Profiles};
use super::{Mode, MsgKind, ProfileMsg};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest time between a profile's keyframes (the contract: at least one a second).
pub const KEY_INTERVAL: Duration = Duration::from_secs(1);

/// The v1 frame a tick just encoded, as the profiles read it.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// `update_counter`.
    pub seq: u64,
    /// `timestamp` (µs since the UNIX epoch).
    pub timestamp_us: u64,
    /// `data_valid`.
    pub valid: bool,
    /// When the tick started (lag accounting).
    pub built: Instant,
    /// The v1 JSON.
    pub payload: &'a [u8],
    /// Each variable's value in `payload` ([`crate::telemetry::FrameEncoder::value_spans`]).
    pub spans: &'a [(u32, u32)],
}

/// One tick's messages, indexed by profile slot (`None`: not due, or no such profile).
pub type ProfileFrames = Box<[Option<Arc<ProfileMsg>>]>;

struct KeyState {
    msg: Arc<ProfileMsg>,
    /// The keyframe's values' bytes, back to back; `ends[i]` closes position `i`.
    values: Vec<u8>,
    ends: Vec<u32>,
    at: Instant,
}

struct Active {
    shared: Arc<ProfileShared>,
    key: Option<KeyState>,
    /// The last message's JSON and seq: the dictionary of the next one (shared deflate).
    previous: Option<(Vec<u8>, u64)>,
}

/// Builds every due profile's message, tick after tick (owned by the tick thread).
pub struct ProfileBuilder {
    table: Arc<Profiles>,
    generation: u64,
    active: Vec<Active>,
    slots: usize,
    key_frames: u64,
    json: Vec<u8>,
    compression: crate::ws::deflate::Mode,
    deflater: Option<crate::ws::deflate::Deflater>,
    /// The shell's clock, read only to time compression (the core reads no clock of its own).
    clock: fn() -> Instant,
    /// Time spent compressing in the last [`build`](Self::build).
    compress_time: Duration,
}

impl ProfileBuilder {
    /// A builder for `table`'s profiles at `rate_hz` (a keyframe at least every `rate_hz` frames
    /// and every [`KEY_INTERVAL`]); `clock` times compression ([`compress_time`](Self::compress_time)).
    pub fn new(
        table: Arc<Profiles>,
        rate_hz: f64,
        compression: crate::ws::deflate::Mode,
        clock: fn() -> Instant,
    ) -> Self {
        use crate::ws::deflate::{Deflater, Mode};
        Self {
            table,
            generation: u64::MAX,
            active: Vec::new(),
            slots: 0,
            key_frames: rate_hz.ceil().max(1.0) as u64,
            json: Vec::with_capacity(16 * 1024),
            compression,
            deflater: (compression != Mode::Off).then(Deflater::default),
            clock,
            compress_time: Duration::ZERO,
        }
    }

    /// Time spent compressing in the last [`build`](Self::build).
    pub fn compress_time(&self) -> Duration {
        self.compress_time
    }

    /// Live profiles.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    fn sync(&mut self) {
        let generation = self.table.generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let live = self.table.live();
        let mut old = std::mem::take(&mut self.active);
        self.slots = live.iter().map(|s| s.slot + 1).max().unwrap_or(0);
        for shared in live {
            let (key, previous) = old
                .iter_mut()
                .find(|a| Arc::ptr_eq(&a.shared, &shared))
                .map_or((None, None), |a| (a.key.take(), a.previous.take()));
            self.active.push(Active {
                shared,
                key,
                previous,
            });
        }
    }

    /// The messages for `frame`: one per profile due on it; `compress`: add permessage-deflate
    /// variants (some client agreed to it).
    pub fn build(&mut self, compress_now: bool, frame: &Frame<'_>) -> ProfileFrames {
        self.compress_time = Duration::ZERO;
        self.sync();
        if self.active.is_empty() {
            return Box::new([]);
        }
        let mut out: Vec<Option<Arc<ProfileMsg>>> = vec![None; self.slots];
        for active in &mut self.active {
            let key = &active.shared.key;
            if frame.seq % u64::from(key.every) != 0 {
                continue;
            }
            let keyframe = match (&active.key, key.mode) {
                (_, Mode::Full) | (None, _) => true,
                (Some(k), Mode::Delta) => {
                    frame.seq.saturating_sub(k.msg.seq) >= self.key_frames
                        || frame.built.saturating_duration_since(k.at) >= KEY_INTERVAL
                        || frame.seq <= k.msg.seq
                }
            };
            let (deflater, compression, clock) = (&mut self.deflater, self.compression, self.clock);
            let compress_time = &mut self.compress_time;
            let previous = &mut active.previous;
            let mut compress = |json: &[u8], msg: &mut ProfileMsg| {
                if let Some(d) = deflater.as_mut() {
                    if compress_now {
                        let prev = previous
                            .as_ref()
                            .filter(|_| compression == crate::ws::deflate::Mode::Shared)
                            .map(|(p, seq)| (&p[..], *seq));
                        let start = clock();
                        msg.deflate = Some(d.packet(json, prev));
                        *compress_time += clock().saturating_duration_since(start);
                    }
                    let p = previous.get_or_insert_with(|| (Vec::new(), 0));
                    p.0.clear();
                    p.0.extend_from_slice(json);
                    p.1 = frame.seq;
                }
            };
            let msg = if keyframe {
                let state = encode_key(&mut self.json, &active.shared, frame, &mut compress);
                let msg = Arc::clone(&state.msg);
                *active.shared.current_key.lock().expect("poisoned") = Some(Arc::clone(&msg));
                active.key = Some(state);
                msg
            } else {
                let base = active.key.as_ref().expect("a keyframe before any delta");
                let mut msg = encode_delta(&mut self.json, &active.shared, base, frame);
                compress(&self.json, &mut msg);
                Arc::new(msg)
            };
            active
                .shared
                .last_bytes
                .store(msg.line.len() as u64 - 1, Ordering::Relaxed);
            active.shared.built.fetch_add(1, Ordering::Relaxed);
            out[active.shared.slot] = Some(msg);
        }
        out.into_boxed_slice()
    }
}

fn head(json: &mut Vec<u8>, op: &str, profile: u32, frame: &Frame<'_>, base: Option<u64>) {
    json.clear();
    json.extend_from_slice(b"{\"op\":\"");
    json.extend_from_slice(op.as_bytes());
    json.extend_from_slice(b"\",\"p\":");
    json.extend_from_slice(itoa::Buffer::new().format(profile).as_bytes());
    json.extend_from_slice(b",\"seq\":");
    json.extend_from_slice(itoa::Buffer::new().format(frame.seq).as_bytes());
    if let Some(base) = base {
        json.extend_from_slice(b",\"base\":");
        json.extend_from_slice(itoa::Buffer::new().format(base).as_bytes());
    }
    json.extend_from_slice(b",\"t\":");
    json.extend_from_slice(itoa::Buffer::new().format(frame.timestamp_us).as_bytes());
    json.extend_from_slice(if frame.valid {
        b",\"valid\":1"
    } else {
        b",\"valid\":0"
    });
}

fn value<'a>(frame: &Frame<'a>, var: u16) -> &'a [u8] {
    let (start, end) = frame.spans[var as usize];
    &frame.payload[start as usize..end as usize]
}

fn encode_key(
    json: &mut Vec<u8>,
    shared: &ProfileShared,
    frame: &Frame<'_>,
    compress: &mut dyn FnMut(&[u8], &mut ProfileMsg),
) -> KeyState {
    head(json, "key", shared.id, frame, None);
    json.extend_from_slice(b",\"v\":[");
    let mut values = Vec::with_capacity(shared.key.vars.len() * 8);
    let mut ends = Vec::with_capacity(shared.key.vars.len());
    for (i, &var) in shared.key.vars.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        let v = value(frame, var);
        json.extend_from_slice(v);
        values.extend_from_slice(v);
        ends.push(values.len() as u32);
    }
    json.extend_from_slice(b"]}");
    let mut msg = ProfileMsg::frame(shared.id, frame.seq, frame.built, MsgKind::Key, json);
    compress(json, &mut msg);
    let msg = Arc::new(msg);
    KeyState {
        msg,
        values,
        ends,
        at: frame.built,
    }
}

fn encode_delta(
    json: &mut Vec<u8>,
    shared: &ProfileShared,
    base: &KeyState,
    frame: &Frame<'_>,
) -> ProfileMsg {
    head(json, "delta", shared.id, frame, Some(base.msg.seq));
    json.extend_from_slice(b",\"c\":[");
    let mut first = true;
    let mut start = 0usize;
    for (i, &var) in shared.key.vars.iter().enumerate() {
        let end = base.ends[i] as usize;
        let was = &base.values[start..end];
        start = end;
        let now = value(frame, var);
        if now != was {
            if !first {
                json.push(b',');
            }
            first = false;
            json.push(b'[');
            json.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            json.push(b',');
            json.extend_from_slice(now);
            json.push(b']');
        }
    }
    json.extend_from_slice(b"]}");
    ProfileMsg::frame(
        shared.id,
        frame.seq,
        frame.built,
        MsgKind::Delta {
            base: Arc::clone(&base.msg),
        },
        json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileKey;
    use crate::telemetry::{FrameEncoder, FrameHeader, Variables, VARIABLE_COUNT};

    fn json(msg: &ProfileMsg) -> serde_json::Value {
        serde_json::from_slice(&msg.line).unwrap()
    }

    struct Tick {
        enc: FrameEncoder,
        vars: Variables,
        t0: Instant,
    }

    impl Tick {
        fn new() -> Self {
            Self {
                enc: FrameEncoder::new(),
                vars: Variables::new(),
                t0: Instant::now(),
            }
        }

        fn run(&mut self, b: &mut ProfileBuilder, seq: u64) -> ProfileFrames {
            let header = FrameHeader {
                timestamp_us: 1000 + seq,
                data_valid: true,
                update_counter: seq,
                broadcast_rate_hz: 50.0,
            };
            let payload = self.enc.encode(&header, &self.vars).to_vec();
            b.build(
                false,
                &Frame {
                    seq,
                    timestamp_us: header.timestamp_us,
                    valid: true,
                    built: self.t0 + Duration::from_millis(20 * seq),
                    payload: &payload,
                    spans: self.enc.value_spans(),
                },
            )
        }
    }

    #[test]
    fn deltas_against_the_keyframe_share_one_packet_per_profile() {
        use crate::telemetry::var;
        let table = Profiles::new(8);
        let alt = var::AIRCRAFT_ALTITUDE.0 as u16;
        let lat = var::AIRCRAFT_LATITUDE.0 as u16;
        let name = var::AIRCRAFT_NAME.0 as u16;
        let p = table
            .acquire(ProfileKey::new(vec![name, lat, alt], 2, Mode::Delta))
            .unwrap();
        let mut b = ProfileBuilder::new(
            Arc::clone(&table),
            50.0,
            crate::ws::deflate::Mode::Off,
            Instant::now,
        );
        let mut t = Tick::new();
        t.vars.set_text(var::AIRCRAFT_NAME, "C172");
        let out = t.run(&mut b, 1);
        assert!(out.iter().all(Option::is_none), "1 % 2 != 0: not due");
        let out = t.run(&mut b, 2);
        let key = out[p.shared().slot].clone().unwrap();
        let v = json(&key);
        assert_eq!(v["op"], "key");
        assert_eq!(v["seq"], 2);
        // Wire order: Altitude (1) before Latitude, Name last.
        assert_eq!(v["v"], serde_json::json!([0.0, 0.0, "C172"]));
        assert!(Arc::ptr_eq(&p.shared().current_key().unwrap(), &key));

        t.vars.set(var::AIRCRAFT_ALTITUDE, 312.5);
        let out = t.run(&mut b, 4);
        let delta = out[p.shared().slot].clone().unwrap();
        let v = json(&delta);
        assert_eq!(
            (v["op"].as_str(), v["base"].as_u64()),
            (Some("delta"), Some(2))
        );
        assert_eq!(v["c"], serde_json::json!([[0, 312.5]]));
        // Against the keyframe, not the previous delta: unchanged values keep showing.
        let v = json(t.run(&mut b, 6)[p.shared().slot].as_ref().unwrap());
        assert_eq!(v["c"], serde_json::json!([[0, 312.5]]));
        t.vars.set(var::AIRCRAFT_ALTITUDE, 0.0);
        let v = json(t.run(&mut b, 8)[p.shared().slot].as_ref().unwrap());
        assert_eq!(v["c"], serde_json::json!([]), "empty deltas still go out");
        // A keyframe at least once a second (50 frames at 50 Hz).
        let v = json(t.run(&mut b, 52)[p.shared().slot].as_ref().unwrap());
        assert_eq!(v["op"], "key");
    }

    #[test]
    fn a_full_profile_sends_keyframes_only_and_gone_profiles_stop() {
        let table = Profiles::new(8);
        let all: Vec<u16> = (0..VARIABLE_COUNT as u16).collect();
        let p = table.acquire(ProfileKey::new(all, 1, Mode::Full)).unwrap();
        let mut b = ProfileBuilder::new(
            Arc::clone(&table),
            50.0,
            crate::ws::deflate::Mode::Off,
            Instant::now,
        );
        let mut t = Tick::new();
        for seq in 1..4 {
            let out = t.run(&mut b, seq);
            let v = json(out[0].as_ref().unwrap());
            assert_eq!(v["op"], "key");
            assert_eq!(v["v"].as_array().unwrap().len(), VARIABLE_COUNT);
        }
        drop(p);
        assert!(t.run(&mut b, 5).is_empty());
        assert!(b.is_empty());
    }
}
