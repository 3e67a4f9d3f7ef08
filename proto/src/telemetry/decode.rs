//! Reading frames that another bridge wrote (upstream's DLL, another aerobridge, a recording)
//! back into [`Variables`]. Tolerates what upstream really sends: `NaN`/`Infinity` tokens (turned
//! into `null` before parsing, then into non-finite values that our encoder writes as `null`),
//! duplicate keys (the last one wins), strings where numbers are expected (ignored and counted),
//! keys we do not know (ignored and counted). No I/O.

use super::table::{ValueKind, VarId, VARIABLES};
use super::Variables;
use simd_json::prelude::*;
use std::collections::HashMap;

/// What a frame said besides its variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// The frame's own `timestamp` (upstream: boot-relative µs; aerobridge: UNIX µs).
    pub timestamp_us: Option<u64>,
    /// The frame's `update_counter`.
    pub update_counter: Option<u64>,
    /// Its `data_valid` (absent counts as valid).
    pub data_valid: bool,
    /// Keys in `variables` this build does not know.
    pub unknown_keys: u32,
    /// Values of the wrong type for their key.
    pub mismatched: u32,
}

/// Why a line was not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, even after sanitizing.
    Json(String),
    /// JSON, but not an object with a `variables` object.
    NotAFrame,
    /// A frame without a usable `update_counter` (missing, or beyond 2^53), where one is needed
    /// (a NATS feed).
    Counter(Option<u64>),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "not JSON: {e}"),
            DecodeError::NotAFrame => {
                f.write_str("not a telemetry frame (no \"variables\" object)")
            }
            DecodeError::Counter(None) => f.write_str("a frame without an update_counter"),
            DecodeError::Counter(Some(c)) => write!(f, "update_counter {c} is beyond 2^53"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A JSON parse error in words a user can act on, with where it happened: never the parser's
/// internals. `expected` says what should have been there (an example).
pub fn describe_json_error(e: &simd_json::Error, expected: &str) -> String {
    use simd_json::ErrorType;
    let what = match (e.error(), e.character()) {
        (_, Some('N' | 'I')) => "NaN and Infinity are not JSON numbers; send a finite number",
        (ErrorType::Eof, _) => "the text ends before the JSON value does",
        (ErrorType::TrailingData, _) => "there is more after the JSON value",
        (ErrorType::InvalidNumber, _) => "that number is not one a double can hold",
        _ => expected,
    };
    match e.character() {
        Some(c) if !c.is_control() => format!("{what} (at byte {}, {c:?})", e.index()),
        _ => format!("{what} (at byte {})", e.index()),
    }
}

/// Decodes frames; holds the name index and a reused scratch buffer.
pub struct FrameDecoder {
    index: HashMap<&'static str, VarId>,
    scratch: Vec<u8>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// Builds the name index.
    pub fn new() -> Self {
        Self {
            index: VARIABLES
                .iter()
                .enumerate()
                .map(|(i, v)| (v.name, VarId(i)))
                .collect(),
            scratch: Vec::new(),
        }
    }

    /// Decodes one frame (a line, with or without its `\n`) into `vars`. Keys the frame does not
    /// carry keep their previous values.
    pub fn decode(&mut self, line: &[u8], vars: &mut Variables) -> Result<FrameInfo, DecodeError> {
        sanitize_into(line, &mut self.scratch);
        let value = simd_json::to_borrowed_value(&mut self.scratch).map_err(|e| {
            DecodeError::Json(describe_json_error(
                &e,
                "expected a telemetry frame: one JSON object per line",
            ))
        })?;
        let top = value.as_object().ok_or(DecodeError::NotAFrame)?;
        let variables = top
            .get("variables")
            .and_then(|v| v.as_object())
            .ok_or(DecodeError::NotAFrame)?;
        let mut info = FrameInfo {
            timestamp_us: top
                .get("timestamp")
                .and_then(|v| v.cast_f64())
                .filter(|t| *t >= 0.0)
                .map(|t| t as u64),
            update_counter: top.get("update_counter").and_then(|v| v.as_u64()),
            data_valid: top
                .get("data_valid")
                .and_then(|v| v.cast_f64())
                .is_none_or(|d| d != 0.0),
            ..FrameInfo::default()
        };
        for (key, v) in variables.iter() {
            let Some(&id) = self.index.get(key.as_ref()) else {
                info.unknown_keys += 1;
                continue;
            };
            match VARIABLES[id.0].kind {
                ValueKind::Number if v.is_null() => vars.set(id, f64::NAN),
                ValueKind::Number => match v.cast_f64() {
                    Some(x) => vars.set(id, x),
                    None => info.mismatched += 1,
                },
                ValueKind::Text => match v.as_str() {
                    Some(s) => vars.set_text(id, s),
                    None => info.mismatched += 1,
                },
            }
        }
        Ok(info)
    }
}

/// Copies `line` into `out`, replacing the bare tokens `NaN`, `Infinity` and `-Infinity` (which
/// upstream's printf can produce, and which JSON does not allow) with `null`. Strings are left
/// alone.
pub fn sanitize_into(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let rest = &line[i..];
        let token = [&b"-Infinity"[..], b"Infinity", b"NaN", b"-NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.extend_from_slice(b"null");
            i += t.len();
            continue;
        }
        if b == b'"' {
            in_string = true;
        }
        out.push(b);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{var, FrameEncoder, FrameHeader};

    #[test]
    fn round_trips_our_own_frames() {
        let mut src = Variables::new();
        src.set(var::AIRCRAFT_LATITUDE, 0.656_457_493_213_234_3);
        src.set_text(var::AIRCRAFT_NAME, "Baron \"58\"");
        let header = FrameHeader {
            timestamp_us: 7,
            data_valid: true,
            update_counter: 9,
            broadcast_rate_hz: 50.0,
        };
        let frame = FrameEncoder::new().encode(&header, &src).to_vec();
        let mut out = Variables::new();
        let info = FrameDecoder::new().decode(&frame, &mut out).unwrap();
        assert_eq!(
            (info.timestamp_us, info.update_counter, info.data_valid),
            (Some(7), Some(9), true)
        );
        assert_eq!(out.number(var::AIRCRAFT_LATITUDE), 0.656_457_493_213_234_3);
        assert_eq!(out.text(var::AIRCRAFT_NAME), "Baron \"58\"");
        assert_eq!((info.unknown_keys, info.mismatched), (0, 0));
    }

    #[test]
    fn tolerates_what_upstream_sends() {
        let line = br#"{"schema":"aerofly-bridge-telemetry","timestamp":123456789,"data_valid":1,"variables":{"Aircraft.Altitude":NaN,"Aircraft.Pitch":-Infinity,"Aircraft.Bank":0.5,"Aircraft.Bank":0.25,"Aircraft.Name":"NaN Infinity","Aircraft.Height":"high","Some.New.Key":1}}"#;
        let mut out = Variables::new();
        let info = FrameDecoder::new().decode(line, &mut out).unwrap();
        assert!(out.number(var::AIRCRAFT_ALTITUDE).is_nan());
        assert!(out.number(var::AIRCRAFT_PITCH).is_nan());
        assert_eq!(
            out.number(var::AIRCRAFT_BANK),
            0.25,
            "duplicate keys: the last wins"
        );
        assert_eq!(
            out.text(var::AIRCRAFT_NAME),
            "NaN Infinity",
            "strings untouched"
        );
        assert_eq!((info.unknown_keys, info.mismatched), (1, 1));
        assert_eq!(info.timestamp_us, Some(123_456_789));
    }

    #[test]
    fn rejects_non_frames() {
        let mut out = Variables::new();
        let mut d = FrameDecoder::new();
        assert!(matches!(
            d.decode(b"{\"variables\":", &mut out),
            Err(DecodeError::Json(_))
        ));
        assert_eq!(d.decode(b"[1,2]", &mut out), Err(DecodeError::NotAFrame));
        assert_eq!(
            d.decode(br#"{"ok":true}"#, &mut out),
            Err(DecodeError::NotAFrame)
        );
    }
}
