//! What the TCP relay ([`super::relay`]) and the NATS edge ([`super::nats`]) share: a reader on a
//! thread of its own fills a mailbox (`T`: each source says what it keeps) and wakes the tick;
//! commands go to a forwarder thread, one line at a time, and their answers come back later
//! (the tick never waits for them). The two sources differ only in what the mailbox holds and
//! in the rules that turn it into frames.

use super::Applying;
use crate::command::{Command, CommandError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A reader thread, its mailbox, and a command forwarder.
pub(crate) struct Upstream<T> {
    /// What the reader left for the tick.
    pub(crate) mailbox: Arc<Mutex<T>>,
    updates: flume::Receiver<()>,
    commands: flume::Sender<(String, flume::Sender<Result<(), CommandError>>)>,
}

impl<T: Default + Send + 'static> Upstream<T> {
    /// Starts `reader` (it fills the mailbox and sends on the channel to wake the tick) and
    /// `forward` (one command line; its answer) on threads named `aerobridge-KIND` and
    /// `aerobridge-KIND-commands`.
    pub(crate) fn start(
        kind: &str,
        reader: impl FnOnce(Arc<Mutex<T>>, flume::Sender<()>) + Send + 'static,
        forward: impl Fn(&str) -> Result<(), CommandError> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let mailbox = Arc::new(Mutex::new(T::default()));
        let (updated, updates) = flume::bounded(1);
        {
            let mailbox = Arc::clone(&mailbox);
            std::thread::Builder::new()
                .name(format!("aerobridge-{kind}"))
                .spawn(move || reader(mailbox, updated))?;
        }
        let (tx, rx) = flume::bounded::<(String, flume::Sender<Result<(), CommandError>>)>(256);
        std::thread::Builder::new()
            .name(format!("aerobridge-{kind}-commands"))
            .spawn(move || {
                for (line, answer) in rx.iter() {
                    let _ = answer.send(forward(&line));
                }
            })?;
        Ok(Self {
            mailbox,
            updates,
            commands: tx,
        })
    }
}

impl<T> Upstream<T> {
    /// Waits until the reader says something arrived (true) or `timeout` passes (false).
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        self.updates.recv_timeout(timeout).is_ok()
    }

    /// Waits until the reader says something arrived (true) or `deadline` passes (false).
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        self.updates.recv_deadline(deadline).is_ok()
    }

    /// Hands `command` to the forwarder as an upstream command line; the answer comes later.
    pub(crate) fn submit(&self, command: &Command) -> Applying {
        let mut line = Vec::new();
        line.extend_from_slice(b"{\"variable\":");
        crate::telemetry::encoder::write_json_string(&mut line, command.name.name);
        line.extend_from_slice(b",\"value\":");
        crate::telemetry::encoder::write_number(&mut line, command.value);
        line.extend_from_slice(b"}\n");
        let (answer, answered) = flume::bounded(1);
        match self
            .commands
            .try_send((String::from_utf8(line).expect("ASCII JSON"), answer))
        {
            Ok(()) => Applying::Relayed(answered),
            Err(_) => Applying::Done(Err(CommandError::Busy)),
        }
    }

    /// [`submit`](Self::submit), waiting for the answer (`Source::apply`).
    pub(crate) fn apply(&self, command: &Command) -> Result<(), CommandError> {
        match self.submit(command) {
            Applying::Done(result) => result,
            Applying::Relayed(answer) => answer.recv().unwrap_or(Err(CommandError::Busy)),
        }
    }
}
