//! The client's side of the WebSocket upgrade: the request, and the check of the response.

/// A `Sec-WebSocket-Key` from 16 bytes (a client should pick them at random; they only need to
/// differ between connections in flight).
pub fn key(bytes: [u8; 16]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The upgrade request for `path` on `host`; each of `extra_headers` ends in CRLF
/// (`Sec-WebSocket-Protocol: aerobridge.v2\r\n`, a permessage-deflate offer, `Authorization`).
pub fn request(host: &str, path: &str, key: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: aerobridge-client\r\n{extra_headers}\r\n"
    )
}

/// Why an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeError {
    /// The server answered with another status (its line and body, as sent).
    Refused(String),
    /// A 101 without the right `Sec-WebSocket-Accept`.
    BadAccept,
    /// permessage-deflate was offered and required, but declined.
    DeflateDeclined,
    /// The response head is larger than any server sends.
    TooLarge,
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::Refused(r) => write!(f, "upgrade refused: {r}"),
            UpgradeError::BadAccept => f.write_str("bad Sec-WebSocket-Accept"),
            UpgradeError::DeflateDeclined => f.write_str("permessage-deflate declined"),
            UpgradeError::TooLarge => f.write_str("oversized upgrade response"),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// What the server said to the upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgraded {
    /// The response head (status line and headers).
    pub head: String,
    /// permessage-deflate was agreed.
    pub deflate: bool,
    /// The subprotocol chosen, if any.
    pub protocol: Option<String>,
    /// How many bytes of the buffer the head took (what follows is the first frames).
    pub consumed: usize,
}

/// Checks the response in `buf` to a request made with `key`: `Ok(None)` while the head is
/// incomplete; `require_deflate` fails a response that declined the offer.
pub fn check_response(
    buf: &[u8],
    key: &str,
    require_deflate: bool,
) -> Result<Option<Upgraded>, UpgradeError> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > 16 * 1024 {
            Err(UpgradeError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        let status = head.lines().next().unwrap_or("").to_string();
        let body = String::from_utf8_lossy(&buf[end + 4..]).trim().to_string();
        return Err(UpgradeError::Refused(if body.is_empty() {
            status
        } else {
            format!("{status}: {body}")
        }));
    }
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("Sec-WebSocket-Accept").as_deref()
        != Some(aerobridge_proto::ws::handshake::accept_key(key).as_str())
    {
        return Err(UpgradeError::BadAccept);
    }
    let deflate =
        header("Sec-WebSocket-Extensions").is_some_and(|e| e.contains("permessage-deflate"));
    if require_deflate && !deflate {
        return Err(UpgradeError::DeflateDeclined);
    }
    Ok(Some(Upgraded {
        protocol: header("Sec-WebSocket-Protocol"),
        head,
        deflate,
        consumed: end + 4,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_base64_of_16_bytes_and_the_server_takes_the_request() {
        assert_eq!(key([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
        let k = key([200; 16]);
        let req = request("127.0.0.1:8765", "/", &k, "");
        assert!(
            aerobridge_proto::ws::handshake::parse_upgrade(req.as_bytes(), 8192)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_101_with_the_right_accept_passes_and_a_refusal_says_why() {
        let k = key([7; 16]);
        let accept = aerobridge_proto::ws::handshake::accept_key(&k);
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: aerobridge.v2\r\n\r\n\x01\x00");
        assert_eq!(check_response(&ok.as_bytes()[..10], &k, false), Ok(None));
        let up = check_response(ok.as_bytes(), &k, false).unwrap().unwrap();
        assert_eq!(up.protocol.as_deref(), Some("aerobridge.v2"));
        assert_eq!(&ok.as_bytes()[up.consumed..], b"\x01\x00");
        assert_eq!(
            check_response(ok.as_bytes(), &k, true),
            Err(UpgradeError::DeflateDeclined)
        );
        assert_eq!(
            check_response(ok.as_bytes(), &key([8; 16]), false),
            Err(UpgradeError::BadAccept)
        );
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nnot here\n";
        assert_eq!(
            check_response(refused, &k, false),
            Err(UpgradeError::Refused(
                "HTTP/1.1 403 Forbidden: not here".into()
            ))
        );
    }
}
