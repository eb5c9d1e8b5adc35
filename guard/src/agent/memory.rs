//! The agent under a memory limit (its cgroup's, v1 or v2).
//!
//! When the kernel's OOM killer takes the agent, fanotify fails open until it is back. What
//! the agent holds only to be fast, the verification cache, is the one thing that grows
//! with what users open: its capacity follows the memory left, so the agent degrades (more
//! signature checks, counted) instead of dying. Anonymous memory is what is watched: the
//! page cache of the audit file is charged to the cgroup too, but the kernel reclaims it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::State;

/// How often the anonymous memory is read: at the highest rates the agent answers, a
/// tenth of a second of cache entries is a few hundred kilobytes.
const PERIOD: Duration = Duration::from_millis(100);
/// Above this share of the limit the cache shrinks (by half, each period).
const HIGH: f64 = 0.5;
/// Below this share it may grow again (doubling, each period, up to the configured size).
const LOW: f64 = 0.3;
/// The cache never shrinks below this: a working set of a few thousand files stays fast.
const FLOOR: usize = 1024;

/// Makes memory the agent frees go back to the kernel. Loading the kernel layers parses
/// the kernel's BTF (tens of MiB, for a moment); glibc raises its mmap threshold past
/// every mapped block freed, so later big blocks come from the heap, and the heap keeps
/// what is freed: an agent idling at 30 MiB where 13 do. A fixed threshold keeps big
/// blocks mapped, unmapped when freed.
pub fn return_freed_memory() {
    #[allow(unsafe_code)]
    // SAFETY: mallopt sets an allocator parameter under the allocator's own lock; it
    // touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives the kernel back the free pages the heap holds (after the layers loaded).
pub fn trim() {
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim releases only pages no allocation uses, under the allocator's
    // locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The memory cgroup the agent runs in, as far as its files tell a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The cgroup's directory.
    dir: PathBuf,
    /// The directory of the hierarchy's root (v2 limits are per level, up to it).
    root: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// The agent's own memory cgroup, from `/proc/self/cgroup` and `/proc/self/mountinfo`;
    /// `None` when no memory hierarchy is mounted where the agent sees it.
    pub fn own() -> Option<Cgroup> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Cgroup::find(&cgroups, &mountinfo).filter(|c| c.dir.is_dir())
    }

    /// The memory cgroup named in `cgroups` (`/proc/PID/cgroup`), under the mount of its
    /// hierarchy in `mountinfo`. v1's memory hierarchy wins over v2's (hybrid systems
    /// mount v2 without controllers).
    fn find(cgroups: &str, mountinfo: &str) -> Option<Cgroup> {
        let line = |v1: bool| {
            cgroups.lines().find_map(|l| {
                let mut fields = l.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                let wanted = if v1 {
                    controllers.split(',').any(|c| c == "memory")
                } else {
                    controllers.is_empty()
                };
                wanted.then(|| path.to_string())
            })
        };
        let mount = |v1: bool| {
            mountinfo.lines().find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mut right = right.split(' ');
                let (fs_type, _, options) = (right.next()?, right.next()?, right.next()?);
                let wanted = if v1 {
                    fs_type == "cgroup" && options.split(',').any(|o| o == "memory")
                } else {
                    fs_type == "cgroup2"
                };
                let left: Vec<&str> = left.split(' ').collect();
                if !wanted {
                    return None;
                }
                Some((
                    left.get(3)?.to_string(),
                    super::mounts::unescape(left.get(4)?),
                ))
            })
        };
        for v1 in [true, false] {
            let (Some(path), Some((mount_root, mount_point))) = (line(v1), mount(v1)) else {
                continue;
            };
            // The cgroup path is relative to the hierarchy's root; the mount shows the part
            // of it below `mount_root` (a cgroup namespace's or a bind mount's).
            let below = path
                .strip_prefix(mount_root.trim_end_matches('/'))
                .unwrap_or(&path);
            let root = PathBuf::from(mount_point);
            let dir = root.join(below.trim_start_matches('/'));
            if !v1 && !dir.join("memory.max").exists() && dir != root {
                continue;
            }
            return Some(Cgroup { dir, root, v2: !v1 });
        }
        None
    }

    /// The limit that applies: the least of the cgroup's and its ancestors' (v1 reports it
    /// as `hierarchical_memory_limit`). `None`: no limit.
    pub fn limit(&self) -> Option<u64> {
        let limit = if self.v2 {
            let mut least: Option<u64> = None;
            let mut dir: &Path = &self.dir;
            loop {
                if let Ok(text) = std::fs::read_to_string(dir.join("memory.max"))
                    && let Ok(value) = text.trim().parse::<u64>()
                {
                    least = Some(least.map_or(value, |l| l.min(value)));
                }
                if dir == self.root {
                    break;
                }
                match dir.parent() {
                    Some(parent) if parent.starts_with(&self.root) => dir = parent,
                    _ => break,
                }
            }
            least
        } else {
            self.stat("hierarchical_memory_limit")
        };
        // v1 says "no limit" with a page-rounded i64::MAX.
        limit.filter(|&l| l < 1 << 60)
    }

    /// Anonymous memory charged to the cgroup now.
    pub fn anon(&self) -> Option<u64> {
        self.stat(if self.v2 { "anon" } else { "rss" })
    }

    fn stat(&self, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        text.lines().find_map(|l| {
            let (name, value) = l.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok())?
        })
    }
}

/// What the governor would do with the cache at `anon` bytes under `limit`: the capacity
/// to set, or `None` to leave it.
fn next_capacity(
    anon: u64,
    limit: u64,
    capacity: usize,
    len: usize,
    configured: usize,
) -> Option<usize> {
    let share = anon as f64 / limit as f64;
    if share > HIGH {
        // Half of what is there (not of the capacity, which may be far above it).
        let target = (len.min(capacity) / 2).max(FLOOR.min(configured));
        (target < capacity).then_some(target)
    } else if share < LOW && capacity < configured {
        Some(capacity.saturating_mul(2).min(configured))
    } else {
        None
    }
}

/// Runs the governor until the agent stops: started only when a limit applies.
pub fn govern(state: Arc<State>, cgroup: Cgroup, configured: usize) {
    let mut warned = false;
    while !state.stopping.load(Ordering::Relaxed) {
        std::thread::sleep(PERIOD);
        let (Some(limit), Some(anon)) = (cgroup.limit(), cgroup.anon()) else {
            continue;
        };
        state.stats.memory_limit.store(limit, Ordering::Relaxed);
        state.stats.memory_anon.store(anon, Ordering::Relaxed);
        let capacity = state.cache.capacity();
        let Some(next) = next_capacity(anon, limit, capacity, state.cache.len(), configured) else {
            continue;
        };
        let evicted = state.cache.set_capacity(next);
        state
            .stats
            .cache_evictions
            .fetch_add(evicted as u64, Ordering::Relaxed);
        if next < capacity && !warned {
            warned = true;
            log::warn!(
                "memory: {} MiB of the {} MiB limit in use: the verification cache shrinks to \
                 {next} entries ({evicted} evicted); more signature checks, no other change",
                anon >> 20,
                limit >> 20
            );
        } else if next >= configured && warned {
            warned = false;
            log::info!("memory: pressure gone, the verification cache is back to {next} entries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_memory_and_v2_hierarchies() {
        let v1 = Cgroup::find(
            "4:memory:/system.slice/guard.service\n0::/system.slice/guard.service\n",
            "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        )
        .unwrap();
        assert_eq!(
            v1,
            Cgroup {
                dir: "/sys/fs/cgroup/memory/system.slice/guard.service".into(),
                root: "/sys/fs/cgroup/memory".into(),
                v2: false
            }
        );
        // v2 only: its directory (here absent on this host: not filtered by `find`, which
        // checks `memory.max` only to skip a controller-less v2 under a v1 memory mount).
        let v2 = Cgroup::find(
            "0::/\n",
            "31 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        )
        .unwrap();
        assert_eq!(v2.dir, PathBuf::from("/sys/fs/cgroup"));
        assert!(v2.v2);
        // Inside a cgroup namespace the mount shows the cgroup itself as its root.
        let ns = Cgroup::find(
            "4:memory:/lxc/c1\n",
            "30 25 0:26 /lxc/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        )
        .unwrap();
        assert_eq!(ns.dir, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(Cgroup::find("1:cpu:/\n", ""), None);
    }

    #[test]
    fn the_cache_follows_the_memory_left() {
        const MIB: u64 = 1 << 20;
        // Above half the limit: half of what the cache holds, never below the floor.
        assert_eq!(
            next_capacity(60 * MIB, 100 * MIB, 131_072, 40_000, 131_072),
            Some(20_000)
        );
        assert_eq!(
            next_capacity(60 * MIB, 100 * MIB, 2000, 2000, 131_072),
            Some(FLOOR)
        );
        assert_eq!(
            next_capacity(60 * MIB, 100 * MIB, FLOOR, FLOOR, 131_072),
            None
        );
        // In between: left alone.
        assert_eq!(
            next_capacity(40 * MIB, 100 * MIB, 20_000, 20_000, 131_072),
            None
        );
        // Below 30%: grows back, doubling, up to the configured size.
        assert_eq!(
            next_capacity(10 * MIB, 100 * MIB, 20_000, 100, 131_072),
            Some(40_000)
        );
        assert_eq!(
            next_capacity(10 * MIB, 100 * MIB, 100_000, 100, 131_072),
            Some(131_072)
        );
        assert_eq!(
            next_capacity(10 * MIB, 100 * MIB, 131_072, 100, 131_072),
            None
        );
        // A configured size under the floor is kept.
        assert_eq!(next_capacity(60 * MIB, 100 * MIB, 500, 500, 500), None);
    }
}
