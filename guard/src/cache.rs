//! Cache of content verifications (signature and digest), the only expensive facts.
//!
//! Keyed by what changes whenever content, owner, mode or xattrs change: device, inode,
//! size and the modification and change times to the nanosecond. A write(2), chmod, chown
//! or setxattr moves ctime, and ctime cannot be set from user space, so a stale entry can
//! never be found again. Writes through a shared mapping may move no time at all: only
//! files nobody but a trusted owner can write are cached
//! ([`crate::engine::content_may_be_cached`]). Structural checks are not cached: they are cheap and depend on
//! who is asking.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;

use crate::engine::{ContentFacts, Object, SignatureFact};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContentKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl ContentKey {
    pub fn of(object: &Object) -> ContentKey {
        ContentKey {
            dev: object.id.dev,
            ino: object.id.ino,
            size: object.size,
            mtime: object.mtime,
            ctime: object.ctime,
        }
    }

    /// The same from an fstat.
    pub fn of_stat(st: &libc::stat) -> ContentKey {
        ContentKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(u64::MAX),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// A bounded LRU of verification results, with hit and miss counters.
pub struct VerificationCache {
    entries: Mutex<LruCache<ContentKey, ContentFacts>>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl VerificationCache {
    pub fn new(capacity: usize) -> VerificationCache {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        VerificationCache {
            entries: Mutex::new(LruCache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &ContentKey) -> Option<ContentFacts> {
        let found = self.lock().get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a result. Failures to read are not stored: they may be transient.
    pub fn put(&self, key: ContentKey, facts: ContentFacts) {
        if matches!(
            facts.signature,
            SignatureFact::Failed(crate::ima::SignatureError::Unreadable(_))
        ) {
            return;
        }
        self.lock().put(key, facts);
    }

    /// How many entries it may hold.
    pub fn capacity(&self) -> usize {
        self.lock().cap().get()
    }

    /// Changes how many entries it may hold (at least one), evicting the least recently
    /// used beyond it; returns how many were evicted.
    pub fn set_capacity(&self, capacity: usize) -> usize {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let mut entries = self.lock();
        let before = entries.len();
        entries.resize(capacity);
        before - entries.len()
    }

    /// Forgets everything (on policy reload: trusted keys may have changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<ContentKey, ContentFacts>> {
        // A panic elsewhere while holding the lock leaves a consistent LRU: keep using it.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
