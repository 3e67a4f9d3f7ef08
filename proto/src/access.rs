//! Who may command the simulator: an optional shared token (`--command-token`), a read-only
//! switch, a per-connection rate limit, and the WebSocket Origin policy. No I/O.

use crate::command::CommandError;
use std::time::Instant;

/// The server-wide rules.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Commands need this token, when set.
    pub token: Option<String>,
    /// Refuse every command.
    pub read_only: bool,
    /// Commands per second per connection (sustained); bursts up to twice that.
    pub rate_per_second: u32,
    /// Browser origins allowed to upgrade (besides same-origin and loopback); `*` allows any.
    pub allowed_origins: Vec<String>,
    /// This connection's client certificate is not allowed to command (mutual TLS: see
    /// [`certificate_may_command`]); set on the connection's own copy of the policy.
    pub certificate_read_only: bool,
}

/// Mutual TLS: whether a client whose verified certificate has `subject` (as
/// `CN=cockpit-1, O=Club`) may send commands. `allowed` lists common names or whole subjects;
/// everyone else is read-only.
pub fn certificate_may_command(allowed: &[String], subject: &str) -> bool {
    allowed.iter().any(|a| {
        a == subject
            || subject
                .split(", ")
                .any(|part| part.strip_prefix("CN=") == Some(a.as_str()))
    })
}

/// One connection's standing: authenticated or not, and its token bucket.
#[derive(Debug)]
pub struct CommandGate {
    authorized: bool,
    tokens: f64,
    /// When the bucket was last refilled (`None`: never; it starts full).
    last: Option<Instant>,
    rate: f64,
    burst: f64,
    refused_for_rate: u32,
}

/// Rate-limited commands after which a connection is dropped as a flood. They are counted until
/// the connection has been quiet long enough to refill its whole burst: a client that keeps the
/// bucket empty is flooding even if a command gets through now and then as tokens trickle back.
pub const FLOOD_DISCONNECT_AFTER: u32 = 200;

impl CommandGate {
    /// A gate for a new connection; `presented` is a token it brought along (WebSocket header or
    /// query), checked in constant time.
    pub fn new(policy: &AccessPolicy, presented: Option<&str>) -> Self {
        let rate = policy.rate_per_second.max(1) as f64;
        let authorized = match (&policy.token, presented) {
            (None, _) => true,
            (Some(want), Some(got)) => ct_eq(want.as_bytes(), got.as_bytes()),
            (Some(_), None) => false,
        };
        Self {
            authorized,
            tokens: rate * 2.0,
            last: None,
            rate,
            burst: rate * 2.0,
            refused_for_rate: 0,
        }
    }

    /// Handles `{"auth": TOKEN}`.
    pub fn authenticate(
        &mut self,
        policy: &AccessPolicy,
        presented: &str,
    ) -> Result<(), CommandError> {
        match &policy.token {
            None => Ok(()),
            Some(want) if ct_eq(want.as_bytes(), presented.as_bytes()) => {
                self.authorized = true;
                Ok(())
            }
            Some(_) => Err(CommandError::Unauthorized { wrong_token: true }),
        }
    }

    /// Whether one more command may go to the source now.
    pub fn admit(&mut self, policy: &AccessPolicy, now: Instant) -> Result<(), CommandError> {
        // The rate limit applies to every attempt, so a flood of refused commands is a flood too.
        let elapsed = self.last.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= self.burst {
            self.refused_for_rate = 0; // quiet long enough: forgiven
        }
        if self.tokens < 1.0 {
            self.refused_for_rate += 1;
            return Err(CommandError::RateLimited {
                per_second: self.rate as u32,
            });
        }
        self.tokens -= 1.0;
        if policy.read_only {
            return Err(CommandError::ReadOnlyMode);
        }
        if policy.certificate_read_only {
            return Err(CommandError::CertificateNotAllowed);
        }
        if !self.authorized {
            return Err(CommandError::Unauthorized { wrong_token: false });
        }
        Ok(())
    }

    /// True once the connection kept sending far past its rate limit: disconnect it.
    pub fn is_flooding(&self) -> bool {
        self.refused_for_rate >= FLOOD_DISCONNECT_AFTER
    }
}

/// Compares secrets in constant time (`subtle`). Both sides are hashed first, so neither the
/// contents nor the length of the expected token shows in the time taken.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use sha1::{Digest, Sha1};
    use subtle::ConstantTimeEq;
    Sha1::digest(a)
        .as_slice()
        .ct_eq(Sha1::digest(b).as_slice())
        .into()
}

/// The token a WebSocket client brings: `Authorization: Bearer TOKEN` or `?token=TOKEN`.
pub fn presented_token<'a>(authorization: Option<&'a str>, target: &'a str) -> Option<String> {
    if let Some(t) = authorization.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
    }) {
        return Some(t.trim().to_string());
    }
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
}

/// A query-string value: `+` is a space, `%XX` a byte (`percent-encoding`).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether a browser at `origin` may open a WebSocket. Allowed: no `Origin` (not a browser),
/// same origin as the `Host` it connected to, loopback pages (`localhost`, `127.x`, `[::1]`),
/// and `--allowed-origin` entries (`*`: any). Everything else is refused with 403, so a page on
/// the internet cannot drive the simulator through a visitor's browser.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin.map(str::trim) else {
        return true;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin)
        .trim_end_matches('/');
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    let hostname = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
    };
    hostname.eq_ignore_ascii_case("localhost") || hostname == "::1" || hostname.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
        assert!(!ct_eq(b"", b"x"));
        assert!(ct_eq(b"", b""));
        // Lengths differing by a multiple of 256 must not compare equal.
        assert!(!ct_eq(&[0u8; 0], &[0u8; 256]));
    }

    #[test]
    fn token_and_read_only() {
        let policy = AccessPolicy {
            token: Some("t0k".into()),
            rate_per_second: 100,
            ..Default::default()
        };
        let now = Instant::now();
        let mut gate = CommandGate::new(&policy, None);
        assert_eq!(
            gate.admit(&policy, now),
            Err(CommandError::Unauthorized { wrong_token: false })
        );
        assert_eq!(
            gate.authenticate(&policy, "nope"),
            Err(CommandError::Unauthorized { wrong_token: true })
        );
        assert!(gate.authenticate(&policy, "t0k").is_ok());
        assert!(gate.admit(&policy, now).is_ok());
        let mut gate = CommandGate::new(&policy, Some("t0k"));
        assert!(gate.admit(&policy, now).is_ok());
        let ro = AccessPolicy {
            read_only: true,
            rate_per_second: 100,
            ..Default::default()
        };
        assert_eq!(
            CommandGate::new(&ro, None).admit(&ro, now),
            Err(CommandError::ReadOnlyMode)
        );
    }

    #[test]
    fn rate_limit_refills_and_floods_disconnect() {
        let policy = AccessPolicy {
            rate_per_second: 10,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut gate = CommandGate::new(&policy, None);
        for _ in 0..20 {
            assert!(gate.admit(&policy, t0).is_ok()); // burst of 2× the rate
        }
        assert_eq!(
            gate.admit(&policy, t0),
            Err(CommandError::RateLimited { per_second: 10 })
        );
        assert!(gate.admit(&policy, t0 + Duration::from_millis(150)).is_ok());
        // A command trickling through as tokens come back does not wipe the slate: a client
        // that keeps the bucket empty is a flood.
        let mut t = t0 + Duration::from_millis(150);
        for i in 1..FLOOD_DISCONNECT_AFTER {
            assert!(!gate.is_flooding(), "after {i} refusals");
            if i % 50 == 0 {
                t += Duration::from_millis(100); // one token back
                assert!(gate.admit(&policy, t).is_ok());
            }
            assert!(gate.admit(&policy, t).is_err());
        }
        assert!(gate.is_flooding());
        // Quiet long enough to refill the whole burst: forgiven.
        let mut quiet = CommandGate::new(&policy, None);
        for _ in 0..20 + FLOOD_DISCONNECT_AFTER - 1 {
            let _ = quiet.admit(&policy, t0);
        }
        let _ = quiet.admit(&policy, t0 + Duration::from_secs(3));
        let _ = quiet.admit(&policy, t0 + Duration::from_secs(3));
        assert!(!quiet.is_flooding());
    }

    #[test]
    fn tokens_from_header_or_query() {
        assert_eq!(presented_token(Some("Bearer abc"), "/"), Some("abc".into()));
        assert_eq!(
            presented_token(None, "/?x=1&token=a%2Bb"),
            Some("a+b".into())
        );
        assert_eq!(presented_token(None, "/"), None);
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed(None, Some("x:1"), &none));
        assert!(origin_allowed(Some("http://localhost:3000"), None, &none));
        assert!(origin_allowed(Some("http://127.0.0.1:8765"), None, &none));
        assert!(origin_allowed(Some("http://[::1]:8765"), None, &none));
        assert!(origin_allowed(
            Some("http://192.168.1.5:8765"),
            Some("192.168.1.5:8765"),
            &none
        ));
        assert!(!origin_allowed(
            Some("https://evil.example"),
            Some("127.0.0.1:8765"),
            &none
        ));
        assert!(!origin_allowed(
            Some("http://localhost.evil.example"),
            Some("127.0.0.1:8765"),
            &none
        ));
        let list = vec!["https://cockpit.example".to_string()];
        assert!(origin_allowed(Some("https://cockpit.example"), None, &list));
        assert!(origin_allowed(
            Some("https://any.example"),
            None,
            &["*".to_string()]
        ));
    }

    #[test]
    fn a_client_certificate_commands_only_when_its_cn_or_subject_is_listed() {
        let allowed = vec!["cockpit-1".to_string(), "CN=tracker, O=Club".to_string()];
        assert!(certificate_may_command(&allowed, "CN=cockpit-1, O=Club"));
        assert!(certificate_may_command(&allowed, "CN=tracker, O=Club"));
        assert!(!certificate_may_command(&allowed, "CN=cockpit-10, O=Club"));
        assert!(!certificate_may_command(&allowed, "CN=tracker, O=Other"));
        assert!(!certificate_may_command(&[], "CN=cockpit-1"));

        // The policy of a connection whose certificate is not listed refuses every command.
        let policy = AccessPolicy {
            rate_per_second: 10,
            certificate_read_only: true,
            ..AccessPolicy::default()
        };
        let mut gate = CommandGate::new(&policy, None);
        assert_eq!(
            gate.admit(&policy, Instant::now()),
            Err(CommandError::CertificateNotAllowed)
        );
    }
}
