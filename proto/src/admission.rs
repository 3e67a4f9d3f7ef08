//! Fair admission: established clients are served before new connections are taken on.

use std::time::Duration;

/// How many new connections a worker takes on per tick: up to the configured share of
/// `--admission-rate`, fewer while ticks reach the worker late. Each new connection costs the
/// worker its handshake and first frames; when that work makes the worker dispatch a tick more
/// than a quarter of a period late, the budget halves (never below [`MIN_PER_SECOND`]), and it
/// grows back by one (plus an eighth) per tick while ticks are on time (under an eighth of a
/// period late). So a slower build or a busy machine admits more slowly instead of making
/// established clients skip frames.
///
/// Why a quarter: a worker that falls several periods behind hands the waiting ticks out as its
/// writers take them (see the worker loop), so a quarter period late is far from harm, yet well
/// above a loaded host's scheduling jitter. At an eighth (2.5 ms at 50 Hz), that jitter alone
/// kept halving the budget on the 2-core development machine: 3 600–7 400 admitted/s of 10 000
/// offered, against 7 200–10 000/s at a quarter (`loadtest --scenario flood`).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionBudget {
    max: usize,
    /// Never fewer than this per tick: [`MIN_PER_SECOND`] whatever the tick rate, so a slow
    /// broadcast (1 Hz) still admits a crowd in seconds.
    min: usize,
    current: usize,
    period: Duration,
}

/// The least a worker admits per second, however late its ticks are.
pub const MIN_PER_SECOND: f64 = 1_000.0;

impl AdmissionBudget {
    /// A budget of at most `max` per tick at `period`, starting low (a flood at startup).
    pub fn new(max: usize, period: Duration) -> Self {
        let max = max.max(1);
        let min = ((MIN_PER_SECOND * period.as_secs_f64()).ceil() as usize).clamp(1, max);
        Self {
            max,
            min,
            current: min,
            period,
        }
    }

    /// The budget now (before the next tick).
    pub fn current(&self) -> usize {
        self.current
    }

    /// A tick reached the worker `late` after it was built: returns the budget for this tick.
    pub fn on_tick(&mut self, late: Duration) -> usize {
        if late > self.period / 4 {
            self.current = (self.current / 2).max(self.min);
        } else if late < self.period / 8 {
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
        assert_eq!(b.current(), 20, "1 000 a second at 50 Hz");
        let on_time = Duration::from_micros(100);
        let budgets: Vec<usize> = (0..4).map(|_| b.on_tick(on_time)).collect();
        assert_eq!(budgets, [23, 26, 30, 34]);
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
        assert_eq!(b.on_tick(PERIOD / 3), full / 2, "late: halves");
        assert_eq!(b.on_tick(PERIOD / 3), full / 4);
        // Between an eighth and a quarter late: neither grows nor shrinks.
        assert_eq!(b.on_tick(PERIOD / 5), full / 4);
        for _ in 0..20 {
            b.on_tick(PERIOD);
        }
        assert_eq!(b.on_tick(PERIOD), 20, "never below 1 000 a second");
        // A slow broadcast still admits a crowd at once: 1 000 a tick at 1 Hz.
        let slow = AdmissionBudget::new(5_000, Duration::from_secs(1));
        assert_eq!(slow.current(), 1_000);
    }
}
