//! Client bytes → messages and control events, enforcing RFC 6455's rules for servers:
//! client frames must be masked, reserved bits and opcodes rejected, control frames short and
//! unfragmented, fragments reassembled in order, text validated as UTF-8, messages bounded.

use super::close;
use super::frame::{decode_header, OpCode};
use super::mask::unmask;
use super::utf8::Utf8Validator;

/// One thing a client said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text message (valid UTF-8).
    Text(Vec<u8>),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping with its payload (answer with a pong carrying the same payload).
    Ping(Vec<u8>),
    /// A pong (proof of life).
    Pong(Vec<u8>),
    /// The client started the close handshake (`None`: no status code was given).
    Close(Option<u16>, String),
}

/// Why the connection must be closed; maps to the close code the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A client frame without the MASK bit.
    Unmasked,
    /// RSV1–3 set without a negotiated extension.
    ReservedBits,
    /// Opcode 3–7 or B–F.
    UnknownOpcode(u8),
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame with more than 125 payload bytes.
    ControlTooLong,
    /// A continuation frame with no message started.
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// The message (all fragments together) exceeds the limit.
    MessageTooBig {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// A close payload of one byte.
    InvalidClosePayload,
    /// A close code a peer may not send.
    InvalidCloseCode(u16),
    /// A compressed message (permessage-deflate) that does not inflate.
    BadCompression,
}

impl ProtocolError {
    /// The close code to send.
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::MessageTooBig { .. } => close::MESSAGE_TOO_BIG,
            ProtocolError::InvalidUtf8 | ProtocolError::BadCompression => close::INVALID_PAYLOAD,
            _ => close::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the Close frame and the log.
    pub fn reason(self) -> &'static str {
        match self {
            ProtocolError::Unmasked => "client frames must be masked",
            ProtocolError::ReservedBits => "reserved bits set without an extension",
            ProtocolError::UnknownOpcode(_) => "unknown opcode",
            ProtocolError::FragmentedControl => "fragmented control frame",
            ProtocolError::ControlTooLong => "control frame payload over 125 bytes",
            ProtocolError::UnexpectedContinuation => {
                "continuation frame without a message to continue"
            }
            ProtocolError::ExpectedContinuation => "new message before the fragmented one finished",
            ProtocolError::MessageTooBig { .. } => "message too big",
            ProtocolError::InvalidUtf8 => "invalid UTF-8 in text message",
            ProtocolError::InvalidClosePayload => "close payload of one byte",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::BadCompression => "compressed message does not inflate",
        }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::UnknownOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            ProtocolError::MessageTooBig { limit } => {
                write!(f, "message too big (limit {limit} bytes)")
            }
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Decodes client frames into [`Event`]s. Holds at most one unfinished fragmented message.
#[derive(Debug)]
pub struct MessageReader {
    max_message: usize,
    fragments: Vec<u8>,
    fragment_opcode: Option<OpCode>,
    utf8: Utf8Validator,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// The message being reassembled is compressed.
    compressed: bool,
}

impl MessageReader {
    /// A reader that accepts messages of up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            fragments: Vec::new(),
            fragment_opcode: None,
            utf8: Utf8Validator::default(),
            deflate: false,
            compressed: false,
        }
    }

    /// permessage-deflate was negotiated: accept RSV1 on the first frame of a data message and
    /// inflate those messages (bounded by the message limit).
    pub fn with_deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }

    /// The largest message accepted.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Bytes of buffered input a caller must be able to hold for any acceptable frame.
    pub fn max_frame_len(&self) -> usize {
        self.max_message.max(125) + 14
    }

    /// Decodes the frame at the start of `input` (unmasking it in place). Returns how many bytes
    /// it consumed and the event it completed, if any; `Ok(None)` means more bytes are needed.
    /// Header errors are reported as soon as the header is complete, before any payload arrives.
    pub fn decode(
        &mut self,
        input: &mut [u8],
    ) -> Result<Option<(usize, Option<Event>)>, ProtocolError> {
        let Some(h) = decode_header(input) else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(h.opcode).ok_or(ProtocolError::UnknownOpcode(h.opcode))?;
        // RSV1 is permessage-deflate's, on the first frame of a data message only.
        let rsv1 = h.rsv == 0x4 && self.deflate && matches!(opcode, OpCode::Text | OpCode::Binary);
        if h.rsv != 0 && !rsv1 {
            return Err(ProtocolError::ReservedBits);
        }
        let mask = h.mask.ok_or(ProtocolError::Unmasked)?;
        if opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlTooLong);
            }
        } else {
            match (opcode, self.fragment_opcode) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::ExpectedContinuation)
                }
                _ => {}
            }
            let total = (self.fragments.len() as u64).saturating_add(h.payload_len);
            if total > self.max_message as u64 {
                return Err(ProtocolError::MessageTooBig {
                    limit: self.max_message,
                });
            }
        }
        let len = h.payload_len as usize;
        let end = h.header_len + len;
        if input.len() < end {
            return Ok(None);
        }
        let payload = &mut input[h.header_len..end];
        unmask(payload, mask);
        let event = match opcode {
            OpCode::Ping => Some(Event::Ping(payload.to_vec())),
            OpCode::Pong => Some(Event::Pong(payload.to_vec())),
            OpCode::Close => Some(parse_close(payload)?),
            OpCode::Text | OpCode::Binary if h.fin && rsv1 => Some(self.inflated(opcode, payload)?),
            OpCode::Text | OpCode::Binary if h.fin => {
                if opcode == OpCode::Text && std::str::from_utf8(payload).is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                Some(if opcode == OpCode::Text {
                    Event::Text(payload.to_vec())
                } else {
                    Event::Binary(payload.to_vec())
                })
            }
            OpCode::Text | OpCode::Binary => {
                self.fragment_opcode = Some(opcode);
                self.compressed = rsv1;
                self.fragments.clear();
                self.utf8.reset();
                self.append_fragment(payload, false)?;
                None
            }
            OpCode::Continuation => {
                self.append_fragment(payload, h.fin)?;
                if h.fin {
                    let data = std::mem::take(&mut self.fragments);
                    let opcode = self.fragment_opcode.take().unwrap_or(OpCode::Binary);
                    if std::mem::take(&mut self.compressed) {
                        Some(self.inflated(opcode, &data)?)
                    } else if opcode == OpCode::Text {
                        Some(Event::Text(data))
                    } else {
                        Some(Event::Binary(data))
                    }
                } else {
                    None
                }
            }
        };
        Ok(Some((end, event)))
    }

    /// A compressed message, inflated (at most the message limit) and, for text, validated.
    fn inflated(&self, opcode: OpCode, compressed: &[u8]) -> Result<Event, ProtocolError> {
        let data = super::deflate::inflate(compressed, self.max_message).map_err(|e| match e {
            super::deflate::InflateError::TooBig => ProtocolError::MessageTooBig {
                limit: self.max_message,
            },
            super::deflate::InflateError::Corrupt => ProtocolError::BadCompression,
        })?;
        if opcode == OpCode::Text {
            if std::str::from_utf8(&data).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            Ok(Event::Text(data))
        } else {
            Ok(Event::Binary(data))
        }
    }

    fn append_fragment(&mut self, payload: &[u8], fin: bool) -> Result<(), ProtocolError> {
        self.fragments.extend_from_slice(payload);
        // Compressed text is validated once inflated.
        if self.fragment_opcode == Some(OpCode::Text) && !self.compressed {
            self.utf8
                .check(&self.fragments, fin)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }
}

fn parse_close(payload: &[u8]) -> Result<Event, ProtocolError> {
    match payload.len() {
        0 => Ok(Event::Close(None, String::new())),
        1 => Err(ProtocolError::InvalidClosePayload),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close::is_valid_received(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Event::Close(Some(code), reason.to_string()))
        }
    }
}

/// Builds a masked client frame (tests, benches and client tools).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 4] = [1, 2, 3, 4];

    fn decode_all(reader: &mut MessageReader, bytes: &[u8]) -> Result<Vec<Event>, ProtocolError> {
        let mut buf = bytes.to_vec();
        let mut pos = 0;
        let mut events = Vec::new();
        while let Some((n, ev)) = reader.decode(&mut buf[pos..])? {
            pos += n;
            events.extend(ev);
        }
        assert_eq!(pos, buf.len(), "all input consumed");
        Ok(events)
    }

    #[test]
    fn text_ping_close() {
        let mut r = MessageReader::new(1024);
        let mut bytes = client_frame(true, 1, b"{\"a\":1}", M);
        bytes.extend(client_frame(true, 9, b"hi", M));
        bytes.extend(client_frame(true, 8, &[0x03, 0xe8, b'b', b'y', b'e'], M));
        let ev = decode_all(&mut r, &bytes).unwrap();
        assert_eq!(
            ev,
            vec![
                Event::Text(b"{\"a\":1}".to_vec()),
                Event::Ping(b"hi".to_vec()),
                Event::Close(Some(1000), "bye".into())
            ]
        );
    }

    #[test]
    fn fragments_reassemble_with_interleaved_control() {
        let mut r = MessageReader::new(1024);
        let text = "héllo wörld".as_bytes();
        let mut bytes = client_frame(false, 1, &text[..2], M); // cuts 'é' in half
        bytes.extend(client_frame(true, 9, b"", M));
        bytes.extend(client_frame(false, 0, &text[2..7], M));
        bytes.extend(client_frame(true, 0, &text[7..], M));
        let ev = decode_all(&mut r, &bytes).unwrap();
        assert_eq!(ev, vec![Event::Ping(vec![]), Event::Text(text.to_vec())]);
    }

    #[test]
    fn byte_at_a_time_delivery() {
        let mut r = MessageReader::new(1024);
        let bytes = client_frame(true, 1, &[b'x'; 300], M);
        let mut buf = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.push(*b);
            let res = r.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(res.is_none());
            } else {
                assert_eq!(res.unwrap().1, Some(Event::Text(vec![b'x'; 300])));
            }
        }
    }

    #[test]
    fn rule_violations_map_to_close_codes() {
        let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], ProtocolError::Unmasked, 1002),
            (
                {
                    let mut f = client_frame(true, 1, b"x", M);
                    f[0] |= 0x40;
                    f
                },
                ProtocolError::ReservedBits,
                1002,
            ),
            (
                client_frame(true, 3, b"", M),
                ProtocolError::UnknownOpcode(3),
                1002,
            ),
            (
                client_frame(false, 9, b"", M),
                ProtocolError::FragmentedControl,
                1002,
            ),
            (
                client_frame(true, 9, &[0; 126], M),
                ProtocolError::ControlTooLong,
                1002,
            ),
            (
                client_frame(true, 0, b"x", M),
                ProtocolError::UnexpectedContinuation,
                1002,
            ),
            (
                client_frame(true, 1, &[0xff, 0xfe], M),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                client_frame(true, 8, &[0x03], M),
                ProtocolError::InvalidClosePayload,
                1002,
            ),
            (
                client_frame(true, 8, &[0x03, 0xed], M),
                ProtocolError::InvalidCloseCode(1005),
                1002,
            ),
            (
                client_frame(true, 8, &[0x03, 0xe8, 0xff], M),
                ProtocolError::InvalidUtf8,
                1007,
            ),
        ];
        for (bytes, want, code) in cases {
            let mut r = MessageReader::new(1024);
            let err = decode_all(&mut r, &bytes).unwrap_err();
            assert_eq!(err, want);
            assert_eq!(err.close_code(), code);
        }
        let mut r = MessageReader::new(1024);
        let mut bytes = client_frame(false, 1, b"a", M);
        bytes.extend(client_frame(true, 1, b"b", M));
        assert_eq!(
            decode_all(&mut r, &bytes).unwrap_err(),
            ProtocolError::ExpectedContinuation
        );
    }

    #[test]
    fn size_limit_is_checked_from_the_header_alone() {
        let mut r = MessageReader::new(100);
        // 64-bit length with the top bit set, no payload at all: rejected immediately.
        let mut hdr = vec![0x81, 0xff];
        hdr.extend_from_slice(&u64::MAX.to_be_bytes());
        hdr.extend_from_slice(&M);
        assert_eq!(
            r.decode(&mut hdr),
            Err(ProtocolError::MessageTooBig { limit: 100 })
        );
        // Fragments that add up past the limit.
        let mut r = MessageReader::new(100);
        let mut bytes = client_frame(false, 1, &[b'a'; 60], M);
        bytes.extend(client_frame(true, 0, &[b'a'; 60], M));
        let err = decode_all(&mut r, &bytes).unwrap_err();
        assert_eq!(err.close_code(), 1009);
        // Exactly the limit is fine.
        let mut r = MessageReader::new(100);
        assert!(decode_all(&mut r, &client_frame(true, 1, &[b'a'; 100], M)).is_ok());
    }

    #[test]
    fn invalid_utf8_fails_before_the_message_ends() {
        let mut r = MessageReader::new(1024);
        let mut buf = client_frame(false, 1, &[b'a', 0xc0, 0x80], M);
        assert_eq!(r.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn compressed_messages_inflate_and_bombs_get_1009() {
        let mut d = crate::ws::deflate::Deflater::default();
        let z = d
            .compress(br#"{"variable":"Controls.Gear","value":1}"#, None)
            .to_vec();
        let mut frame = client_frame(true, 1, &z, [9, 8, 7, 6]);
        frame[0] |= 0x40;
        let mut plain = MessageReader::new(1024);
        assert_eq!(
            plain.decode(&mut frame.clone()),
            Err(ProtocolError::ReservedBits),
            "without the extension RSV1 is an error"
        );
        let mut r = MessageReader::new(1024).with_deflate(true);
        let (_, ev) = r.decode(&mut frame.clone()).unwrap().unwrap();
        assert_eq!(
            ev,
            Some(Event::Text(
                br#"{"variable":"Controls.Gear","value":1}"#.to_vec()
            ))
        );
        // Fragmented: RSV1 on the first frame only.
        let (a, b) = z.split_at(z.len() / 2);
        let mut first = client_frame(false, 1, a, [1, 1, 1, 1]);
        first[0] |= 0x40;
        assert_eq!(r.decode(&mut first).unwrap().unwrap().1, None);
        let mut bad = client_frame(true, 0, b, [1, 1, 1, 1]);
        bad[0] |= 0x40;
        assert_eq!(
            r.decode(&mut bad.clone()),
            Err(ProtocolError::ReservedBits),
            "RSV1 on a continuation"
        );
        let mut last = client_frame(true, 0, b, [1, 1, 1, 1]);
        let (_, ev) = r.decode(&mut last).unwrap().unwrap();
        assert!(matches!(ev, Some(Event::Text(t)) if t.ends_with(b"1}")));
        // A ping may not be compressed.
        let mut ping = client_frame(true, 9, b"x", [1, 1, 1, 1]);
        ping[0] |= 0x40;
        assert_eq!(r.decode(&mut ping), Err(ProtocolError::ReservedBits));
        // 64 KiB of zeros in a few hundred bytes, against a 1 KiB limit.
        let bomb = d.compress(&vec![0u8; 64 * 1024], None).to_vec();
        assert!(bomb.len() < 1024);
        let mut f = client_frame(true, 2, &bomb, [3, 3, 3, 3]);
        f[0] |= 0x40;
        let e = r.decode(&mut f).unwrap_err();
        assert_eq!(e.close_code(), 1009);
        let mut junk = client_frame(true, 1, b"\xff\xfe\xfd", [3, 3, 3, 3]);
        junk[0] |= 0x40;
        assert_eq!(r.decode(&mut junk), Err(ProtocolError::BadCompression));
    }
}
