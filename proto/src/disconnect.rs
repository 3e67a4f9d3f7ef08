//! Why a connection ended: what every session's `Close` says and the metrics count.

/// Why a connection ended. The snake_case name is the metric label and the log word.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter, strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
pub enum Disconnect {
    /// The peer closed (EOF, or a WebSocket Close).
    PeerClosed,
    /// Fell more than `--max-lag` behind.
    SlowConsumer,
    /// Broke the WebSocket protocol (or sent binary).
    ProtocolError,
    /// Reset, broken pipe, or another socket error.
    IoError,
    /// The server is shutting down.
    Shutdown,
    /// A WebSocket peer did not answer a ping.
    IdleTimeout,
    /// The upgrade request was refused or did not finish in time.
    HandshakeFailed,
    /// `--max-clients` reached: refused politely.
    ServerFull,
    /// `--max-clients-per-ip` reached for the peer's address: refused politely.
    TooManyFromIp,
    /// Sent pings or commands without reading the answers.
    ControlOverflow,
    /// Kept sending commands far past `--command-rate-limit`.
    CommandFlood,
    /// A plain HTTP request (dashboard, `/metrics`, `/healthz`) was answered.
    HttpRequest,
    /// TLS failed: a bad or slow handshake, garbage or plaintext on a TLS port, a refused
    /// client certificate (`/metrics` says which).
    TlsFailed,
}

impl Disconnect {
    /// The stable snake_case name (logs, metrics).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
