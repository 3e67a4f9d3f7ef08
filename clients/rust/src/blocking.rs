//! Blocking connections over std sockets, for scripts and tests: `tcp://HOST:PORT` (the data
//! port's lines) and `ws://HOST:PORT/PATH` (WebSocket). Pings are answered as they arrive.

use crate::frames::{FrameReader, Framing, Message};
use crate::handshake;
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A text message (JSON).
    Text(Vec<u8>),
    /// A WebSocket Close: code and reason.
    Close(u16, String),
    /// Not a whole, valid message.
    Torn,
}

/// One connection to an aerobridge port.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    reader: FrameReader,
    /// The upgrade's answer (WebSocket only).
    pub upgraded: Option<handshake::Upgraded>,
}

impl Connection {
    /// Connects to `url`: `tcp://HOST:PORT` or `ws://HOST:PORT/PATH`; a WebSocket upgrade
    /// carries `extra_headers` (each ending in CRLF).
    pub fn connect(url: &str, extra_headers: &str) -> io::Result<Connection> {
        let invalid =
            |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
        if let Some(addr) = url.strip_prefix("tcp://") {
            let stream = TcpStream::connect(addr.trim_end_matches('/'))?;
            stream.set_nodelay(true)?;
            return Ok(Connection {
                stream,
                reader: FrameReader::new(Framing::Lines, Vec::new()),
                upgraded: None,
            });
        }
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| invalid("expected tcp://HOST:PORT or ws://HOST:PORT/PATH"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        let key = handshake::key(std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5c));
        stream.write_all(handshake::request(host, path, &key, extra_headers).as_bytes())?;
        let require_deflate = extra_headers.contains("permessage-deflate");
        let mut buf = Vec::with_capacity(4096);
        let upgraded = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
            match handshake::check_response(&buf, &key, require_deflate) {
                Ok(Some(up)) => break up,
                Ok(None) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
        };
        let leftover = buf[upgraded.consumed..].to_vec();
        let mut reader = FrameReader::new(Framing::WebSocket, leftover);
        if upgraded.deflate {
            reader = reader.with_deflate();
        }
        Ok(Connection {
            stream,
            reader,
            upgraded: Some(upgraded),
        })
    }

    /// The socket (timeouts, shutdown).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// A `hello` with `"framing":"length"` went out: messages switch to length-prefixed
    /// framing after the v1 lines still on their way.
    pub fn expect_length(&mut self) {
        self.reader.expect_length();
    }

    /// Sends one text message: a line on TCP, a masked text frame on WebSocket.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        match self.upgraded {
            Some(_) => self.stream.write_all(&crate::client_text(text.as_bytes())),
            None => {
                let mut line = text.as_bytes().to_vec();
                line.push(b'\n');
                self.stream.write_all(&line)
            }
        }
    }

    /// The next message (blocking; the socket's read timeout applies). Pings are answered.
    pub fn recv(&mut self) -> io::Result<Received> {
        loop {
            let mut pong = None;
            if let Some(next) = self.reader.next_message() {
                match next.map_err(|e| io::Error::other(format!("{e:?}")))? {
                    Message::Text(t) => return Ok(Received::Text(t.to_vec())),
                    Message::Close(code, reason) => {
                        return Ok(Received::Close(code, reason.to_string()))
                    }
                    Message::Torn => return Ok(Received::Torn),
                    Message::Ping(p) => pong = Some(crate::client_frame(0xA, p)),
                    Message::Pong => {}
                }
            } else {
                let buf = self.reader.buffer();
                let len = buf.len();
                buf.resize(len + 64 * 1024, 0);
                let n = self.stream.read(&mut buf[len..]);
                buf.truncate(len + *n.as_ref().unwrap_or(&0));
                if n? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            if let Some(pong) = pong {
                self.stream.write_all(&pong)?;
            }
        }
    }
}
