//! What every storage backend does the same way, written once: configuration problems as
//! an open error, the rule for a repeated `clientMsgId`, the cache of users known to
//! exist, and write admission (closed for good at shutdown, busy past a bound, gone when
//! the writer is).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::oneshot;

use crate::config::ConfigProblem;
use crate::storage::{Inserted, Message, StorageError, StorageResult};

/// Refuses to open a backend whose section (`storage.<backend>`) has problems.
pub fn check_config(backend: &str, problems: &[ConfigProblem]) -> StorageResult<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Err(StorageError::Backend(format!(
        "invalid {backend} configuration: {}",
        list.join("; ")
    )))
}

/// A send whose `(sender, clientMsgId)` is stored already: the client's retry, answered
/// with the stored message and `created: false` (nothing is written or delivered again;
/// the chat plugin refuses the id reused for another receiver or text).
pub fn repeat_of(stored: Option<Message>) -> Option<Inserted> {
    stored.map(|message| Inserted {
        message,
        created: false,
    })
}

/// How many user ids a backend remembers as existing (a receiver check costs a lookup
/// otherwise); past it the set starts afresh. Users are never deleted, so a remembered id
/// stays true.
pub const KNOWN_USERS_CAP: usize = 200_000;

/// Ids known to exist, at most [`KNOWN_USERS_CAP`].
pub struct KnownIds<T>(HashSet<T>);

impl<T: Hash + Eq> Default for KnownIds<T> {
    fn default() -> Self {
        KnownIds(HashSet::new())
    }
}

impl<T: Hash + Eq> KnownIds<T> {
    pub fn contains<Q: Hash + Eq + ?Sized>(&self, id: &Q) -> bool
    where
        T: std::borrow::Borrow<Q>,
    {
        self.0.contains(id)
    }

    /// Remembers `ids` (all of them, after a clear if they would not fit).
    pub fn extend(&mut self, ids: impl ExactSizeIterator<Item = T>) {
        if self.0.len() + ids.len() > KNOWN_USERS_CAP {
            self.0.clear();
        }
        self.0.extend(ids);
    }
}

/// Whether a backend takes writes, and how many it holds: a closed backend refuses every
/// write with `Closed`; one holding `capacity` writes refuses more with `Busy` (a 503 the
/// client retries) instead of queueing without bound.
pub struct Admission {
    closed: AtomicBool,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// One admitted write's place in the bound, given back when dropped (the write is done).
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(capacity: usize) -> Self {
        Admission {
            closed: AtomicBool::new(false),
            queued: Arc::default(),
            capacity,
        }
    }

    /// From now on every write is refused (`Closed`).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn check_open(&self) -> StorageResult<()> {
        if self.is_closed() {
            Err(StorageError::Closed)
        } else {
            Ok(())
        }
    }

    /// A slot for one more write, or why there is none. A backend whose queue bounds
    /// itself (a bounded channel) needs only [`Admission::check_open`].
    pub fn admit(&self) -> StorageResult<Slot> {
        self.check_open()?;
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(StorageError::Busy);
        }
        Ok(Slot(self.queued.clone()))
    }
}

/// The answer to a queued write. A writer answers every write it took, so a dropped
/// reply means it is gone (`Closed`).
pub async fn reply<T>(rx: oneshot::Receiver<StorageResult<T>>) -> StorageResult<T> {
    rx.await.unwrap_or(Err(StorageError::Closed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_bounds_the_writes_held_and_closes_for_good() {
        let a = Admission::new(2);
        let (s1, s2) = (a.admit().unwrap(), a.admit().unwrap());
        assert!(matches!(a.admit(), Err(StorageError::Busy)));
        drop(s1);
        let s3 = a.admit().expect("a finished write gives its slot back");
        a.close();
        assert!(matches!(a.admit(), Err(StorageError::Closed)));
        assert!(matches!(a.check_open(), Err(StorageError::Closed)));
        drop((s2, s3));
    }

    #[test]
    fn known_ids_start_afresh_past_the_cap() {
        let mut k = KnownIds::default();
        k.extend(["a".to_owned()].into_iter());
        assert!(k.contains("a"));
        k.extend((0..KNOWN_USERS_CAP).map(|i| i.to_string()));
        assert!(!k.contains("a"), "cleared before the ids that would not fit");
        assert!(k.contains("0") && k.contains(&(KNOWN_USERS_CAP - 1).to_string()));
    }

    #[test]
    fn config_problems_refuse_the_open_with_every_key() {
        assert!(check_config("sqlite", &[]).is_ok());
        let e = check_config(
            "sqlite",
            &[ConfigProblem::new("path", "empty"), ConfigProblem::new("readers", "0")],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            StorageError::Backend("invalid sqlite configuration: path: empty; readers: 0".into()).to_string()
        );
    }
}
