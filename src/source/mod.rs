//! Where telemetry comes from. The tick loop owns one [`Source`]: it applies commands to it,
//! advances it, and encodes its [`Variables`]. The fan-out never sees the source, so a relay or a
//! replay plugs in here without touching anything downstream.

pub mod relay;
pub mod replay;
pub mod sim;

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
}
