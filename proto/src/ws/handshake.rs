//! The opening handshake (RFC 6455 §4.2): parse the client's HTTP/1.1 upgrade request with
//! httparse, check it, and build the 101 response or a clear HTTP error.

use base64::Engine as _;
use sha1::{Digest, Sha1};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEADERS: usize = 48;

/// The parts of an upgrade request the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Request target, e.g. `/` or `/?token=x`.
    pub target: String,
    /// `Sec-WebSocket-Accept` value for the response.
    pub accept: String,
    /// `Origin`, when a browser sent one.
    pub origin: Option<String>,
    /// `Host`.
    pub host: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Sec-WebSocket-Protocol`: the subprotocols offered, in order.
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` header values, in order.
    pub extensions: Vec<String>,
}

/// Why an upgrade was refused; each maps to an HTTP status and a reason sent in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not parseable as HTTP/1.x.
    Malformed(String),
    /// The request line and headers exceed the size limit, or there are too many headers.
    TooLarge,
    /// Method other than GET.
    NotGet(String),
    /// HTTP/1.0.
    NotHttp11,
    /// `Upgrade: websocket` missing.
    NotUpgrade {
        /// For a plain HTTP GET or HEAD (no WebSocket headers at all): its target, which the
        /// server may answer as a page. `None` for a broken upgrade attempt.
        target: Option<String>,
        /// A plain HEAD: answer with the headers only.
        head: bool,
    },
    /// `Connection` lacks the `Upgrade` token.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing or not 16 bytes of base64.
    BadKey,
}

impl HandshakeError {
    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::TooLarge => 431,
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// The full HTTP error response (the connection is closed after it).
    pub fn response(&self) -> Vec<u8> {
        let extra: &[(&str, &str)] = if *self == HandshakeError::UnsupportedVersion {
            &[("Sec-WebSocket-Version", "13")]
        } else {
            &[]
        };
        http_response(self.status(), &self.to_string(), extra)
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Malformed(e) => write!(f, "malformed HTTP request: {e}"),
            HandshakeError::TooLarge => f.write_str("request header fields too large"),
            HandshakeError::NotGet(m) => write!(f, "WebSocket upgrade requires GET, got {m}"),
            HandshakeError::NotHttp11 => f.write_str("WebSocket upgrade requires HTTP/1.1"),
            HandshakeError::NotUpgrade { .. } => {
                f.write_str("this is a WebSocket endpoint: send 'Upgrade: websocket' (see README: wire protocol)")
            }
            HandshakeError::NoConnectionUpgrade => f.write_str("'Connection' header must contain the 'Upgrade' token"),
            HandshakeError::UnsupportedVersion => f.write_str("unsupported WebSocket version; use 13"),
            HandshakeError::BadKey => f.write_str("'Sec-WebSocket-Key' must be 16 bytes, base64-encoded"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Parses the request at the start of `buf`. `Ok(None)`: incomplete, read more (unless `buf`
/// already holds `max_len` bytes, which is [`HandshakeError::TooLarge`]). On success also returns
/// the request's length; bytes after it are the client's first frames.
pub fn parse_upgrade(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_len => {
            return Err(HandshakeError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    if len > max_len {
        return Err(HandshakeError::TooLarge);
    }
    let method = req.method.unwrap_or_default();
    let websocket_headers = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("Upgrade")
            || h.name.eq_ignore_ascii_case("Sec-WebSocket-Key")
            || h.name.eq_ignore_ascii_case("Sec-WebSocket-Version")
    });
    if method == "HEAD" && !websocket_headers {
        // A plain HEAD is asked of a page, never of the WebSocket.
        let target = Some(req.path.unwrap_or("/").chars().take(256).collect());
        return Err(HandshakeError::NotUpgrade { target, head: true });
    }
    if method != "GET" {
        return Err(HandshakeError::NotGet(method.chars().take(16).collect()));
    }
    if req.version != Some(1) {
        return Err(HandshakeError::NotHttp11);
    }
    let all: &[httparse::Header<'_>] = req.headers;
    fn named<'h, 'b>(
        all: &'h [httparse::Header<'b>],
        name: &'h str,
    ) -> impl Iterator<Item = &'h httparse::Header<'b>> {
        all.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    }
    let header = |name: &'static str| named(all, name);
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|h| {
            std::str::from_utf8(h.value)
                .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token("Upgrade", "websocket") {
        let plain = header("Sec-WebSocket-Key").next().is_none()
            && header("Sec-WebSocket-Version").next().is_none();
        let target = plain.then(|| req.path.unwrap_or("/").chars().take(256).collect());
        return Err(HandshakeError::NotUpgrade {
            target,
            head: false,
        });
    }
    if !has_token("Connection", "Upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let version_ok = header("Sec-WebSocket-Version").any(|h| h.value.trim_ascii() == b"13");
    if !version_ok {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let mut keys = header("Sec-WebSocket-Key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.value.trim_ascii(),
        _ => return Err(HandshakeError::BadKey),
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let text = |name: &'static str| {
        header(name)
            .next()
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_string())
    };
    let (origin, host, authorization) = (text("Origin"), text("Host"), text("Authorization"));
    let protocols = header("Sec-WebSocket-Protocol")
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .take(16)
        .collect();
    let extensions = header("Sec-WebSocket-Extensions")
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .map(|v| v.chars().take(1024).collect())
        .take(8)
        .collect();
    let request = UpgradeRequest {
        target: req.path.unwrap_or("/").to_string(),
        accept: accept_key(std::str::from_utf8(key).map_err(|_| HandshakeError::BadKey)?),
        origin,
        host,
        authorization,
        protocols,
        extensions,
    };
    Ok(Some((request, len)))
}

/// `base64(sha1(key + GUID))` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The 101 response completing the upgrade, selecting `protocol` when the server chose one of
/// the subprotocols offered, and `extensions` when it agreed to some.
pub fn switching_protocols(
    accept: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Vec<u8> {
    let mut selected = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    if let Some(e) = extensions {
        selected.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{selected}\r\n"
    )
    .into_bytes()
}

/// A small `text/plain` HTTP response that closes the connection.
pub fn http_response(status: u16, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let phrase = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len() + 1
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.push('\n');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let (req, len) = parse_upgrade(GOOD.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(len, GOOD.len());
        assert_eq!(req.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(req.target, "/chat");
        assert_eq!(req.origin.as_deref(), Some("http://example.com"));
        let resp = String::from_utf8(switching_protocols(&req.accept, None, None)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn tokens_inside_comma_lists_any_case() {
        let firefox = GOOD
            .replace("Connection: Upgrade", "connection: keep-alive, upgrade")
            .replace("Upgrade: websocket", "UPGRADE: WebSocket");
        assert!(parse_upgrade(firefox.as_bytes(), 8192).unwrap().is_some());
    }

    #[test]
    fn partial_then_complete_and_trailing_bytes() {
        let bytes = GOOD.as_bytes();
        assert_eq!(parse_upgrade(&bytes[..bytes.len() - 1], 8192), Ok(None));
        let mut with_frame = bytes.to_vec();
        with_frame.extend_from_slice(&[0x81, 0x80, 0, 0, 0, 0]);
        let (_, len) = parse_upgrade(&with_frame, 8192).unwrap().unwrap();
        assert_eq!(len, bytes.len());
    }

    #[test]
    fn refusals() {
        let cases = [
            (GOOD.replace("GET", "POST"), 400),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (GOOD.replace("Upgrade: websocket\r\n", ""), 400),
            (
                GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
                400,
            ),
            (GOOD.replace("Version: 13", "Version: 8"), 426),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!not base64!!!"),
                400,
            ),
            ("GARBAGE\u{1}\r\n\r\n".to_string(), 400),
        ];
        for (req, status) in cases {
            let err = parse_upgrade(req.as_bytes(), 8192).unwrap_err();
            assert_eq!(err.status(), status, "{req:?}: {err}");
            let resp = String::from_utf8(err.response()).unwrap();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")));
            if status == 426 {
                assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
            }
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(
            parse_upgrade(big.as_bytes(), 8192).unwrap_err(),
            HandshakeError::TooLarge
        );
    }
}
