//! Frame headers (RFC 6455 §5.2): decoding client frames, encoding server frames.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest header a server frame can need (2 + 8 length bytes, unmasked).
pub const MAX_SERVER_HEADER: usize = 10;

/// Frame opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    /// Decodes the low nibble of the first header byte; `None` for reserved opcodes.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The opcode's wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Final fragment.
    pub fin: bool,
    /// RSV1..3 as the top three bits of a nibble (non-zero is an error without extensions).
    pub rsv: u8,
    /// Raw opcode nibble (validated by the reader so the error can be specific).
    pub opcode: u8,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Declared payload length (may exceed anything we accept; checked by the reader).
    pub payload_len: u64,
    /// Bytes taken by the header itself.
    pub header_len: usize,
}

/// Decodes the header at the start of `buf`; `None` until enough bytes are there.
pub fn decode_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut pos) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10)
        }
        n => (n as u64, 2),
    };
    let mask = if masked {
        if buf.len() < pos + 4 {
            return None;
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        mask,
        payload_len,
        header_len: pos,
    })
}

/// Writes an unmasked server header for a final frame into the end of `out` and returns how many
/// bytes it took, so a header can be placed right before an already written payload.
pub fn encode_header_right_aligned(
    opcode: OpCode,
    payload_len: usize,
    out: &mut [u8; MAX_SERVER_HEADER],
) -> usize {
    let b0 = 0x80 | opcode.as_u8();
    if payload_len < 126 {
        out[8] = b0;
        out[9] = payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        out[6] = b0;
        out[7] = 126;
        out[8..10].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[0] = b0;
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// A complete, final, unmasked server frame.
pub fn server_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut hdr = [0u8; MAX_SERVER_HEADER];
    let n = encode_header_right_aligned(opcode, payload.len(), &mut hdr);
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.put_slice(&hdr[MAX_SERVER_HEADER - n..]);
    out.put_slice(payload);
    out.freeze()
}

/// A Close frame with `code` and a reason (cut to fit the 125-byte control-frame limit on a
/// character boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    server_frame(OpCode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_round_trip() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 13_000, 1 << 20] {
            let payload = vec![b'x'; len];
            let frame = server_frame(OpCode::Text, &payload);
            let h = decode_header(&frame).unwrap();
            assert!(h.fin);
            assert_eq!(h.rsv, 0);
            assert_eq!(h.opcode, 1);
            assert_eq!(h.mask, None);
            assert_eq!(h.payload_len, len as u64);
            assert_eq!(h.header_len + len, frame.len());
        }
    }

    #[test]
    fn partial_headers_wait_for_more() {
        let frame = server_frame(OpCode::Text, &[0u8; 70_000]);
        for cut in 0..10 {
            assert!(decode_header(&frame[..cut]).is_none(), "{cut}");
        }
        // Masked, 16-bit length: needs 2 + 2 + 4 bytes.
        let masked = [0x81u8, 0xfe, 0x01, 0x00, 1, 2, 3];
        assert!(decode_header(&masked).is_none());
    }

    #[test]
    fn close_reason_is_cut_on_char_boundary() {
        let reason = "é".repeat(100);
        let f = close_frame(1000, &reason);
        let h = decode_header(&f).unwrap();
        assert!(h.payload_len <= 125);
        let body = &f[h.header_len..];
        assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1000);
        assert!(std::str::from_utf8(&body[2..]).is_ok());
    }
}
