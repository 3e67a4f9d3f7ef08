//! NATS for an origin (`--nats-publish`, [`crate::net::nats`]) and an edge (`--source nats://…`,
//! [`crate::source::nats`]): feed URLs, credentials (never logged) and the link's counters. The
//! feed rules themselves (which origin an edge follows, its counters) perform no I/O and live in
//! [`aerobridge_proto::feed`], re-exported here.

pub use aerobridge_proto::feed::*;

use crate::counters::Histogram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The origin id a feed message carries, if any.
pub fn origin_of(msg: &async_nats::Message) -> Option<&str> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(ORIGIN_HEADER))
        .map(|v| v.as_str())
}

/// The lease revision a standby-capable origin published a frame under, if any.
pub fn revision_of(msg: &async_nats::Message) -> Option<u64> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(aerobridge_proto::lease::REVISION_HEADER))
        .and_then(|v| v.as_str().parse().ok())
}

/// `nats://[USER:PASS@|TOKEN@]HOST:PORT/FEED` (or `tls://…`) → (server URL with its credentials,
/// FEED). The feed defaults to `default`.
pub fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let expected = |scheme: &str| {
        anyhow::anyhow!(
            "expected {scheme}://HOST:PORT/FEED (FEED: letters, digits, - and _), got {:?}",
            redact(url)
        )
    };
    let mut parsed = url::Url::parse(url).map_err(|_| expected("nats"))?;
    let scheme = parsed.scheme().to_string();
    if scheme != "nats" && scheme != "tls" {
        return Err(anyhow::anyhow!(
            "expected nats://HOST:PORT/FEED or tls://HOST:PORT/FEED, got {:?}",
            redact(url)
        ));
    }
    let feed = match parsed.path().trim_start_matches('/') {
        "" => "default".to_string(),
        feed => feed.to_string(),
    };
    let valid_feed = feed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if parsed.host_str().is_none_or(str::is_empty) || !valid_feed {
        return Err(expected(&scheme));
    }
    parsed.set_path("");
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok((parsed.as_str().trim_end_matches('/').to_string(), feed))
}

/// The URL with any user, password or token replaced by `***`: the only form that is logged.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority_end..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Credentials given in a URL's user-info part.
#[derive(PartialEq, Eq)]
pub enum UrlAuth {
    /// `USER:PASS@`.
    UserPassword(String, String),
    /// `TOKEN@`.
    Token(String),
}

impl std::fmt::Debug for UrlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlAuth::UserPassword(..) => "UserPassword(***)",
            UrlAuth::Token(_) => "Token(***)",
        })
    }
}

/// Splits the credentials off a server URL (async-nats does not read them from the URL):
/// `nats://bob:pw@host:4222` → (`nats://host:4222`, user and password). Percent-escapes in them
/// are decoded.
pub fn split_credentials(url: &str) -> (String, Option<UrlAuth>) {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return (url.to_string(), None);
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = match (parsed.username(), parsed.password()) {
        ("", None) => return (url.to_string(), None),
        (user, Some(pass)) => UrlAuth::UserPassword(decode(user), decode(pass)),
        (token, None) => UrlAuth::Token(decode(token)),
    };
    // A URL with a host can always lose its credentials.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    (
        parsed.as_str().trim_end_matches('/').to_string(),
        Some(auth),
    )
}

/// Credentials and TLS, as async-nats takes them. Secrets stay out of `Debug` and the logs.
#[derive(Clone, Default)]
pub struct Security {
    /// `--nats-creds`: a `.creds` file (user JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// `--nats-token` (or `AEROBRIDGE_NATS_TOKEN`).
    pub token: Option<String>,
    /// `--nats-tls-ca`: root certificates (PEM) to trust; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// `--nats-tls-cert` and `--nats-tls-key`: a client certificate; implies TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("creds", &self.creds)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .finish()
    }
}

impl Security {
    /// Connection options for `url` (its credentials, if any, taken out of it) as `role` (`origin`
    /// or `edge`, the client name the server shows): credentials, TLS, unlimited reconnects, and
    /// connection events counted in `stats`. Returns the URL to connect to, without credentials.
    pub async fn connect_options(
        &self,
        url: &str,
        role: &'static str,
        stats: std::sync::Arc<NatsStats>,
    ) -> std::io::Result<(String, async_nats::ConnectOptions)> {
        let (url, url_auth) = split_credentials(url);
        let mut options = match &self.creds {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("--nats-creds {}: {e}", path.display()))
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        match url_auth {
            Some(UrlAuth::UserPassword(user, pass)) => {
                options = options.user_and_password(user, pass);
            }
            Some(UrlAuth::Token(token)) => options = options.token(token),
            None => {}
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        // The logs name the server (the URL without credentials) and the cause.
        let server: std::sync::Arc<str> = url.as_str().into();
        Ok((
            url,
            options
                .name(format!("aerobridge-{role}"))
                .retry_on_initial_connect()
                .connection_timeout(std::time::Duration::from_secs(2))
                .event_callback(move |event| {
                    let (stats, server) = (
                        std::sync::Arc::clone(&stats),
                        std::sync::Arc::clone(&server),
                    );
                    async move {
                        // async-nats reports only "IO error": a plain connect says why.
                        let cause = match event {
                            async_nats::Event::ClientError(_) => Some(probe(&server).await),
                            _ => None,
                        };
                        stats.on_event(role, &server, &event, cause.as_deref())
                    }
                }),
        ))
    }
}
/// Why a NATS server cannot be reached, as a plain TCP connect to it sees it: `connection
/// refused`, a timeout, a name that does not resolve; or, when TCP works, that the NATS
/// handshake (credentials, TLS) is what fails.
async fn probe(server: &str) -> String {
    let host_port = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    match tokio::time::timeout(
        std::time::Duration::from_secs(1),
        tokio::net::TcpStream::connect(host_port.as_str()),
    )
    .await
    {
        Ok(Ok(_)) => "the server accepts TCP: the NATS handshake fails (credentials, TLS?)".into(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 1 s".into(),
    }
}

/// What one end of a NATS link counts (an origin and an edge each have their own).
#[derive(Debug, Default)]
pub struct NatsStats {
    /// 1 while connected to the NATS server.
    pub connected: AtomicU64,
    /// Origin with `--standby`: 1 while this origin holds the lease and publishes.
    pub active: AtomicU64,
    /// Origin with `--standby`: 1 (0 for an origin that always publishes).
    pub standby: AtomicU64,
    /// Origin with `--standby`: the lease revision it publishes under (0: none).
    pub lease_revision: AtomicU64,
    /// Origin with `--standby`: ms since its lease was last renewed.
    pub lease_age_ms: AtomicU64,
    /// Origin with `--standby`: times it took over the feed.
    pub takeovers: AtomicU64,
    /// Connections after the first (the client reconnects by itself).
    pub reconnects: AtomicU64,
    /// Failed connection attempts (unreachable, refused credentials, untrusted certificate).
    pub connect_failures: AtomicU64,
    /// Origin: frames published.
    pub published: AtomicU64,
    /// Edge: frames received on the feed.
    pub received: AtomicU64,
    /// Frames dropped, by [`Dropped`].
    pub dropped: [AtomicU64; <Dropped as strum::EnumCount>::COUNT],
    /// Origin: command requests answered. Edge: command requests sent.
    pub requests: AtomicU64,
    /// Edge: requests without an answer (timeout, or no origin).
    pub request_failures: AtomicU64,
    /// Origin: time to answer a request. Edge: round trip. One writer thread in each.
    pub request_time: Histogram,
    /// Edge: times it began following another origin (a restart, or a failover).
    pub origin_changes: AtomicU64,
    /// Connections so far (the first one is not a reconnect).
    connects: AtomicU64,
}

impl NatsStats {
    /// Counts a dropped frame.
    pub fn drop_frame(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts `n` of `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A connection event from the client (any thread).
    pub fn on_event(
        &self,
        role: &str,
        server: &str,
        event: &async_nats::Event,
        cause: Option<&str>,
    ) {
        match event {
            async_nats::Event::Connected => {
                self.connected.store(1, Relaxed);
                if self.connects.fetch_add(1, Relaxed) > 0 {
                    self.reconnects.fetch_add(1, Relaxed);
                    tracing::info!(role, server, "NATS: reconnected");
                }
            }
            async_nats::Event::Disconnected => {
                self.connected.store(0, Relaxed);
                tracing::warn!(role, server, "NATS: disconnected; reconnecting");
            }
            async_nats::Event::Closed => self.connected.store(0, Relaxed),
            async_nats::Event::ClientError(e) => {
                self.connect_failures.fetch_add(1, Relaxed);
                aerobridge_proto::limited!(crate::log_limit::NATS_LINK, std::time::Instant::now(),
                warn,
                role,
                server,
                error = %e,
                cause = cause.unwrap_or("unknown"),
                "NATS: cannot connect; retrying (check the address, the credentials and, for TLS, --nats-tls-ca)"
                )
            }
            other => tracing::warn!(role, event = %other, "NATS"),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_credentials_for_the_client_and_never_show_them() {
        assert_eq!(
            parse_url("nats://127.0.0.1:4222/class-a").unwrap(),
            ("nats://127.0.0.1:4222".into(), "class-a".into())
        );
        assert_eq!(parse_url("nats://host:4222").unwrap().1, "default");
        assert_eq!(
            parse_url("tls://bob:s3cret@host:4222/f").unwrap(),
            ("tls://bob:s3cret@host:4222".into(), "f".into())
        );
        assert!(parse_url("tcp://x:1/a").is_err());
        assert!(parse_url("nats://x:1/a.b").is_err(), "no subject tokens");
        assert!(parse_url("nats://tok@/a").is_err(), "no host");
        let e = parse_url("nats://bob:s3cret@x:1/a.b")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert_eq!(redact("nats://bob:s3cret@h:1/f"), "nats://***@h:1/f");
        assert_eq!(redact("nats://t0ken@h:1"), "nats://***@h:1");
        assert_eq!(redact("nats://h:1/f@x"), "nats://h:1/f@x");
        assert_eq!(
            split_credentials("tls://bob:p%40ss@h:1"),
            (
                "tls://h:1".into(),
                Some(UrlAuth::UserPassword("bob".into(), "p@ss".into()))
            )
        );
        assert_eq!(
            split_credentials("nats://t0k@h:1"),
            ("nats://h:1".into(), Some(UrlAuth::Token("t0k".into())))
        );
        assert_eq!(split_credentials("nats://h:1"), ("nats://h:1".into(), None));
        assert!(!format!("{:?}", split_credentials("nats://t0k@h:1").1).contains("t0k"));
        let s = Security {
            token: Some("t0ken".into()),
            ..Security::default()
        };
        assert!(!format!("{s:?}").contains("t0ken"));
        assert_eq!(subjects("a").frames, "aerobridge.a.frames");
        assert_eq!(subjects("a").commands, "aerobridge.a.commands");
    }
}
