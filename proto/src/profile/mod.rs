//! Session protocol v2's profiles: what a subscription asks for, canonicalised, so that every
//! client asking for the same thing shares the same pre-built bytes.
//!
//! A subscription (`vars`, `hz`, `mode`) becomes a [`ProfileKey`]: the variable set in wire
//! order, `every` (send every n-th frame, on frames whose `update_counter % every == 0`) and the
//! mode. The [`registry`] gives each distinct key one [`ProfileRef`]-counted entry server-wide;
//! the tick's [`build::ProfileBuilder`] encodes one keyframe or delta per due profile per tick and
//! frames it once per transport ([`ProfileMsg`]). Per-tick work grows with the number of live
//! profiles, never with clients. No I/O here: the registry is a mutex-guarded map, the builder a
//! pure function of the frame.
//!
//! Deltas are relative to the profile's last keyframe (not to the previous delta), so a client
//! that skipped messages (latest wins) still reconstructs the state from any one delta once it
//! holds the base keyframe; each delta carries its base keyframe's packet, which the client's
//! queue sends first when the client lacks it ([`crate::queue`]).

pub mod build;
pub mod registry;

pub use build::ProfileBuilder;
pub use registry::{ProfileRef, Profiles, TooManyProfiles};

use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// How a profile's messages carry values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every message is a keyframe with every subscribed value.
    Full,
    /// Keyframes (at least once a second) and, between them, deltas against the last keyframe.
    Delta,
}

impl Mode {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Delta => "delta",
        }
    }
}

/// A canonical subscription: equal keys are one profile.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    /// Variable indices ([`crate::telemetry::VarId`]), ascending (wire order), no duplicates.
    pub vars: Box<[u16]>,
    /// Send on frames whose `update_counter % every == 0`.
    pub every: u32,
    /// Full or delta.
    pub mode: Mode,
}

impl ProfileKey {
    /// Canonicalises `vars` (sorted into wire order, duplicates removed).
    pub fn new(mut vars: Vec<u16>, every: u32, mode: Mode) -> Self {
        vars.sort_unstable();
        vars.dedup();
        Self {
            vars: vars.into_boxed_slice(),
            every: every.max(1),
            mode,
        }
    }
}

/// `every` for a wanted rate: `max(1, round(rate_hz / hz))` (the contract's rule).
pub fn every_for(rate_hz: f64, hz: Option<f64>) -> u32 {
    match hz {
        Some(hz) if hz > 0.0 && hz.is_finite() => (rate_hz / hz).round().clamp(1.0, 1e6) as u32,
        _ => 1,
    }
}

/// Keyframe or delta.
#[derive(Debug)]
pub enum MsgKind {
    /// Every subscribed value.
    Key,
    /// The values that differ from keyframe `base` (whose packet is here, for clients that
    /// lack it).
    Delta {
        /// The base keyframe.
        base: Arc<ProfileMsg>,
    },
}

/// One profile's message for one tick, framed once per transport; clients share it by refcount.
#[derive(Debug)]
pub struct ProfileMsg {
    /// The profile's public id (`p`).
    pub profile: u32,
    /// The frame's `update_counter`.
    pub seq: u64,
    /// When the tick was built (lag accounting).
    pub built: Instant,
    /// Keyframe or delta.
    pub kind: MsgKind,
    /// WebSocket text frame.
    pub ws: Bytes,
    /// The JSON and `\n` (TCP, `framing: lines`).
    pub line: Bytes,
    /// 4-byte big-endian length, then the JSON (TCP, `framing: length`).
    pub length: Bytes,
    /// permessage-deflate variants of the WebSocket frame (compressed once, for everyone).
    pub deflate: Option<crate::ws::deflate::Compressed>,
}

impl PartialEq for ProfileMsg {
    /// The same message of the same profile (one allocation per message, so this is identity in
    /// practice).
    fn eq(&self, other: &Self) -> bool {
        self.profile == other.profile && self.seq == other.seq && self.line == other.line
    }
}

impl ProfileMsg {
    /// Frames `json` (no trailing newline) for every transport: two allocations, whatever the
    /// number of clients.
    pub fn frame(profile: u32, seq: u64, built: Instant, kind: MsgKind, json: &[u8]) -> Self {
        let (ws, line, length) = frame_all(json);
        Self {
            profile,
            seq,
            built,
            kind,
            ws,
            line,
            length,
            deflate: None,
        }
    }

    /// The base keyframe's seq for a delta, or its own seq for a keyframe.
    pub fn key_seq(&self) -> u64 {
        match &self.kind {
            MsgKind::Key => self.seq,
            MsgKind::Delta { base } => base.seq,
        }
    }
}

/// `json` framed three ways: (WebSocket text frame, line, length-prefixed). The WebSocket frame
/// and the line share one buffer `[ws header | json | \n]`.
pub fn frame_all(json: &[u8]) -> (Bytes, Bytes, Bytes) {
    use crate::ws::frame::{encode_header_right_aligned, OpCode, MAX_SERVER_HEADER};
    let mut header = [0u8; MAX_SERVER_HEADER];
    let hlen = encode_header_right_aligned(OpCode::Text, json.len(), &mut header);
    let mut buf = Vec::with_capacity(hlen + json.len() + 1);
    buf.extend_from_slice(&header[MAX_SERVER_HEADER - hlen..]);
    buf.extend_from_slice(json);
    buf.push(b'\n');
    let all = Bytes::from(buf);
    let ws = all.slice(..hlen + json.len());
    let line = all.slice(hlen..);
    let mut length = Vec::with_capacity(4 + json.len());
    length.extend_from_slice(&(json.len() as u32).to_be_bytes());
    length.extend_from_slice(json);
    (ws, line, Bytes::from(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_follows_the_contract() {
        assert_eq!(every_for(50.0, Some(10.0)), 5);
        assert_eq!(every_for(50.0, Some(50.0)), 1);
        assert_eq!(every_for(50.0, Some(200.0)), 1);
        assert_eq!(every_for(50.0, Some(0.3)), 167);
        assert_eq!(every_for(50.0, None), 1);
        assert_eq!(every_for(60.0, Some(25.0)), 2);
    }

    #[test]
    fn keys_are_canonical() {
        let a = ProfileKey::new(vec![5, 1, 5, 3], 2, Mode::Delta);
        let b = ProfileKey::new(vec![1, 3, 5], 2, Mode::Delta);
        assert_eq!(a, b);
        assert_eq!(&*a.vars, &[1, 3, 5]);
    }

    #[test]
    fn one_json_three_framings() {
        let (ws, line, length) = frame_all(br#"{"op":"key"}"#);
        assert_eq!(&line[..], b"{\"op\":\"key\"}\n");
        assert_eq!(&length[..4], &12u32.to_be_bytes());
        assert_eq!(&length[4..], br#"{"op":"key"}"#);
        let h = crate::ws::frame::decode_header(&ws).unwrap();
        assert_eq!(&ws[h.header_len..], br#"{"op":"key"}"#);
        assert_eq!(ws[h.header_len..].as_ptr(), line.as_ptr(), "one buffer");
    }
}
