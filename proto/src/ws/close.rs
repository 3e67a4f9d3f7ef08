//! Close codes (RFC 6455 §7.4) and the application codes aerobridge sends.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// The peer broke the protocol (unmasked frame, reserved bits, bad opcode, control-frame rules).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A message type the server does not accept (binary).
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A text message or close reason that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation (e.g. a peer that stays silent after a ping).
pub const POLICY_VIOLATION: u16 = 1008;
/// A message larger than the configured maximum.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Unexpected server condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// aerobridge: the client fell more than `--max-lag` behind the broadcast and was disconnected.
pub const SLOW_CONSUMER: u16 = 4000;

/// Whether a peer may send `code` in a Close frame (RFC 6455 §7.4.1–7.4.2).
pub fn is_valid_received(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
