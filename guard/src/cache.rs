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

/// An LRU holding at most `capacity` entries whose table grows with what it holds:
/// `LruCache::new` reserves the whole capacity up front, 4 MiB of table for the default
/// 131,072 entries, touched all over as entries land wherever they hash.
fn bounded_without_reserving<K: std::hash::Hash + Eq, V>(capacity: NonZeroUsize) -> LruCache<K, V> {
    let mut cache = LruCache::unbounded();
    cache.resize(capacity);
    cache
}

/// A bounded LRU of verification results, with hit and miss counters.
pub struct VerificationCache {
    entries: Mutex<LruCache<ContentKey, ContentFacts>>,
    /// Bumped by every [`Self::clear`], under the entries' lock: a verification begun
    /// before a clear (checked with the keys of the previous policy) is not stored after it.
    epoch: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl VerificationCache {
    pub fn new(capacity: usize) -> VerificationCache {
        let capacity = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        VerificationCache {
            entries: Mutex::new(bounded_without_reserving(capacity)),
            epoch: AtomicU64::new(0),
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

    /// What [`Self::put_since`] is given: read before a verification begins.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Stores a result verified since `epoch`, unless the cache was cleared meanwhile (a
    /// reload: the result may rest on a key no longer trusted). Failures to read are not
    /// stored: they may be transient.
    pub fn put_since(&self, key: ContentKey, facts: ContentFacts, epoch: u64) {
        if matches!(
            facts.signature,
            SignatureFact::Failed(crate::ima::SignatureError::Unreadable(_))
        ) {
            return;
        }
        let mut entries = self.lock();
        if self.epoch.load(Ordering::SeqCst) == epoch {
            entries.put(key, facts);
        }
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
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ima::SignatureError;

    fn key(ino: u64) -> ContentKey {
        ContentKey {
            dev: 1,
            ino,
            size: 10,
            mtime: (0, 0),
            ctime: (0, 0),
        }
    }

    fn facts() -> ContentFacts {
        ContentFacts {
            signature: SignatureFact::Failed(SignatureError::Missing),
            sha256: None,
        }
    }

    #[test]
    fn holds_at_most_its_capacity_least_recently_used_first_out() {
        let cache = VerificationCache::new(2);
        cache.put_since(key(1), facts(), 0);
        cache.put_since(key(2), facts(), 0);
        assert!(cache.get(&key(1)).is_some());
        cache.put_since(key(3), facts(), 0);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key(2)).is_none(), "the least recently used goes");
        assert!(cache.get(&key(1)).is_some() && cache.get(&key(3)).is_some());
        assert_eq!(cache.set_capacity(1), 1);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_verification_begun_before_a_clear_is_not_stored_after_it() {
        let cache = VerificationCache::new(4);
        let before = cache.epoch();
        cache.clear();
        cache.put_since(key(1), facts(), before);
        assert!(cache.get(&key(1)).is_none());
        cache.put_since(key(1), facts(), cache.epoch());
        assert!(cache.get(&key(1)).is_some());
    }
}
