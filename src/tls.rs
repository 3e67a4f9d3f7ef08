//! TLS in the shell: certificates from files (checked at startup, reloaded on SIGHUP and when
//! the files change), the rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3, optional mutual
//! TLS), the kernel-TLS probe, and the counters `/metrics` shows. What happens to bytes is the
//! core's [`aerobridge_proto::tls::TlsLayer`]; this module only decides which configuration a new
//! connection gets.

use aerobridge_proto::tls::TlsFailure;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use strum::EnumCount as _;

/// Which ports speak TLS (`--tls-ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlsPorts {
    /// The WebSocket port (wss://, the dashboard over https).
    pub ws: bool,
    /// The TCP data port.
    pub data: bool,
    /// The TCP command port.
    pub commands: bool,
}

impl std::str::FromStr for TlsPorts {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut ports = TlsPorts::default();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.parse::<Service>() {
                Ok(Service::Ws) => ports.ws = true,
                Ok(Service::Data) => ports.data = true,
                Ok(Service::Commands) => ports.commands = true,
                Err(_) => {
                    return Err(format!(
                        "unknown port '{word}' (expected ws, data, commands)"
                    ))
                }
            }
        }
        Ok(ports)
    }
}

/// One of the three services, as `--tls-ports` and `--plain-port` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
pub enum Service {
    /// The WebSocket port.
    #[strum(serialize = "ws", serialize = "websocket")]
    Ws,
    /// The TCP data port.
    #[strum(serialize = "data")]
    Data,
    /// The TCP command port.
    #[strum(serialize = "commands", serialize = "command")]
    Commands,
}

impl Service {
    /// The name `--plain-port` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Ws => "ws",
            Service::Data => "data",
            Service::Commands => "commands",
        }
    }

    /// Whether `ports` makes this service speak TLS.
    pub fn is_in(self, ports: TlsPorts) -> bool {
        match self {
            Service::Ws => ports.ws,
            Service::Data => ports.data,
            Service::Commands => ports.commands,
        }
    }
}

/// `--plain-port SERVICE=PORT`: a plaintext listener beside a TLS one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainPort {
    /// Which service.
    pub service: Service,
    /// Its plaintext port (0 picks a free one).
    pub port: u16,
}

impl std::str::FromStr for PlainPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (service, port) = s
            .split_once('=')
            .ok_or_else(|| format!("expected SERVICE=PORT (ws=8764), got '{s}'"))?;
        Ok(PlainPort {
            service: service.trim().parse().map_err(|_| {
                format!("unknown service '{service}' (expected ws, data, commands)")
            })?,
            port: port
                .trim()
                .parse()
                .map_err(|e| format!("bad port '{port}': {e}"))?,
        })
    }
}

/// Whether to try kernel TLS after a handshake (`--ktls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum KtlsMode {
    /// Probe the kernel; fall back to user-space TLS when it has no TLS ULP.
    Auto,
    /// Never probe.
    Off,
}

/// The TLS options, as given.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates: clients must present a certificate they signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Which ports speak TLS.
    pub ports: TlsPorts,
    /// Common names of the client certificates allowed to send commands.
    pub allow_commands: Vec<String>,
    /// Share of each tick a worker may spend in handshakes.
    pub handshake_share: f64,
    /// Kernel TLS.
    pub ktls: KtlsMode,
}

/// A certificate setup that cannot serve: a clear startup error (or a refused reload).
#[derive(Debug)]
pub struct TlsLoadError(pub String);

impl std::fmt::Display for TlsLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsLoadError {}

/// The provider every config uses (ring: no build tools beyond a C compiler).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's provider: AES-128-GCM first. Every byte of every frame is sealed once per
/// client, so the cipher is most of what TLS costs here; AES-128 is a third cheaper than
/// AES-256 and as sound for this data (browsers prefer it too). ChaCha20 stays for clients
/// without AES hardware.
pub fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite as C;
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| match s.suite() {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        C::TLS13_CHACHA20_POLY1305_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 2,
        _ => 1,
    };
    // Stable: TLS 1.3 suites stay ahead of TLS 1.2 ones within each rank's order.
    provider
        .cipher_suites
        .sort_by_key(|s| (s.version() != &rustls::version::TLS13, rank(s)));
    Arc::new(provider)
}

/// Builds a `ServerConfig` from the files, checking everything a user can get wrong.
pub fn load(settings: &TlsSettings, now: SystemTime) -> Result<ServerConfig, TlsLoadError> {
    let err = |s: String| TlsLoadError(s);
    let certs = read_certs(&settings.cert, "--tls-cert")?;
    check_validity(&certs[0], &settings.cert, now)?;
    let key_pem = std::fs::read(&settings.key).map_err(|e| {
        err(format!(
            "cannot read --tls-key {}: {e}",
            settings.key.display()
        ))
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        err(format!(
            "--tls-key {} holds no PEM private key ({e}); expected -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY",
            settings.key.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err(format!("TLS setup: {e}")))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_certs(path, "--tls-client-ca")? {
                roots.add(ca).map_err(|e| {
                    err(format!(
                        "--tls-client-ca {}: not a usable CA certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| err(format!("--tls-client-ca {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => err(format!(
            "--tls-key {} does not belong to the certificate in --tls-cert {}",
            settings.key.display(),
            settings.cert.display()
        )),
        e => err(format!(
            "--tls-key {} cannot be used with --tls-cert {}: {e}",
            settings.key.display(),
            settings.cert.display()
        )),
    })?;
    // Our order (AES-128-GCM first), not the client's: see `server_provider`.
    config.ignore_client_order = true;
    // The dashboard and WebSocket clients speak HTTP/1.1 (an upgrade has no h2 form here).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Kernel TLS needs the keys; extraction is off unless the kernel can take them.
    config.enable_secret_extraction = false;
    // No resumption. A TLS 1.3 resumption still does the key exchange, so it would save only
    // the signature, while the tickets cost every handshake a write and the stateful cache an
    // O(n) eviction scan (11% of a handshake storm's CPU at 4096 entries).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let pem = std::fs::read(path)
        .map_err(|e| TlsLoadError(format!("cannot read {flag} {}: {e}", path.display())))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsLoadError(format!("{flag} {}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsLoadError(format!(
            "{flag} {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----; DER files need converting: openssl x509 -inform der -in FILE -out FILE.pem)",
            path.display()
        )));
    }
    Ok(certs)
}

fn check_validity(
    cert: &CertificateDer<'_>,
    path: &Path,
    now: SystemTime,
) -> Result<(), TlsLoadError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
        TlsLoadError(format!(
            "--tls-cert {}: not an X.509 certificate: {e}",
            path.display()
        ))
    })?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let validity = parsed.validity();
    if now > validity.not_after.timestamp() {
        return Err(TlsLoadError(format!(
            "--tls-cert {} expired on {} ({})",
            path.display(),
            validity.not_after,
            parsed.subject()
        )));
    }
    if now < validity.not_before.timestamp() {
        return Err(TlsLoadError(format!(
            "--tls-cert {} is not valid before {} ({})",
            path.display(),
            validity.not_before,
            parsed.subject()
        )));
    }
    Ok(())
}

/// The subject of a client certificate, as `/connections` shows it and `--tls-allow-commands`
/// matches it (e.g. `CN=cockpit-1, O=Sim Club`).
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

/// Kernel TLS as far as this process has found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KtlsState {
    /// Not probed yet (no TLS connection so far, or `--ktls off`).
    Unknown = 0,
    /// The kernel has no TLS ULP: user-space TLS for every connection.
    Unavailable = 1,
    /// The kernel accepted the TLS ULP. Key hand-over is not built yet, so connections are
    /// still encrypted in user space.
    Present = 2,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Failures by [`TlsFailure`].
    pub failures: [AtomicU64; TlsFailure::COUNT],
    /// Completed handshakes by version: TLS 1.3, TLS 1.2.
    pub versions: [AtomicU64; 2],
    /// Completed handshakes by cipher suite.
    pub ciphers: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Handshake steps that waited for the next window (`--tls-handshake-share`).
    pub deferred: AtomicU64,
    /// Certificate reloads that took effect, and that were refused (the old one stays).
    pub reloads: AtomicU64,
    /// Reloads refused.
    pub reload_failures: AtomicU64,
    /// Connections encrypted in user space because kernel TLS was not available.
    pub user_space: AtomicU64,
    /// [`KtlsState`].
    pub ktls: AtomicU8,
    /// Client certificates seen (mutual TLS).
    pub client_certificates: AtomicU64,
}

impl TlsStats {
    /// Counts a completed handshake.
    pub fn handshake(&self, negotiated: &aerobridge_proto::tls::Negotiated) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        let v = usize::from(negotiated.version != "TLSv1.3");
        self.versions[v].fetch_add(1, Ordering::Relaxed);
        *self
            .ciphers
            .lock()
            .expect("poisoned")
            .entry(negotiated.cipher)
            .or_default() += 1;
        if negotiated.client_certificate.is_some() {
            self.client_certificates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failure.
    pub fn failure(&self, failure: TlsFailure) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The kernel-TLS state.
    pub fn ktls_state(&self) -> KtlsState {
        match self.ktls.load(Ordering::Relaxed) {
            1 => KtlsState::Unavailable,
            2 => KtlsState::Present,
            _ => KtlsState::Unknown,
        }
    }
}

/// The server's TLS: the configuration new connections get, its settings, its counters.
pub struct Tls {
    current: RwLock<Arc<ServerConfig>>,
    /// The options.
    pub settings: TlsSettings,
    /// Counters.
    pub stats: TlsStats,
    probed: AtomicBool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate and key (a clear error when they cannot serve).
    pub fn new(settings: TlsSettings) -> Result<Arc<Tls>, TlsLoadError> {
        let config = load(&settings, SystemTime::now())?;
        Ok(Arc::new(Tls {
            current: RwLock::new(Arc::new(config)),
            settings,
            stats: TlsStats::default(),
            probed: AtomicBool::new(false),
        }))
    }

    /// The configuration for a new connection (connections keep the one they started with).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().expect("poisoned"))
    }

    /// Loads the files again; on error the current configuration stays and the error is logged.
    pub fn reload(&self, why: &str) -> bool {
        match load(&self.settings, SystemTime::now()) {
            Ok(config) => {
                *self.current.write().expect("poisoned") = Arc::new(config);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.settings.cert.display(), why, "TLS certificate reloaded: new connections get it, connected clients keep theirs");
                true
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, why, "TLS certificate reload refused; still serving the previous certificate");
                false
            }
        }
    }

    /// Reloads on SIGHUP and when the certificate or key file changes (polled), until `stop`.
    pub fn spawn_reloader(self: &Arc<Self>, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        // Set by SIGHUP (Unix); elsewhere only file changes reload.
        let hup = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
        let tls = Arc::clone(self);
        std::thread::Builder::new()
            .name("aerobridge-tls-reload".into())
            .spawn(move || {
                let stamp = |s: &TlsSettings| {
                    [Some(&s.cert), Some(&s.key), s.client_ca.as_ref()]
                        .into_iter()
                        .flatten()
                        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                        .collect::<Vec<_>>()
                };
                let mut seen = stamp(&tls.settings);
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(250));
                    if hup.swap(false, Ordering::AcqRel) {
                        tls.reload("SIGHUP");
                        seen = stamp(&tls.settings);
                        continue;
                    }
                    let now = stamp(&tls.settings);
                    if now != seen {
                        // A writer may still be writing: wait until the stamps hold still.
                        std::thread::sleep(Duration::from_millis(250));
                        let settled = stamp(&tls.settings);
                        if settled == now {
                            tls.reload("file changed");
                            seen = settled;
                        }
                    }
                }
            })?;
        Ok(())
    }

    /// After a handshake: tries to attach the kernel's TLS ULP to `socket` once per process;
    /// without it (this kernel: ENOENT) every connection stays in user space, logged once.
    pub fn probe_kernel_tls(&self, socket: &compio::net::TcpStream) {
        if self.settings.ktls == KtlsMode::Off {
            return;
        }
        if !self.probed.swap(true, Ordering::AcqRel) {
            let state = ktls_probe(socket);
            self.stats.ktls.store(state as u8, Ordering::Relaxed);
            match state {
                KtlsState::Unavailable => tracing::info!(
                    "kernel TLS unavailable (no tls ULP in this kernel): encrypting in user space (rustls)"
                ),
                KtlsState::Present => tracing::info!(
                    "kernel TLS present, but handing keys to the kernel is not built yet: encrypting in user space (rustls)"
                ),
                KtlsState::Unknown => {}
            }
        }
        self.stats.user_space.fetch_add(1, Ordering::Relaxed);
    }
}

/// `setsockopt(TCP_ULP, "tls")`: ENOENT means no TLS module. A ULP with no keys configured
/// passes bytes through unchanged, so a successful probe does not disturb the connection.
#[cfg(target_os = "linux")]
fn ktls_probe(socket: &compio::net::TcpStream) -> KtlsState {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let name = b"tls";
    #[allow(unsafe_code)]
    // SAFETY: a valid fd and a pointer/length pair into a live byte string.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        KtlsState::Present
    } else {
        KtlsState::Unavailable
    }
}

#[cfg(not(target_os = "linux"))]
fn ktls_probe(_socket: &compio::net::TcpStream) -> KtlsState {
    KtlsState::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_refuse_unknown_names() {
        let p: TlsPorts = "ws,data".parse().unwrap();
        assert!(p.ws && p.data && !p.commands);
        assert!("ws,ftp".parse::<TlsPorts>().unwrap_err().contains("ftp"));
        let p: PlainPort = "ws=8764".parse().unwrap();
        assert_eq!((p.service, p.port), (Service::Ws, 8764));
        assert!("ws:8764".parse::<PlainPort>().is_err());
    }
}
