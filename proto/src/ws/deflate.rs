//! permessage-deflate (RFC 7692) without I/O: negotiation, the server's compressor, and the
//! inflater for client messages.
//!
//! Telemetry is compressed once per packet, for everyone (see `manual`, *Shared
//! permessage-deflate*): a **standalone** variant (a fresh raw-deflate stream) and, in `shared`
//! mode, a **dictionary** variant primed with the previous packet of the same stream. A client's
//! inflate window holds exactly the compressed messages it inflated, so the dictionary variant of
//! packet N is valid for a client whose last compressed message was packet N−1 of that stream;
//! every other client gets the standalone one. Either way the server keeps no per-client deflate
//! state, and with `client_no_context_takeover` always answered, no per-client inflate state
//! either: one inflater per thread decodes every client message.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

/// `--ws-compression` (its names are the lower-case variant names: `off`, `standalone`, `shared`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    strum::EnumString,
    strum::Display,
    strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum Mode {
    /// No permessage-deflate: offers are declined.
    Off,
    /// Each packet compressed on its own (`server_no_context_takeover`).
    Standalone,
    /// Each packet also compressed with the previous one of its stream as dictionary, sent to
    /// the clients whose window holds it (context-takeover ratios, compressed once for all).
    #[default]
    Shared,
}

/// What was agreed with one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The server resets its context per message (standalone variants only).
    pub server_no_context_takeover: bool,
    /// The server's window, as agreed (15 unless the client asked for less, echo mode only).
    pub server_window_bits: u8,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` response value.
    pub fn response(&self) -> String {
        let mut r = String::from("permessage-deflate; client_no_context_takeover");
        if self.server_no_context_takeover {
            r.push_str("; server_no_context_takeover");
        }
        if self.server_window_bits < 15 {
            r.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        r
    }

    /// Whether dictionary variants may be sent to this client.
    pub fn shared(&self) -> bool {
        !self.server_no_context_takeover
    }
}

/// Picks the first `permessage-deflate` offer the server can honour (RFC 7692 §5). `values` are
/// the `Sec-WebSocket-Extensions` header values in order. `small_windows`: whether a
/// `server_max_window_bits` below 15 can be honoured (echo mode, where every message is
/// compressed on its own; telemetry is compressed once for all with a 15-bit window).
pub fn negotiate(values: &[String], mode: Mode, small_windows: bool) -> Option<Agreed> {
    if mode == Mode::Off {
        return None;
    }
    'offers: for offer in values.iter().flat_map(|v| split_outside_quotes(v, ',')) {
        let mut parts = split_outside_quotes(offer, ';').into_iter().map(str::trim);
        if !parts
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
        {
            continue;
        }
        let mut agreed = Agreed {
            server_no_context_takeover: mode == Mode::Standalone,
            server_window_bits: 15,
        };
        let mut seen: Vec<String> = Vec::new();
        for param in parts {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                continue 'offers; // a parameter twice: invalid offer
            }
            seen.push(name.clone());
            match (name.as_str(), value) {
                ("server_no_context_takeover", None) => agreed.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => {}
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(v)) if window_bits(v).is_some() => {}
                ("server_max_window_bits", Some(v)) => match window_bits(v) {
                    Some(15) => {}
                    // zlib cannot deflate with a 256-byte window (it silently uses 512).
                    Some(bits) if small_windows && bits >= 9 => {
                        agreed.server_window_bits = bits;
                        // A smaller window than the shared variants use: standalone only.
                        agreed.server_no_context_takeover = true;
                    }
                    _ => continue 'offers,
                },
                _ => continue 'offers, // unknown or malformed parameter: decline this offer
            }
        }
        return Some(agreed);
    }
    None
}

fn window_bits(v: &str) -> Option<u8> {
    match v.parse::<u8>() {
        Ok(b @ 8..=15) if !v.starts_with('0') => Some(b),
        _ => None,
    }
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A packet's compressed forms, each a whole WebSocket text frame with RSV1 set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// Decodable in any window. `None` when compressing did not make it smaller.
    pub standalone: Option<Bytes>,
    /// Decodable only right after packet `base` of the same stream (shared mode).
    pub dict: Option<Bytes>,
    /// The seq of the packet the dictionary variant refers to.
    pub base: u64,
}

/// Compression levels (zlib-rs), measured on the built-in source's frames (11.4 KB; see `manual`,
/// *Shared permessage-deflate*): the standalone variant goes to few clients (those that just
/// joined or skipped a frame), so it is fast (level 1: 3.9 KB in 13 µs); the dictionary variant
/// goes to nearly everyone, so it is small (level 6: 0.37 KB in 22 µs, against 1.1 KB at level 1).
pub const LEVEL_STANDALONE: u32 = 1;
/// See [`LEVEL_STANDALONE`].
pub const LEVEL_DICTIONARY: u32 = 6;

/// The server's compressor: raw deflate, reused across packets (one per tick thread).
pub struct Deflater {
    standalone: Compress,
    dict: Compress,
    out: Vec<u8>,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new(15)
    }
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Deflater {
    /// A compressor with a `window_bits` window (9..=15) at [`LEVEL_STANDALONE`] and
    /// [`LEVEL_DICTIONARY`].
    pub fn new(window_bits: u8) -> Self {
        Self::with_levels(LEVEL_STANDALONE, LEVEL_DICTIONARY, window_bits)
    }

    /// A compressor with the given levels (0..=9) for the two variants and a `window_bits`
    /// window (9..=15).
    pub fn with_levels(standalone: u32, dictionary: u32, window_bits: u8) -> Self {
        Self {
            standalone: Compress::new_with_window_bits(
                Compression::new(standalone),
                false,
                window_bits,
            ),
            dict: Compress::new_with_window_bits(Compression::new(dictionary), false, window_bits),
            out: Vec::with_capacity(16 * 1024),
        }
    }

    /// The permessage-deflate payload of `payload` (sync-flushed, trailing `00 00 ff ff`
    /// removed), compressed on its own or, with `dictionary`, primed with it.
    pub fn compress(&mut self, payload: &[u8], dictionary: Option<&[u8]>) -> &[u8] {
        let c = if dictionary.is_some() {
            &mut self.dict
        } else {
            &mut self.standalone
        };
        c.reset();
        if let Some(d) = dictionary {
            // The last 32 KiB is all a window can hold.
            let d = &d[d.len().saturating_sub(32 * 1024)..];
            c.set_dictionary(d)
                .expect("a fresh raw deflate stream takes a dictionary");
        }
        self.out.clear();
        self.out.reserve(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before_in = c.total_in();
            let status = c
                .compress_vec(input, &mut self.out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer cannot fail");
            input = &input[(c.total_in() - before_in) as usize..];
            let full = self.out.len() == self.out.capacity();
            if input.is_empty() && !full {
                break;
            }
            if status == Status::BufError || full {
                self.out.reserve(self.out.capacity().max(4096));
            }
        }
        if self.out.ends_with(&[0, 0, 0xff, 0xff]) {
            self.out.truncate(self.out.len() - 4);
        }
        &self.out
    }

    /// Both variants of a text packet whose WebSocket payload is `payload`; `previous` is the
    /// payload of the stream's previous packet (seq `base`), if any and in shared mode.
    pub fn packet(&mut self, payload: &[u8], previous: Option<(&[u8], u64)>) -> Compressed {
        let standalone = {
            let z = self.compress(payload, None);
            (z.len() < payload.len()).then(|| frame(z))
        };
        let (dict, base) = match previous {
            Some((prev, base)) => {
                let z = self.compress(payload, Some(prev));
                ((z.len() < payload.len()).then(|| frame(z)), base)
            }
            None => (None, 0),
        };
        Compressed {
            standalone,
            dict,
            base,
        }
    }
}

/// A text frame with RSV1 set around a compressed payload.
pub fn frame(compressed: &[u8]) -> Bytes {
    use super::frame::{encode_header_right_aligned, OpCode, MAX_SERVER_HEADER};
    let mut header = [0u8; MAX_SERVER_HEADER];
    let hlen = encode_header_right_aligned(OpCode::Text, compressed.len(), &mut header);
    let mut v = Vec::with_capacity(hlen + compressed.len());
    v.extend_from_slice(&header[MAX_SERVER_HEADER - hlen..]);
    v[0] |= 0x40; // RSV1: compressed
    v.extend_from_slice(compressed);
    Bytes::from(v)
}

thread_local! {
    /// One inflater per thread: clients never take context over (`client_no_context_takeover`),
    /// so no connection keeps inflate state between messages.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new_with_window_bits(false, 15));
    /// Echo mode compresses each echoed message on its own, per agreed window size.
    static ECHO: RefCell<Vec<(u8, Deflater)>> = const { RefCell::new(Vec::new()) };
}

/// Why a compressed client message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (a decompression bomb, or just too big).
    TooBig,
    /// Not a valid deflate stream.
    Corrupt,
}

/// Inflates one client message (its payload without the `00 00 ff ff` tail), refusing to produce
/// more than `limit` bytes: memory stays bounded whatever the input.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut data = Vec::with_capacity(compressed.len() + 4);
    data.extend_from_slice(compressed);
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    INFLATER.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(false);
        let mut out: Vec<u8> = Vec::with_capacity((compressed.len() * 4).clamp(64, limit + 1));
        let mut input = &data[..];
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(InflateError::TooBig);
                }
                // Grow geometrically, never past limit + 1 (enough to see the limit crossed).
                let more = out.capacity().min(limit + 1 - out.len()).max(1);
                out.reserve_exact(more);
            }
            let before = d.total_in();
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            input = &input[(d.total_in() - before) as usize..];
            if out.len() > limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd || (input.is_empty() && out.len() < out.capacity()) {
                return Ok(out);
            }
        }
    })
}

/// Echo mode: `payload` as a compressed text or binary frame (standalone, in the agreed window),
/// or `None` when compressing would not make it smaller.
pub fn echo_frame(opcode: super::OpCode, payload: &[u8], window_bits: u8) -> Option<Bytes> {
    ECHO.with(|e| {
        let mut e = e.borrow_mut();
        let i = match e.iter().position(|(b, _)| *b == window_bits) {
            Some(i) => i,
            None => {
                e.push((window_bits, Deflater::new(window_bits)));
                e.len() - 1
            }
        };
        let z = e[i].1.compress(payload, None);
        if z.len() >= payload.len() && !payload.is_empty() {
            return None;
        }
        use super::frame::{encode_header_right_aligned, MAX_SERVER_HEADER};
        let mut header = [0u8; MAX_SERVER_HEADER];
        let hlen = encode_header_right_aligned(opcode, z.len(), &mut header);
        let mut v = Vec::with_capacity(hlen + z.len());
        v.extend_from_slice(&header[MAX_SERVER_HEADER - hlen..]);
        v[0] |= 0x40;
        v.extend_from_slice(z);
        Some(Bytes::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn negotiation_follows_rfc_7692() {
        // Chromium's offer.
        let a = negotiate(
            &offers(&["permessage-deflate; client_max_window_bits"]),
            Mode::Shared,
            false,
        )
        .unwrap();
        assert_eq!(
            a.response(),
            "permessage-deflate; client_no_context_takeover"
        );
        assert!(a.shared());
        // Standalone mode, or a client that asks: no server context takeover.
        let a = negotiate(&offers(&["permessage-deflate"]), Mode::Standalone, false).unwrap();
        assert!(!a.shared());
        let a = negotiate(
            &offers(&["permessage-deflate; server_no_context_takeover"]),
            Mode::Shared,
            false,
        )
        .unwrap();
        assert_eq!(
            a.response(),
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
        );
        // A smaller server window: declined for telemetry, the next offer taken.
        let a = negotiate(
            &offers(&["permessage-deflate; server_max_window_bits=10, permessage-deflate"]),
            Mode::Shared,
            false,
        )
        .unwrap();
        assert!(a.shared());
        assert_eq!(
            negotiate(
                &offers(&["permessage-deflate; server_max_window_bits=10"]),
                Mode::Shared,
                false
            ),
            None
        );
        // Echo honours it, standalone.
        let a = negotiate(
            &offers(&["permessage-deflate; server_max_window_bits=10"]),
            Mode::Shared,
            true,
        )
        .unwrap();
        assert_eq!(a.server_window_bits, 10);
        assert!(!a.shared());
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(
                negotiate(&offers(&[bad]), Mode::Shared, true),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            negotiate(&offers(&["permessage-deflate"]), Mode::Off, true),
            None
        );
    }

    /// A client's inflater with context takeover, as a browser keeps it.
    struct Client(Decompress);

    impl Client {
        fn new() -> Self {
            Self(Decompress::new_with_window_bits(false, 15))
        }
        fn inflate(&mut self, frame: &[u8]) -> Vec<u8> {
            let h = crate::ws::frame::decode_header(frame).unwrap();
            assert_eq!(h.rsv & 0x4, 0x4, "RSV1");
            let mut input = frame[h.header_len..].to_vec();
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = Vec::with_capacity(64 * 1024);
            self.0
                .decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .unwrap();
            out
        }
    }

    #[test]
    fn the_dictionary_variant_decodes_right_after_its_base_and_is_smaller() {
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "telemetry ".repeat(300)).into_bytes()
            })
            .collect();
        let mut d = Deflater::default();
        let mut client = Client::new();
        let mut prev: Option<&[u8]> = None;
        for (i, f) in frames.iter().enumerate() {
            let c = d.packet(f, prev.map(|p| (p, i as u64 - 1)));
            let standalone = c.standalone.clone().unwrap();
            let bytes = c.dict.clone().unwrap_or(standalone.clone());
            assert_eq!(client.inflate(&bytes), *f);
            if let Some(dict) = &c.dict {
                assert!(
                    dict.len() < standalone.len(),
                    "{} vs {}",
                    dict.len(),
                    standalone.len()
                );
            }
            prev = Some(f);
        }
        // A fresh client decodes a standalone variant.
        let c = d.packet(&frames[4], Some((&frames[3], 3)));
        assert_eq!(
            Client::new().inflate(c.standalone.as_ref().unwrap()),
            frames[4]
        );
    }

    #[test]
    fn inflate_is_bounded() {
        let mut d = Deflater::default();
        let big = vec![b'a'; 1 << 20];
        let z = d.compress(&big, None).to_vec();
        assert!(z.len() < 16 * 1024, "a bomb: {} bytes", z.len());
        assert_eq!(inflate(&z, 64 * 1024), Err(InflateError::TooBig));
        assert_eq!(inflate(&z, 2 << 20).unwrap().len(), 1 << 20);
        assert_eq!(inflate(b"\xff\xff\xff", 1024), Err(InflateError::Corrupt));
        let small = d.compress(b"hello", None).to_vec();
        assert_eq!(inflate(&small, 1024).unwrap(), b"hello");
        assert_eq!(inflate(&[], 1024).unwrap(), b"");
    }
}
