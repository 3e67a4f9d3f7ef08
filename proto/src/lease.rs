//! Standby origins without I/O: the lease an origin holds to publish a feed, and the fence an
//! edge keeps against an old leader (issue 23; the shell drives these with JetStream KV).
//!
//! # The lease
//! One key in a key-value bucket whose entries expire after [`LeaseTimes::ttl`] (nats-server
//! 2.9 has bucket-wide `max_age`, no per-message TTL). A candidate `create`s the key: only one
//! create succeeds while the key exists, and the winner is the leader with the entry's revision.
//! The leader `update`s the key with that revision every [`LeaseTimes::renew`], well inside the
//! TTL; an update carrying a revision that is no longer the latest fails, so a leader that lost
//! the key learns it at its next renewal and steps down at once. A leader that cannot renew for
//! [`LeaseTimes::self_fence`] stops publishing by itself, before the key can expire and another
//! take over, so two never publish at once. Standbys retry `create` every
//! [`LeaseTimes::retry`] (no delete event to wait for on 2.9): failover takes at most
//! `ttl + retry` after the leader died.
//!
//! # The fence
//! Every frame carries the leader's revision. An edge accepts frames only from the newest
//! revision it has seen ([`Fence`]): an old leader paused past its lease and woken up cannot
//! interleave stale frames.

use std::time::{Duration, Instant};

/// The header carrying the publishing leader's lease revision.
pub const REVISION_HEADER: &str = "Aerobridge-Lease";

/// The lease's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// The bucket's `max_age`: an entry not renewed for this long is gone.
    pub ttl: Duration,
    /// How often the leader renews.
    pub renew: Duration,
    /// How often a standby tries to take the key.
    pub retry: Duration,
    /// A leader that has not renewed for this long stops publishing (shorter than `ttl`).
    pub self_fence: Duration,
}

impl Default for LeaseTimes {
    /// A leader dies → clients resume within `ttl + retry` (1.5 s) plus the edges' switch.
    fn default() -> Self {
        LeaseTimes {
            ttl: Duration::from_millis(1200),
            renew: Duration::from_millis(300),
            retry: Duration::from_millis(300),
            self_fence: Duration::from_millis(900),
        }
    }
}

/// What the shell is to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// `create` the key (a standby's try).
    Create,
    /// `update` the key expecting `revision` (the leader's renewal).
    Renew {
        /// The revision the leader holds.
        revision: u64,
    },
    /// Nothing until the next poll.
    Wait,
}

/// Why the role changed (for the log and `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Change {
    /// A create succeeded: this origin leads now.
    TookOver,
    /// A renewal was refused: another origin holds the key.
    LostTheKey,
    /// No renewal succeeded for `self_fence`: stop before the key can expire.
    SelfFenced,
}

/// One origin's lease: standby or leader.
#[derive(Debug, Clone)]
pub struct Lease {
    times: LeaseTimes,
    role: Role,
    /// A step is in flight (not handed out twice).
    pending: bool,
    next: Instant,
    /// Times this origin took over.
    pub takeovers: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Standby,
    Leader { revision: u64, renewed: Instant },
}

impl Lease {
    /// A candidate, starting as a standby that tries at once.
    pub fn new(times: LeaseTimes, now: Instant) -> Lease {
        Lease {
            times,
            role: Role::Standby,
            pending: false,
            next: now,
            takeovers: 0,
        }
    }

    /// The revision this origin publishes under, when it leads and may publish now.
    pub fn publishing(&self, now: Instant) -> Option<u64> {
        match self.role {
            Role::Leader { revision, renewed } if now - renewed < self.times.self_fence => {
                Some(revision)
            }
            _ => None,
        }
    }

    /// The lease's age (since the last successful create or renewal), when leading.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        match self.role {
            Role::Leader { renewed, .. } => Some(now - renewed),
            Role::Standby => None,
        }
    }

    /// What to do now; `Some(change)` when the role changed by time alone (self-fencing).
    pub fn poll(&mut self, now: Instant) -> (LeaseStep, Option<Change>) {
        let mut change = None;
        if let Role::Leader { renewed, .. } = self.role {
            if now - renewed >= self.times.self_fence {
                self.role = Role::Standby;
                self.pending = false;
                self.next = now + self.times.retry;
                change = Some(Change::SelfFenced);
            }
        }
        if self.pending || now < self.next {
            return (LeaseStep::Wait, change);
        }
        self.pending = true;
        let step = match self.role {
            Role::Standby => LeaseStep::Create,
            Role::Leader { revision, .. } => LeaseStep::Renew { revision },
        };
        (step, change)
    }

    /// The create succeeded with `revision`: this origin leads.
    pub fn created(&mut self, revision: u64, at: Instant) -> Change {
        self.pending = false;
        self.role = Role::Leader {
            revision,
            renewed: at,
        };
        self.next = at + self.times.renew;
        self.takeovers += 1;
        Change::TookOver
    }

    /// The create failed (the key exists: another origin leads, or the server is away).
    pub fn create_failed(&mut self, now: Instant) {
        self.pending = false;
        self.next = now + self.times.retry;
    }

    /// The renewal succeeded with the entry's new `revision`. `sent` is when it was sent: the
    /// lease runs from then, not from the answer, so a slow answer cannot stretch it.
    pub fn renewed(&mut self, revision: u64, sent: Instant) {
        self.pending = false;
        if let Role::Leader { .. } = self.role {
            self.role = Role::Leader {
                revision,
                renewed: sent,
            };
            self.next = sent + self.times.renew;
        }
    }

    /// The renewal was refused (a wrong last revision: the key is someone else's): step down at
    /// once. A renewal that merely failed to arrive (`refused: false`) is retried; the
    /// self-fence bounds how long that can go on.
    pub fn renew_failed(&mut self, refused: bool, now: Instant) -> Option<Change> {
        self.pending = false;
        if refused {
            self.role = Role::Standby;
            self.next = now + self.times.retry;
            Some(Change::LostTheKey)
        } else {
            self.next = now + self.times.renew / 3;
            None
        }
    }
}

/// An edge's fence: frames only from the newest lease revision seen.
#[derive(Debug, Default, Clone)]
pub struct Fence {
    newest: Option<u64>,
    /// Frames refused as coming from an older leader.
    pub refused: u64,
}

impl Fence {
    /// Whether a frame published under `revision` may go on. Frames without a revision (an
    /// origin without `--standby`) pass: there is nothing to fence.
    pub fn admit(&mut self, revision: Option<u64>) -> bool {
        let Some(r) = revision else { return true };
        match self.newest {
            Some(n) if r < n => {
                self.refused += 1;
                false
            }
            _ => {
                self.newest = Some(r);
                true
            }
        }
    }

    /// The newest revision seen.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times() -> LeaseTimes {
        LeaseTimes::default()
    }

    #[test]
    fn a_standby_creates_leads_renews_and_is_never_asked_twice_at_once() {
        let t0 = Instant::now();
        let mut lease = Lease::new(times(), t0);
        assert_eq!(lease.poll(t0), (LeaseStep::Create, None));
        assert_eq!(
            lease.poll(t0),
            (LeaseStep::Wait, None),
            "one create in flight"
        );
        assert_eq!(lease.publishing(t0), None);
        assert_eq!(lease.created(7, t0), Change::TookOver);
        assert_eq!(lease.publishing(t0), Some(7));
        let renew_at = t0 + times().renew;
        assert_eq!(
            lease.poll(renew_at - Duration::from_millis(1)).0,
            LeaseStep::Wait
        );
        assert_eq!(lease.poll(renew_at).0, LeaseStep::Renew { revision: 7 });
        lease.renewed(8, renew_at);
        assert_eq!(lease.publishing(renew_at), Some(8));
        assert_eq!(
            lease.age(renew_at + Duration::from_millis(5)),
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn a_refused_renewal_steps_down_at_once_and_silence_self_fences_before_the_ttl() {
        let t0 = Instant::now();
        let mut lease = Lease::new(times(), t0);
        lease.poll(t0);
        lease.created(3, t0);
        let t1 = t0 + times().renew;
        lease.poll(t1);
        assert_eq!(lease.renew_failed(true, t1), Some(Change::LostTheKey));
        assert_eq!(lease.publishing(t1), None);
        assert_eq!(lease.poll(t1 + times().retry).0, LeaseStep::Create);
        // A leader whose renewals do not get through stops publishing at self_fence < ttl.
        let mut lease = Lease::new(times(), t0);
        lease.poll(t0);
        lease.created(3, t0);
        let mut now = t0;
        while now < t0 + times().ttl {
            now += Duration::from_millis(50);
            if let (LeaseStep::Renew { .. }, _) = lease.poll(now) {
                assert_eq!(lease.renew_failed(false, now), None, "not refused: retried");
            }
            if now - t0 >= times().self_fence {
                assert_eq!(lease.publishing(now), None, "self-fenced at {:?}", now - t0);
            } else {
                assert_eq!(lease.publishing(now), Some(3));
            }
        }
        assert!(times().self_fence < times().ttl);
    }

    #[test]
    fn a_failed_create_retries_after_the_retry_period() {
        let t0 = Instant::now();
        let mut lease = Lease::new(times(), t0);
        lease.poll(t0);
        lease.create_failed(t0);
        assert_eq!(lease.poll(t0 + times().retry / 2).0, LeaseStep::Wait);
        assert_eq!(lease.poll(t0 + times().retry).0, LeaseStep::Create);
    }

    #[test]
    fn the_fence_refuses_an_old_leaders_frames_and_passes_unleased_ones() {
        let mut fence = Fence::default();
        assert!(fence.admit(Some(5)));
        assert!(fence.admit(Some(5)));
        assert!(fence.admit(Some(9)), "a new leader");
        assert!(!fence.admit(Some(5)), "the old one woke up");
        assert!(fence.admit(None));
        assert_eq!((fence.refused, fence.newest()), (1, Some(9)));
    }
}
