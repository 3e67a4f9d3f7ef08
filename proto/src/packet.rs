//! One tick's output: the same JSON payload as a TCP line and as a WebSocket text frame, built
//! once and shared by every client (cloning a `Bytes` is a refcount bump, never a copy).

use crate::ws::frame::{encode_header_right_aligned, OpCode, MAX_SERVER_HEADER};
use bytes::Bytes;
use std::time::Instant;

/// A frame ready for every client.
#[derive(Debug)]
pub struct Packet {
    /// The frame's `update_counter`.
    pub counter: u64,
    /// The frame's `timestamp` (µs since the UNIX epoch).
    pub timestamp_us: u64,
    /// When it was built, for lag accounting.
    pub built: Instant,
    /// `payload` (ends in `\n`), for TCP clients.
    pub tcp: Bytes,
    /// WebSocket text frame: server header + the same payload bytes.
    pub ws: Bytes,
    /// permessage-deflate variants of the WebSocket frame (compressed once, for everyone).
    pub deflate: Option<crate::ws::deflate::Compressed>,
}

impl Packet {
    /// Builds both packets with one allocation and one copy of `payload`: the buffer is
    /// `[header | payload]`, the TCP packet is a slice of it without the header.
    pub fn build(counter: u64, timestamp_us: u64, built: Instant, payload: &[u8]) -> Self {
        let mut header = [0u8; MAX_SERVER_HEADER];
        let hlen = encode_header_right_aligned(OpCode::Text, payload.len(), &mut header);
        let mut buf = Vec::with_capacity(hlen + payload.len());
        buf.extend_from_slice(&header[MAX_SERVER_HEADER - hlen..]);
        buf.extend_from_slice(payload);
        let ws = Bytes::from(buf);
        let tcp = ws.slice(hlen..);
        Self {
            counter,
            timestamp_us,
            built,
            tcp,
            ws,
            deflate: None,
        }
    }

    /// The bytes for one framing (v1 frames have no length-prefixed form: a connection that
    /// chose it is v2 and gets no v1 frames).
    #[inline]
    pub fn bytes(&self, framing: Framing) -> &Bytes {
        match framing {
            Framing::Lines | Framing::Length => &self.tcp,
            Framing::WebSocket => &self.ws,
        }
    }
}

/// How messages to one connection are framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// TCP: one JSON object per line.
    Lines,
    /// TCP (v2, `framing: length`): 4-byte big-endian length, then the JSON.
    Length,
    /// WebSocket text messages.
    WebSocket,
}

impl Framing {
    /// Frames one JSON message (no trailing newline) for this connection.
    pub fn frame(self, json: &[u8]) -> Bytes {
        match self {
            Framing::WebSocket => {
                crate::ws::frame::server_frame(crate::ws::frame::OpCode::Text, json)
            }
            Framing::Lines => {
                let mut v = Vec::with_capacity(json.len() + 1);
                v.extend_from_slice(json);
                v.push(b'\n');
                Bytes::from(v)
            }
            Framing::Length => {
                let mut v = Vec::with_capacity(json.len() + 4);
                v.extend_from_slice(&(json.len() as u32).to_be_bytes());
                v.extend_from_slice(json);
                Bytes::from(v)
            }
        }
    }
}

impl Transport {
    /// The framing a connection of this transport starts with (v1).
    pub fn framing(self) -> Framing {
        match self {
            Transport::Tcp => Framing::Lines,
            Transport::WebSocket => Framing::WebSocket,
        }
    }
}

/// How a telemetry client is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One JSON object per line.
    Tcp,
    /// One text message per frame.
    WebSocket,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::decode_header;

    #[test]
    fn ws_packet_is_header_plus_the_tcp_bytes() {
        let payload = vec![b'a'; 13_000];
        let p = Packet::build(7, 1, Instant::now(), &payload);
        assert_eq!(&p.tcp[..], &payload[..]);
        let h = decode_header(&p.ws).unwrap();
        assert_eq!(h.header_len, 4);
        assert_eq!(&p.ws[h.header_len..], &payload[..]);
        // Same allocation: the TCP packet points into the WS packet.
        assert_eq!(p.tcp.as_ptr(), p.ws[h.header_len..].as_ptr());
    }
}
