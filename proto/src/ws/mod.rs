//! RFC 6455, server side, written by hand and free of I/O.
//!
//! Why by hand: the point of aerobridge is that one pre-framed telemetry message is shared by every
//! client (`bytes::Bytes`, a refcount bump per client). Per-connection WebSocket libraries own the
//! framing and copy/re-frame each message for each connection, which is exactly the per-client work
//! the fan-out avoids. Server-to-client frames are unmasked, so a frame built once is valid for all.
//!
//! - [`frame`]: header encode/decode and the frames the server sends.
//! - [`mask`]: client-to-server unmasking.
//! - [`utf8`]: incremental UTF-8 validation across fragments.
//! - [`reader`]: turns client bytes into messages and control events (fragments, limits, rules).
//! - [`handshake`]: the HTTP/1.1 upgrade (httparse, sha1, base64).
//! - [`close`]: close codes, including aerobridge's own.
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation, the shared compressor, bounded
//!   inflation of client messages.

pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod reader;
pub mod utf8;

pub use frame::OpCode;
pub use reader::{Event, MessageReader, ProtocolError};
