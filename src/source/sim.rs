//! The built-in flight model as a [`Source`]: the model itself performs no I/O and reads no
//! clock ([`aerobridge_proto::sim`]); this is the shell's view of it.

use super::Source;
use crate::command::{Command, CommandError};
use crate::telemetry::Variables;
use std::time::{Duration, SystemTime};

pub use aerobridge_proto::sim::Sim;

impl Source for Sim {
    fn describe(&self) -> String {
        Sim::describe(self)
    }

    fn advance(&mut self, now: SystemTime, dt: Duration) -> bool {
        Sim::advance(self, now, dt)
    }

    fn variables(&self) -> &Variables {
        Sim::variables(self)
    }

    fn apply(&mut self, command: &Command) -> Result<(), CommandError> {
        Sim::apply(self, command)
    }
}
