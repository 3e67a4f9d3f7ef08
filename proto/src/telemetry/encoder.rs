//! Upstream's frame, byte for byte in shape: no whitespace, fixed top-level order, one `\n` at
//! the end. Numbers are the shortest decimal that round-trips (ryu), so radians keep every bit
//! instead of upstream's six decimals; a non-finite number is written as `null`, never as a
//! `NaN`/`Infinity` token that JSON parsers reject.

use super::{ValueKind, Variables, VARIABLES};

/// The top-level fields that change per frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameHeader {
    /// Microseconds since the UNIX epoch when the frame was built. (Upstream used a boot-relative
    /// timer; ours is wall-clock so a client on the same clock can measure latency.)
    pub timestamp_us: u64,
    /// 1 when the source's data is live, 0 while it is stale.
    pub data_valid: bool,
    /// Rises by exactly 1 per broadcast frame.
    pub update_counter: u64,
    /// The configured broadcast rate.
    pub broadcast_rate_hz: f64,
}

/// Encodes frames into one reused buffer. Key prefixes (`,"Name":`) are rendered once at
/// construction, so a frame costs one pass over the values and no allocation once the buffer
/// has grown to frame size.
pub struct FrameEncoder {
    buf: Vec<u8>,
    keys: Vec<u8>,
    key_ends: Vec<u32>,
    spans: Vec<(u32, u32)>,
    non_finite: u64,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    /// Renders the key prefixes of every variable.
    pub fn new() -> Self {
        let mut keys = Vec::with_capacity(VARIABLES.len() * 32);
        let mut key_ends = Vec::with_capacity(VARIABLES.len());
        for (i, v) in VARIABLES.iter().enumerate() {
            if i > 0 {
                keys.push(b',');
            }
            write_json_string(&mut keys, v.name);
            keys.push(b':');
            key_ends.push(keys.len() as u32);
        }
        Self {
            buf: Vec::with_capacity(16 * 1024),
            keys,
            key_ends,
            spans: vec![(0, 0); VARIABLES.len()],
            non_finite: 0,
        }
    }

    /// Numbers that were not finite and went out as `null`, since construction.
    pub fn non_finite_count(&self) -> u64 {
        self.non_finite
    }

    /// Where each variable's encoded value sits in the last frame [`encode`](Self::encode)
    /// returned (`start..end`, indexed by [`VarId`](super::VarId)). v2 profiles copy these bytes
    /// instead of encoding the numbers again, so their values are the v1 frame's, byte for byte.
    pub fn value_spans(&self) -> &[(u32, u32)] {
        &self.spans
    }

    /// Encodes one frame, `\n` included, and returns it. The slice stays valid until the next call.
    pub fn encode(&mut self, header: &FrameHeader, vars: &Variables) -> &[u8] {
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(
            br#"{"schema":"aerofly-bridge-telemetry","schema_version":1,"timestamp":"#,
        );
        buf.extend_from_slice(itoa::Buffer::new().format(header.timestamp_us).as_bytes());
        buf.extend_from_slice(br#","timestamp_unit":"microseconds","data_valid":"#);
        buf.push(if header.data_valid { b'1' } else { b'0' });
        buf.extend_from_slice(br#","update_counter":"#);
        buf.extend_from_slice(itoa::Buffer::new().format(header.update_counter).as_bytes());
        buf.extend_from_slice(br#","broadcast_rate_hz":"#);
        self.non_finite += write_number(buf, header.broadcast_rate_hz) as u64;
        buf.extend_from_slice(br#","variables":{"#);
        let mut start = 0usize;
        for (i, v) in VARIABLES.iter().enumerate() {
            let end = self.key_ends[i] as usize;
            buf.extend_from_slice(&self.keys[start..end]);
            start = end;
            let id = super::VarId(i);
            let value_start = buf.len() as u32;
            match v.kind {
                ValueKind::Number => self.non_finite += write_number(buf, vars.number(id)) as u64,
                ValueKind::Text => write_json_string(buf, vars.text(id)),
            }
            self.spans[i] = (value_start, buf.len() as u32);
        }
        buf.extend_from_slice(b"}}\n");
        &self.buf
    }
}

/// Writes a JSON number; returns true when the value was not finite and `null` was written.
#[inline]
pub fn write_number(buf: &mut Vec<u8>, value: f64) -> bool {
    if value.is_finite() {
        buf.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
        false
    } else {
        buf.extend_from_slice(b"null");
        true
    }
}

/// Writes `s` as a JSON string literal (quotes, backslash and control characters escaped).
pub fn write_json_string(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            buf.extend_from_slice(escape);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::var;

    fn header() -> FrameHeader {
        FrameHeader {
            timestamp_us: 1_700_000_000_123_456,
            data_valid: true,
            update_counter: 42,
            broadcast_rate_hz: 50.0,
        }
    }

    #[test]
    fn frame_shape_matches_upstream() {
        let mut vars = Variables::new();
        vars.set(var::AIRCRAFT_LATITUDE, 0.6564574932132343);
        vars.set(var::AIRCRAFT_ALTITUDE, f64::NAN);
        vars.set_text(var::AIRCRAFT_NAME, "Baron \"58\"\\\n\u{1}é");
        let mut enc = FrameEncoder::new();
        let frame = enc.encode(&header(), &vars).to_vec();
        assert_eq!(enc.non_finite_count(), 1);
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text.starts_with(r#"{"schema":"aerofly-bridge-telemetry","schema_version":1,"timestamp":1700000000123456,"timestamp_unit":"microseconds","data_valid":1,"update_counter":42,"broadcast_rate_hz":50.0,"variables":{"Aircraft.UniversalTime":0.0,"Aircraft.Altitude":null,"#));
        assert!(text.ends_with("}}\n"));
        assert_eq!(text.matches('\n').count(), 1);
        // No whitespace outside strings: blank out string contents, then look for any.
        let mut outside = String::new();
        let (mut in_string, mut escaped) = (false, false);
        for c in text.trim_end_matches('\n').chars() {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_string = false,
                (true, false, _) => {}
                (false, _, '"') => in_string = true,
                (false, _, c) => outside.push(c),
            }
        }
        assert!(!outside.is_empty());
        assert!(
            !outside.chars().any(char::is_whitespace),
            "whitespace outside strings: {outside}"
        );
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let obj = v["variables"].as_object().unwrap();
        assert_eq!(obj.len(), VARIABLES.len());
        assert_eq!(
            obj["Aircraft.Latitude"].as_f64().unwrap(),
            0.6564574932132343
        );
        assert_eq!(
            obj["Aircraft.Name"].as_str().unwrap(),
            "Baron \"58\"\\\n\u{1}é"
        );
    }

    #[test]
    fn numbers_round_trip_exactly() {
        for x in [
            0.1,
            -0.0,
            1e21,
            1e-7,
            123456789.0,
            std::f64::consts::PI,
            5e-324,
            f64::MAX,
        ] {
            let mut buf = Vec::new();
            assert!(!write_number(&mut buf, x));
            let back: f64 = std::str::from_utf8(&buf).unwrap().parse().unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x}");
            let json: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            assert!(json.is_number());
        }
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut buf = Vec::new();
            assert!(write_number(&mut buf, x));
            assert_eq!(buf, b"null");
        }
    }

    #[test]
    fn reuses_its_buffer() {
        let vars = Variables::new();
        let mut enc = FrameEncoder::new();
        let cap = {
            enc.encode(&header(), &vars);
            enc.buf.capacity()
        };
        let ptr = enc.buf.as_ptr();
        enc.encode(&header(), &vars);
        assert_eq!(enc.buf.capacity(), cap);
        assert_eq!(enc.buf.as_ptr(), ptr);
    }
}
