//! A connection refused because the server is full (`--max-clients`): what it is told, in its
//! port's own protocol, and how long each step of saying it may take.

use std::time::Duration;

/// Which port a connection came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// TCP telemetry (12345).
    Data,
    /// TCP commands (12346).
    Command,
    /// WebSocket (8765).
    WebSocket,
}

/// How to refuse one connection: read (part of) its request first, write the response, send
/// FIN, then read and discard what it still sends for a moment (a lingering close), so that
/// closing does not reset the connection under the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Read the request first, for at most this long (a WebSocket upgrade request).
    pub read_first: Option<Duration>,
    /// The answer (empty: close without a word).
    pub response: Vec<u8>,
    /// Time allowed to write it.
    pub within: Duration,
    /// After FIN, how long what the client still sends is read and discarded.
    pub linger: Duration,
    /// At most this many reads while lingering.
    pub linger_reads: usize,
}

/// The refusal for a connection to `port` when `max_clients` are connected.
pub fn server_full(port: Port, max_clients: usize) -> Refusal {
    refuse(
        port,
        "server full",
        503,
        &format!("server full: {max_clients} clients connected (--max-clients)"),
    )
}

/// The refusal for a connection to `port` from an address that has `max_per_ip` connections.
pub fn too_many_from_ip(port: Port, max_per_ip: usize) -> Refusal {
    refuse(
        port,
        "too many connections from your address",
        429,
        &format!("too many connections from your address: {max_per_ip} (--max-clients-per-ip)"),
    )
}

fn refuse(port: Port, short: &'static str, status: u16, long: &str) -> Refusal {
    let response = match port {
        // Upstream's clients parse every line as telemetry: just close.
        Port::Data => Vec::new(),
        Port::Command => {
            let mut out = Vec::new();
            crate::command::write_error(
                &mut out,
                &crate::command::Rejection::bare(crate::command::CommandError::Unavailable(short)),
            );
            out
        }
        Port::WebSocket => {
            crate::ws::handshake::http_response(status, long, &[("Retry-After", "5")])
        }
    };
    Refusal {
        read_first: (port == Port::WebSocket).then_some(Duration::from_millis(200)),
        within: Duration::from_millis(500),
        linger: if response.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        },
        linger_reads: 16,
        response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_port_is_told_in_its_own_protocol() {
        let data = server_full(Port::Data, 10);
        assert!(data.response.is_empty() && data.read_first.is_none());
        let command = server_full(Port::Command, 10);
        let reply: serde_json::Value =
            serde_json::from_slice(command.response.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(reply["ok"], false);
        assert!(reply["error"].as_str().unwrap().contains("server full"));
        let ws = server_full(Port::WebSocket, 10);
        let text = String::from_utf8(ws.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("server full: 10 clients connected (--max-clients)"));
        assert!(text.contains("Retry-After: 5"));
        assert!(ws.read_first.is_some());
        let ws = String::from_utf8(too_many_from_ip(Port::WebSocket, 3).response).unwrap();
        assert!(ws.starts_with("HTTP/1.1 429 Too Many Requests"), "{ws}");
        assert!(ws.contains("too many connections from your address: 3 (--max-clients-per-ip)"));
        let command = too_many_from_ip(Port::Command, 3).response;
        assert!(String::from_utf8(command)
            .unwrap()
            .contains("too many connections from your address"));
    }
}
