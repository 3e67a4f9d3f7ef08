//! aerobridge-client: reads aerobridge's telemetry and speaks its session protocol v2, over TCP
//! and WebSocket.
//!
//! The protocol lives in I/O-free parts, so one implementation serves every caller — loadtest's
//! thousands of compio clients, the tests' blocking ones, and users:
//!
//! ```text
//! frames      FrameReader: bytes in, messages out (TCP lines, TCP length-prefixed, WebSocket
//!             server frames with permessage-deflate), the one frame loop
//! handshake   the WebSocket upgrade request and the check of the 101 response
//! v2          V2State: the subscribed names from the ack, the state rebuilt from keyframes and
//!             deltas (a delta names its keyframe, so any one delta rebuilds the state)
//! blocking    Connection: std sockets for scripts and tests (tcp:// and ws:// URLs)
//! session     Client: the session client (as the Python and JS libraries): connect, the
//!             rebuilt state, updates, set with its ack, resume after a lost connection, stale
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod blocking;
pub mod frames;
pub mod handshake;
pub mod session;
pub mod v2;

pub use frames::{FrameReader, Framing, Message};
pub use v2::{V2State, Value};

/// Masks a client frame (RFC 6455 requires every client frame to be masked).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    aerobridge_proto::ws::reader::client_frame(true, opcode, payload, [0x5a, 0x17, 0xc3, 0x08])
}

/// A text message as a client sends it.
pub fn client_text(text: &[u8]) -> Vec<u8> {
    client_frame(1, text)
}
