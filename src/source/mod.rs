//! Where telemetry comes from. The tick loop owns one [`Source`]: it applies commands to it,
//! advances it, and encodes its [`Variables`]. The fan-out never sees the source, so a relay or a
//! replay plugs in here without touching anything downstream.

pub mod nats;
pub mod recording;
pub mod relay;
pub mod replay;
pub mod sim;
mod upstream;

use crate::command::{Command, CommandError};
use crate::telemetry::Variables;
use std::time::{Duration, SystemTime};

/// A provider of frames.
pub trait Source: Send + 'static {
    /// One line for the startup log, e.g. `built-in flight model (Baron 58, KSFO 28L pattern)`.
    fn describe(&self) -> String;

    /// Brings the state up to `now`; `dt` is the time since the previous call (zero the first
    /// time). Returns whether the data is live (`data_valid`).
    fn advance(&mut self, now: SystemTime, dt: Duration) -> bool;

    /// The values for the frame being built.
    fn variables(&self) -> &Variables;

    /// Applies a validated command; the next [`variables`](Self::variables) must show its effect.
    fn apply(&mut self, command: &Command) -> Result<(), CommandError>;

    /// What the tick calls: [`apply`](Self::apply), unless the command has to travel somewhere
    /// first (a relay hands it to its upstream bridge; the answer comes later, and the tick never
    /// waits for it).
    fn submit(&mut self, command: &Command) -> Applying {
        Applying::Done(self.apply(command))
    }

    /// How the tick is paced: on the fixed `--broadcast-ms` grid (default), or by the source's own
    /// updates (a relay re-broadcasts each upstream frame the moment it arrives).
    fn pacing(&self) -> Pacing {
        Pacing::Grid
    }

    /// For [`Pacing::Upstream`]: blocks until new data arrives (true) or `timeout` passes (false).
    fn wait_for_update(&mut self, timeout: Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }

    /// The `timestamp` for the frame, when the source has a wall-clock one (µs since the UNIX
    /// epoch) that should pass through, e.g. a relayed aerobridge's. `None`: stamp it now.
    fn frame_timestamp_us(&self) -> Option<u64> {
        None
    }

    /// The `update_counter` for the frame, when the source passes one through (a NATS feed keeps
    /// the origin's, so gaps and latency are measured across the hop). `None`: count our own.
    fn frame_counter(&self) -> Option<u64> {
        None
    }
}

/// How the hub paces frames for a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Fixed grid: `start + n·period`.
    Grid,
    /// One frame per source update; while the source is silent, a (stale) frame every 2 periods.
    Upstream,
}

/// The result of [`Source::submit`].
#[derive(Debug)]
pub enum Applying {
    /// Applied (or refused) now; the next frame shows it.
    Done(Result<(), CommandError>),
    /// On its way upstream: the answer arrives here (delivered, refused by upstream, or
    /// unreachable).
    Relayed(flume::Receiver<Result<(), CommandError>>),
}
