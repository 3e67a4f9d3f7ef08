//! The TLS handshake on a TLS port, before the connection's session starts.
//!
//! Bounded like the WebSocket upgrade: the whole handshake must finish within
//! `--handshake-timeout` (a slowloris that trickles a ClientHello is cut), and nothing is read
//! while the peer is silent. Handshakes are CPU on the thread that also dispatches ticks, so each
//! worker spends at most `--tls-handshake-share` of every tick period on them
//! ([`HandshakeBudget`]); a ClientHello flood waits its turn while streaming clients get their
//! frames.

use super::link::{Link, Read};
use super::{io, tls_failed};
use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use aerobridge_proto::tls::{HandshakeBudget, TlsFailure, TlsLayer};
use compio::net::TcpStream;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    /// This worker thread's handshake budget (a worker is one thread).
    static BUDGET: RefCell<Option<HandshakeBudget>> = const { RefCell::new(None) };
}

/// What a finished handshake hands the connection: the link, the settings its session gets
/// (read-only for a client certificate not allowed to command), and its line for
/// `/connections`.
pub struct Established {
    /// The link, TLS inside.
    pub link: Link,
    /// The session settings.
    pub settings: Arc<crate::session::Settings>,
    /// `{"version":…,"cipher":…,"client_subject":…}` members for `/connections`.
    pub summary: String,
}

/// Runs the server side of a TLS handshake on `stream`.
pub async fn run(
    worker: &Rc<Worker>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<Established, Disconnect> {
    let tls = worker
        .app
        .tls
        .as_ref()
        .expect("a TLS listener runs only with a TLS setup");
    let layer = match TlsLayer::new(tls.config()) {
        Ok(layer) => layer,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a TLS connection");
            return Err(Disconnect::TlsFailed);
        }
    };
    let link = Link::tls(stream, layer);
    let within = worker.app.config.handshake_timeout;
    let outcome = compio::time::timeout(within, exchange(worker, &link))
        .await
        .unwrap_or(Err(TlsFailure::Timeout));
    if let Err(failure) = outcome {
        tracing::debug!(%peer, reason = failure.as_str(), "TLS handshake failed");
        tls_failed(worker, failure, "during the handshake");
        // The alert, if any, within a short grace: the peer may not read at all.
        let _ = compio::time::timeout(Duration::from_millis(250), link.close_write()).await;
        return Err(Disconnect::TlsFailed);
    }
    let negotiated = link.negotiated().expect("handshake done");
    tls.stats.handshake(&negotiated);
    tls.probe_kernel_tls(&link.stream);
    let subject = negotiated
        .client_certificate
        .as_deref()
        .and_then(crate::tls::subject);
    let settings = match &subject {
        Some(s) if !crate::access::certificate_may_command(&tls.settings.allow_commands, s) => {
            Arc::clone(&worker.app.sessions_certificate_read_only)
        }
        _ => Arc::clone(&worker.app.sessions),
    };
    let summary = serde_json::json!({
        "version": negotiated.version,
        "cipher": negotiated.cipher,
        "client_subject": subject,
    })
    .to_string();
    tracing::debug!(%peer, version = negotiated.version, cipher = negotiated.cipher, subject = subject.as_deref().unwrap_or("-"), "TLS established");
    Ok(Established {
        link,
        settings,
        summary,
    })
}

/// Reads and answers until the handshake is done.
async fn exchange(worker: &Worker, link: &Link) -> Result<(), TlsFailure> {
    loop {
        io::readable(&link.stream)
            .await
            .map_err(|_| TlsFailure::Abandoned)?;
        let (res, buf) = io::read_ready(&link.stream, worker.take_scratch()).await;
        let read = match res {
            Ok(0) => {
                worker.return_scratch(buf);
                Read::Eof
            }
            Ok(n) => {
                // The bytes wait for the budget in a buffer of their own (a ClientHello is a few
                // hundred bytes); the worker's scratch buffer goes back at once.
                let bytes = buf[buf.len() - n..].to_vec();
                worker.return_scratch(buf);
                // No await between the budget's yes and the spending: otherwise every waiting
                // handshake would pass the check before the first one paid.
                wait_for_budget(worker).await;
                let started = Instant::now();
                let read = link.open(&bytes);
                let took = started.elapsed();
                BUDGET.with(|b| {
                    if let Some(b) = b.borrow_mut().as_mut() {
                        b.spent(took);
                    }
                });
                read
            }
            Err(_) => {
                worker.return_scratch(buf);
                Read::Failed
            }
        };
        let result = match read {
            Read::Decrypted(plain) => {
                // Application data with the client's last flight (a pipelined request):
                // kept for the session.
                if !plain.is_empty() {
                    link.keep_early(plain);
                }
                Ok(())
            }
            Read::InBuffer => Ok(()),
            // A peer may finish the handshake and close in one flight (a probe, s_client).
            Read::Eof if !link.is_handshaking() => return Ok(()),
            Read::Eof | Read::Failed => Err(TlsFailure::Abandoned),
            Read::TlsFailed(failure) => Err(failure),
        };
        result?;
        link.flush().await.map_err(|_| TlsFailure::Abandoned)?;
        if !link.is_handshaking() {
            return Ok(());
        }
    }
}

/// Waits until this worker may spend time on a handshake step.
async fn wait_for_budget(worker: &Worker) {
    let tls = worker.app.tls.as_ref().expect("TLS setup");
    loop {
        let now = Instant::now();
        let verdict = BUDGET.with(|b| {
            b.borrow_mut()
                .get_or_insert_with(|| {
                    let window = worker.app.config.broadcast;
                    HandshakeBudget::new(window, window.mul_f64(tls.settings.handshake_share))
                })
                .may_run(now)
        });
        match verdict {
            Ok(()) => return,
            Err(at) => {
                tls.stats.deferred.fetch_add(1, Ordering::Relaxed);
                compio::time::sleep(at.saturating_duration_since(now)).await;
            }
        }
    }
}
