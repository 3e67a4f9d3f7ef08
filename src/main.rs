//! `aerobridge`: parse options, start the server with the built-in flight model, wait for
//! SIGINT/SIGTERM, shut down cleanly.

use aerobridge::config::{Cli, Mode, SourceSpec};
use aerobridge::server::Server;
use aerobridge::source::sim::Sim;
use aerobridge::source::{relay::Relay, replay::Replay, Source};
use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let note = aerobridge::config::env_source_of(&e);
        let _ = e.print();
        if let Some(note) = note {
            eprintln!("{note}");
        }
        std::process::exit(e.exit_code())
    });
    let filter = std::env::var("RUST_LOG")
        .ok()
        .unwrap_or_else(|| cli.log.clone());
    // async-nats narrates every connection attempt at info; our own lines say what matters.
    let filter = if filter.contains("async_nats") {
        filter
    } else {
        format!("{filter},async_nats=warn")
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(Mode::Record(args)) = &cli.mode {
        return match aerobridge::record::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let spec = match cli.source_spec() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match cli.mode.clone() {
        Some(Mode::Echo(echo)) => Ok(echo.into_config()),
        _ => cli.into_config(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (signal_tx, signal_rx) = std::sync::mpsc::channel();
    // SIGINT (ctrlc) and, on Unix, SIGTERM stop the server; so does SIGHUP (a closed terminal),
    // unless TLS is on: then SIGHUP reloads the certificate.
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGTERM};
        let tx = signal_tx.clone();
        let stop_on: &[i32] = if config.tls.is_some() {
            &[SIGTERM]
        } else {
            &[SIGTERM, SIGHUP]
        };
        match signal_hook::iterator::Signals::new(stop_on) {
            Ok(mut signals) => {
                std::thread::spawn(move || {
                    if signals.forever().next().is_some() {
                        let _ = tx.send(());
                    }
                });
            }
            Err(e) => {
                eprintln!("error: cannot install the signal handler: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signal_tx.send(());
    }) {
        eprintln!("error: cannot install the signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let mut nats_edge = None;
    let source: Box<dyn Source> = match spec {
        SourceSpec::Sim => Box::new(Sim::new(std::time::SystemTime::now())),
        SourceSpec::Replay {
            path,
            speed,
            looping,
        } => match Replay::open(&path, speed, looping) {
            Ok(r) => Box::new(r),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        SourceSpec::Nats { server, feed } => {
            match aerobridge::source::nats::start(server, feed, &config.nats.security) {
                Ok(edge) => {
                    nats_edge = Some(edge.stats());
                    Box::new(edge)
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        SourceSpec::Relay { upstream, commands } => match Relay::start(upstream, commands) {
            Ok(r) => Box::new(r),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    let server = match Server::start(config, source, nats_edge) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let _ = signal_rx.recv();
    tracing::info!("signal received: shutting down");
    server.shutdown();
    ExitCode::SUCCESS
}
