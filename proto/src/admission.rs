//! Fair admission: established clients are served before new connections are taken on.

use std::time::Duration;

/// How many new connections a worker takes on per tick: up to the configured share of
/// `--admission-rate`, fewer while ticks reach the worker late. Each new connection costs the
/// worker its handshake and first frames; when that work makes the worker dispatch a tick more
/// than an eighth of a period late, the budget halves, and it grows back by one (plus an
/// eighth) per tick while ticks are on time (under a sixteenth of a period late). So a slower
/// build or a busy machine admits more slowly instead of making established clients skip
/// frames.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionBudget {
    max: usize,
    current: usize,
    period: Duration,
}

impl AdmissionBudget {
    /// A budget of at most `max` per tick at `period`, starting low (a flood at startup).
    pub fn new(max: usize, period: Duration) -> Self {
        Self {
            max: max.max(1),
            current: 1,
            period,
        }
    }

    /// The budget now (before the next tick).
    pub fn current(&self) -> usize {
        self.current
    }

    /// A tick reached the worker `late` after it was built: returns the budget for this tick.
    pub fn on_tick(&mut self, late: Duration) -> usize {
        if late > self.period / 8 {
            self.current = (self.current / 2).max(1);
        } else if late < self.period / 16 {
            self.current = (self.current + self.current / 8 + 1).min(self.max);
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(20);

    #[test]
    fn starts_low_grows_while_ticks_are_on_time_and_never_past_its_share() {
        let mut b = AdmissionBudget::new(100, PERIOD);
        let on_time = Duration::from_micros(100);
        let budgets: Vec<usize> = (0..6).map(|_| b.on_tick(on_time)).collect();
        assert_eq!(budgets, [2, 3, 4, 5, 6, 7]);
        let mut last = 0;
        for _ in 0..200 {
            last = b.on_tick(on_time);
        }
        assert_eq!(last, 100, "up to the configured share");
    }

    #[test]
    fn halves_when_a_tick_arrives_late_and_holds_in_between() {
        let mut b = AdmissionBudget::new(1000, PERIOD);
        for _ in 0..100 {
            b.on_tick(Duration::ZERO);
        }
        let full = b.on_tick(Duration::ZERO);
        assert_eq!(b.on_tick(PERIOD / 4), full / 2, "late: halves");
        assert_eq!(b.on_tick(PERIOD / 4), full / 4);
        // Between a sixteenth and an eighth late: neither grows nor shrinks.
        assert_eq!(b.on_tick(PERIOD / 10), full / 4);
        for _ in 0..20 {
            b.on_tick(PERIOD);
        }
        assert_eq!(b.on_tick(PERIOD), 1, "never below one");
    }
}
