//! The one frame loop: bytes from the server in, whole messages out. No I/O: the caller reads
//! however it likes (compio, std, a test's byte at a time) and pushes what it read.

use aerobridge_proto::ws::frame::decode_header;

/// How the server frames its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// TCP: one JSON document per line (v1, and v2 with `"framing":"lines"`).
    Lines,
    /// TCP: a 4-byte big-endian length, then the JSON (v2 with `"framing":"length"`).
    Length,
    /// WebSocket server frames (unmasked), text messages.
    WebSocket,
}

/// One message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A whole text message: JSON (with its `\n` on TCP lines and in v1 WebSocket frames).
    Text(&'a mut [u8]),
    /// A WebSocket ping (answer it with a pong carrying the payload).
    Ping(&'a [u8]),
    /// A WebSocket pong.
    Pong,
    /// A WebSocket Close: its code (1005 when it has none) and reason.
    Close(u16, &'a str),
    /// Something that is not a whole, valid message (a fragment, an unknown opcode, a
    /// compressed message that does not inflate): counted as torn by readers that care.
    Torn,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A length beyond what this reader accepts.
    TooLong(u64),
}

/// Reassembles messages from what the caller reads.
pub struct FrameReader {
    framing: Framing,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out (dropped before the next push).
    consumed: usize,
    max_message: usize,
    /// permessage-deflate with context takeover: one inflater per connection.
    inflater: Option<flate2::Decompress>,
    inflated: Vec<u8>,
    /// Lines now, length-prefixed from the first message that is not a line of JSON.
    length_next: bool,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("framing", &self.framing)
            .field("buffered", &(self.buf.len() - self.consumed))
            .field("deflate", &self.inflater.is_some())
            .finish()
    }
}

impl FrameReader {
    /// A reader for `framing`; `leftover` is what arrived with the upgrade response.
    pub fn new(framing: Framing, leftover: Vec<u8>) -> Self {
        Self {
            framing,
            buf: leftover,
            consumed: 0,
            max_message: 64 << 20,
            inflater: None,
            inflated: Vec::new(),
            length_next: false,
        }
    }

    /// A `hello` with `"framing":"length"` went out on a TCP connection: the v1 lines still
    /// on their way are read as lines, and the first message that does not start like one
    /// (`{`) switches the reader to length-prefixed framing.
    pub fn expect_length(&mut self) {
        self.length_next = true;
    }

    /// Inflates compressed WebSocket messages (permessage-deflate was agreed), keeping the
    /// server's context across messages as the extension allows.
    pub fn with_deflate(mut self) -> Self {
        self.inflater = Some(flate2::Decompress::new_with_window_bits(false, 15));
        self
    }

    /// Switches the framing (a TCP connection after `hello` with `"framing":"length"`).
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
    }

    /// The framing now.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Bytes waiting for the rest of their message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The buffer to read into: the caller appends to it (`Vec::extend_from_slice`, or an owned
    /// read into its spare capacity) and then calls [`next_message`](Self::next_message).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.compact();
        &mut self.buf
    }

    /// Takes the buffer for an owned-buffer read (compio); give it back with
    /// [`put_buffer`](Self::put_buffer).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        self.compact();
        std::mem::take(&mut self.buf)
    }

    /// Gives back the buffer [`take_buffer`](Self::take_buffer) took, with what was read.
    pub fn put_buffer(&mut self, buf: Vec<u8>) {
        self.buf = buf;
    }

    /// Appends what was read.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
    }

    /// The next whole message, if the buffer holds one.
    pub fn next_message(&mut self) -> Option<Result<Message<'_>, FrameError>> {
        let start = self.consumed;
        match self.framing {
            Framing::Lines
                if self.length_next && self.buf.get(start).is_some_and(|&b| b != b'{') =>
            {
                self.framing = Framing::Length;
                self.length_next = false;
                self.next_message()
            }
            Framing::Lines => {
                let nl = memchr::memchr(b'\n', &self.buf[start..])?;
                self.consumed = start + nl + 1;
                Some(Ok(Message::Text(&mut self.buf[start..start + nl + 1])))
            }
            Framing::Length => {
                let head: [u8; 4] = self.buf.get(start..start + 4)?.try_into().ok()?;
                let len = u32::from_be_bytes(head) as usize;
                if len > self.max_message {
                    return Some(Err(FrameError::TooLong(len as u64)));
                }
                let end = start + 4 + len;
                if self.buf.len() < end {
                    return None;
                }
                self.consumed = end;
                Some(Ok(Message::Text(&mut self.buf[start + 4..end])))
            }
            Framing::WebSocket => {
                let h = decode_header(&self.buf[start..])?;
                if h.payload_len > self.max_message as u64 {
                    return Some(Err(FrameError::TooLong(h.payload_len)));
                }
                let end = start + h.header_len + h.payload_len as usize;
                if self.buf.len() < end {
                    return None;
                }
                self.consumed = end;
                let payload = start + h.header_len..end;
                Some(Ok(match h.opcode {
                    0x1 if h.fin && h.rsv & 0x4 != 0 => {
                        match inflate(
                            self.inflater.as_mut(),
                            &self.buf[payload],
                            &mut self.inflated,
                        ) {
                            true => Message::Text(&mut self.inflated[..]),
                            false => Message::Torn,
                        }
                    }
                    0x1 if h.fin && h.rsv == 0 => Message::Text(&mut self.buf[payload]),
                    0x8 => {
                        let p = &self.buf[payload];
                        match p {
                            [a, b, reason @ ..] => Message::Close(
                                u16::from_be_bytes([*a, *b]),
                                std::str::from_utf8(reason).unwrap_or(""),
                            ),
                            _ => Message::Close(1005, ""),
                        }
                    }
                    0x9 => Message::Ping(&self.buf[payload]),
                    0xA => Message::Pong,
                    _ => Message::Torn,
                }))
            }
        }
    }
}

/// Inflates one compressed message into `out` (false: no inflater, or it does not inflate).
fn inflate(z: Option<&mut flate2::Decompress>, payload: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(z) = z else {
        return false;
    };
    let mut input = Vec::with_capacity(payload.len() + 4);
    input.extend_from_slice(payload);
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    out.clear();
    out.reserve(64 * 1024);
    let mut at = 0;
    loop {
        let before = z.total_in();
        if z.decompress_vec(&input[at..], out, flate2::FlushDecompress::Sync)
            .is_err()
        {
            return false;
        }
        at += (z.total_in() - before) as usize;
        if at == input.len() && out.len() < out.capacity() {
            return true;
        }
        out.reserve(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        aerobridge_proto::ws::frame::server_frame(
            aerobridge_proto::ws::OpCode::from_u8(opcode).unwrap(),
            payload,
        )
        .to_vec()
    }

    #[test]
    fn lines_arrive_whole_however_they_are_split() {
        let mut r = FrameReader::new(Framing::Lines, b"{\"a\":".to_vec());
        assert!(r.next_message().is_none());
        r.push(b"1}\n{\"b\":2}\n{\"c\"");
        assert_eq!(
            r.next_message(),
            Some(Ok(Message::Text(&mut b"{\"a\":1}\n".to_vec()[..])))
        );
        assert_eq!(
            r.next_message(),
            Some(Ok(Message::Text(&mut b"{\"b\":2}\n".to_vec()[..])))
        );
        assert!(r.next_message().is_none());
        assert_eq!(r.buffered(), 4);
    }

    #[test]
    fn lines_then_length_after_a_hello() {
        let mut bytes = b"{\"schema\":1}\n".to_vec();
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend_from_slice(b"{\"a\":1}");
        let mut r = FrameReader::new(Framing::Lines, bytes);
        r.expect_length();
        assert_eq!(
            r.next_message(),
            Some(Ok(Message::Text(&mut b"{\"schema\":1}\n".to_vec()[..])))
        );
        assert_eq!(
            r.next_message(),
            Some(Ok(Message::Text(&mut b"{\"a\":1}".to_vec()[..])))
        );
        assert_eq!(r.framing(), Framing::Length);
    }

    #[test]
    fn length_prefixed_messages() {
        let mut bytes = 7u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{\"a\":1}");
        let mut r = FrameReader::new(Framing::Length, Vec::new());
        r.push(&bytes[..5]);
        assert!(r.next_message().is_none());
        r.push(&bytes[5..]);
        assert_eq!(
            r.next_message(),
            Some(Ok(Message::Text(&mut b"{\"a\":1}".to_vec()[..])))
        );
    }

    #[test]
    fn websocket_text_ping_close_and_deflate() {
        let mut r = FrameReader::new(Framing::WebSocket, Vec::new());
        let mut bytes = server_frame(1, b"{\"x\":1}\n");
        bytes.extend(server_frame(9, b"hi"));
        bytes.extend(server_frame(8, b"\x0f\xa0slow consumer"));
        r.push(&bytes);
        assert_eq!(
            r.next_message(),
            Some(Ok(Message::Text(&mut b"{\"x\":1}\n".to_vec()[..])))
        );
        assert_eq!(r.next_message(), Some(Ok(Message::Ping(b"hi"))));
        assert_eq!(
            r.next_message(),
            Some(Ok(Message::Close(4000, "slow consumer")))
        );
        // A compressed message: only a reader with deflate inflates it.
        let text = format!("{{\"y\":\"{}\"}}\n", "ab".repeat(100)).into_bytes();
        let mut d = aerobridge_proto::ws::deflate::Deflater::default();
        let c = d.packet(&text, None);
        let z = c.standalone.expect("repetitive text compresses");
        let mut plain = FrameReader::new(Framing::WebSocket, z.to_vec());
        assert_eq!(plain.next_message(), Some(Ok(Message::Torn)));
        let mut inflating = FrameReader::new(Framing::WebSocket, z.to_vec()).with_deflate();
        assert_eq!(
            inflating.next_message(),
            Some(Ok(Message::Text(&mut text.clone()[..])))
        );
    }
}
