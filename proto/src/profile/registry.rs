//! The server-wide profile table. A [`ProfileRef`] keeps its profile alive; when the last one is
//! dropped (every subscriber gone, parked sessions expired) the profile leaves the table and the
//! tick stops building it. Subscribing and unsubscribing take a mutex; the tick reads the table
//! only when its generation changed.

use super::{ProfileKey, ProfileMsg};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// What a profile shares with the tick, the workers and `/metrics`.
#[derive(Debug)]
pub struct ProfileShared {
    /// Public id (`profile` in acks, `p` in data messages); never reused while the server runs.
    pub id: u32,
    /// Dense index for the tick's per-profile output (reused after the profile is gone).
    pub slot: usize,
    /// What it sends.
    pub key: ProfileKey,
    /// The newest keyframe, for a client that needs one now (new subscriber, resume).
    pub current_key: Mutex<Option<Arc<ProfileMsg>>>,
    /// Connections currently receiving it (parked sessions not counted).
    pub clients: AtomicU64,
    /// Size of the last message built (JSON bytes).
    pub last_bytes: AtomicU64,
    /// Messages built.
    pub built: AtomicU64,
}

impl ProfileShared {
    /// The newest keyframe, if one was built yet.
    pub fn current_key(&self) -> Option<Arc<ProfileMsg>> {
        self.current_key.lock().expect("poisoned").clone()
    }
}

/// Holds a profile alive. Clones share one hold; the profile is released with the last.
#[derive(Clone, Debug)]
pub struct ProfileRef(Arc<Hold>);

#[derive(Debug)]
struct Hold {
    shared: Arc<ProfileShared>,
    table: Arc<Profiles>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.table.release(&self.shared);
    }
}

impl PartialEq for ProfileRef {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl ProfileRef {
    /// The profile.
    pub fn shared(&self) -> &Arc<ProfileShared> {
        &self.0.shared
    }

    /// Public id.
    pub fn id(&self) -> u32 {
        self.0.shared.id
    }

    /// Whether both hold the same profile.
    pub fn same(&self, other: &ProfileRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Too many distinct profiles server-wide (`too_many_profiles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyProfiles {
    /// The limit (`--v2-max-profiles`).
    pub limit: usize,
}

#[derive(Debug, Default)]
struct Table {
    by_key: HashMap<ProfileKey, Weak<Hold>>,
    slots: Vec<Option<Arc<ProfileShared>>>,
    next_id: u32,
}

/// Every live profile.
#[derive(Debug)]
pub struct Profiles {
    table: Mutex<Table>,
    generation: AtomicU64,
    limit: usize,
}

impl Profiles {
    /// An empty table holding at most `limit` profiles at once.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table {
                next_id: 1,
                ..Table::default()
            }),
            generation: AtomicU64::new(0),
            limit,
        })
    }

    /// The profile for `key`: the existing one, or a new one (the tick builds it from its next
    /// due frame on).
    pub fn acquire(self: &Arc<Self>, key: ProfileKey) -> Result<ProfileRef, TooManyProfiles> {
        let mut table = self.table.lock().expect("poisoned");
        if let Some(hold) = table.by_key.get(&key).and_then(Weak::upgrade) {
            return Ok(ProfileRef(hold));
        }
        let live = table.slots.iter().filter(|s| s.is_some()).count();
        if live >= self.limit {
            return Err(TooManyProfiles { limit: self.limit });
        }
        let slot = match table.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                table.slots.push(None);
                table.slots.len() - 1
            }
        };
        let id = table.next_id;
        table.next_id += 1;
        let shared = Arc::new(ProfileShared {
            id,
            slot,
            key: key.clone(),
            current_key: Mutex::new(None),
            clients: AtomicU64::new(0),
            last_bytes: AtomicU64::new(0),
            built: AtomicU64::new(0),
        });
        table.slots[slot] = Some(Arc::clone(&shared));
        let hold = Arc::new(Hold {
            shared,
            table: Arc::clone(self),
        });
        table.by_key.insert(key, Arc::downgrade(&hold));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(ProfileRef(hold))
    }

    fn release(&self, shared: &Arc<ProfileShared>) {
        let mut table = self.table.lock().expect("poisoned");
        // A new hold for the same key may have been created while this one was dropping: only
        // the entry for this very profile goes.
        if table
            .slots
            .get(shared.slot)
            .and_then(Option::as_ref)
            .is_some_and(|s| Arc::ptr_eq(s, shared))
        {
            table.slots[shared.slot] = None;
            if table
                .by_key
                .get(&shared.key)
                .is_some_and(|w| w.strong_count() == 0)
            {
                table.by_key.remove(&shared.key);
            }
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes with every profile added or released (the tick re-reads the table when it does).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every live profile, by slot.
    pub fn live(&self) -> Vec<Arc<ProfileShared>> {
        let table = self.table.lock().expect("poisoned");
        table.slots.iter().flatten().cloned().collect()
    }

    /// Most profiles at once.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Mode;

    fn key(vars: &[u16], every: u32) -> ProfileKey {
        ProfileKey::new(vars.to_vec(), every, Mode::Delta)
    }

    #[test]
    fn same_key_same_profile_released_with_the_last_hold() {
        let p = Profiles::new(2);
        let a = p.acquire(key(&[3, 1], 5)).unwrap();
        let b = p.acquire(key(&[1, 3], 5)).unwrap();
        assert!(a.same(&b));
        let c = p.acquire(key(&[1], 5)).unwrap();
        assert_ne!(a.id(), c.id());
        assert_eq!(
            p.acquire(key(&[2], 5)).unwrap_err(),
            TooManyProfiles { limit: 2 }
        );
        let gen = p.generation();
        drop(a);
        assert_eq!(p.live().len(), 2, "b still holds it");
        drop(b);
        assert_eq!(p.live().len(), 1);
        assert!(p.generation() > gen);
        // Ids are never reused; slots are.
        let d = p.acquire(key(&[2], 5)).unwrap();
        assert!(d.id() > c.id());
        assert_eq!(d.shared().slot, 0);
    }
}
