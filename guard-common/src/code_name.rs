//! Which file names an interpreter reads as code, as the BPF LSM layer tells them apart on
//! filesystems the agent cannot see.
//!
//! fanotify cannot mark procfs (the kernel refuses permission marks there), yet `/proc`
//! serves bytes a user chooses: `X='1;print(…)' python3 /proc/self/environ` runs. The kernel
//! layer therefore refuses an interpreter's read of a regular file on a filesystem type the
//! policy does not trust when the file is *named as code*: named like the script operand of
//! the interpreter's command line, or with one of the policy's code suffixes (`.py`,
//! `.pyc`, …). "Named" covers every way a path walk can reach a file under a name: its own
//! last component, a symbolic link of that name followed on the way (`x.py -> /proc/…`, the
//! `/proc/self/fd/N` magic links), or a file mount over a mount point of that name. Data
//! reads of `/proc` and `/sys` (psutil, `os.cpu_count`) keep working: their names are
//! neither. An interpreter that resolves a link itself before opening its target (node's
//! `realpath`) reaches the target under the target's own name, so a link named as code must
//! point to a name that is code too ([`judge_readlink`], by the suffixes alone). Everything
//! here is written for the BPF verifier: bounded loops, explicit indices, no slice
//! comparisons.

use crate::Rule;

/// A path component's bytes as the kernel reads them (`NAME_MAX` is 255).
pub const NAME_BUFFER: usize = 256;
const _: () = assert!(NAME_BUFFER.is_power_of_two(), "indices are masked with it");
/// How many code suffixes the kernel compares (every profile's together: CPython's, Perl's,
/// Ruby's and Node's fit). A policy with more is refused when it is loaded.
pub const MAX_CODE_SUFFIXES: usize = 32;
/// The longest code suffix the kernel compares, dot included.
pub const CODE_SUFFIX_BYTES: usize = 8;

/// What the kernel keeps per interpreter task (task storage `LSM_MAIN_SCRIPTS`), set when
/// the task execs an interpreter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MainScript {
    /// Length of the last path component of the script operand; 0 when the command line
    /// names no script (`-c`, `-m`, standard input) or its last component is empty.
    pub name_len: u32,
    /// 1 when a symbolic link named as code was followed since the task's last open or
    /// stat: the file that open reaches is reached under that name.
    pub code_link: u32,
    /// The script operand's last component (its first `name_len` bytes).
    pub name: [u8; NAME_BUFFER],
    /// Where a hook copies the name it judges (the BPF stack is too small for it).
    pub scratch: [u8; NAME_BUFFER],
    /// The task's opens `file_open` judged that `file_post_open` has not seen yet: the
    /// `struct file` address (0: a free slot) and the inode's content changes `file_open`
    /// saw. A task opens one file at a time; the slots are for the opens nested in it (an
    /// overlay's backing file). Per task, so no other task can push a record out.
    pub opening_files: [u64; OPENING_SLOTS],
    pub opening_changes: [u64; OPENING_SLOTS],
    /// The slot the next record takes (modulo [`OPENING_SLOTS`]).
    pub opening_next: u32,
    pub opening_pad: u32,
}

/// How many nested opens a task's record holds: overlays stack at most two deep
/// (`FILESYSTEM_MAX_STACK_DEPTH`), so an open is at most three `file_open`s.
pub const OPENING_SLOTS: usize = 4;
const _: () = assert!(OPENING_SLOTS.is_power_of_two());

impl Default for MainScript {
    fn default() -> Self {
        MainScript {
            name_len: 0,
            code_link: 0,
            name: [0; NAME_BUFFER],
            scratch: [0; NAME_BUFFER],
            opening_files: [0; OPENING_SLOTS],
            opening_changes: [0; OPENING_SLOTS],
            opening_next: 0,
            opening_pad: 0,
        }
    }
}

impl MainScript {
    /// Records that `file_open` judged the open of `file` (a `struct file` address) when
    /// the inode's content changes were `changes`. A record left for the same address (an
    /// open refused before `file_post_open`, whose `struct file` was freed and reused) is
    /// replaced, never kept beside the new one.
    #[inline(always)]
    pub fn record_opening(&mut self, file: u64, changes: u64) {
        let mut target = OPENING_SLOTS;
        let mut slot = 0;
        while slot < OPENING_SLOTS {
            if self.opening_files[slot] == file {
                target = slot;
            }
            slot += 1;
        }
        if target == OPENING_SLOTS {
            target = self.opening_next as usize;
            self.opening_next = self.opening_next.wrapping_add(1);
        }
        // Below OPENING_SLOTS either way; the mask shows it (a power of two).
        let target = target & (OPENING_SLOTS - 1);
        self.opening_files[target] = file;
        self.opening_changes[target] = changes;
    }

    /// The content changes recorded for the open of `file`, forgetting them; `None` when
    /// `file_open` recorded none for it.
    #[inline(always)]
    pub fn take_opening(&mut self, file: u64) -> Option<u64> {
        let mut slot = 0;
        while slot < OPENING_SLOTS {
            if file != 0 && self.opening_files[slot] == file {
                self.opening_files[slot] = 0;
                return Some(self.opening_changes[slot]);
            }
            slot += 1;
        }
        None
    }
}

/// One code suffix, such as `.py` (its first `len` bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeSuffix {
    pub len: u32,
    pub bytes: [u8; CODE_SUFFIX_BYTES],
}

/// The code suffixes of a policy's `code_patterns`: each pattern that is `*` and a literal
/// suffix of at most [`CODE_SUFFIX_BYTES`] bytes. Others (`*.so.[0-9]*`) are left to the
/// layer's native-code hooks and to fanotify. Returns how many were kept; duplicates once.
pub fn code_suffixes<'a, I>(patterns: I, out: &mut [CodeSuffix; MAX_CODE_SUFFIXES]) -> usize
where
    I: IntoIterator<Item = &'a str>,
{
    let mut count = 0;
    for entry in patterns.into_iter().filter_map(code_suffix) {
        if out[..count].contains(&entry) || count == MAX_CODE_SUFFIXES {
            continue;
        }
        out[count] = entry;
        count += 1;
    }
    count
}

/// How many distinct code suffixes the patterns make (see [`code_suffixes`]): a policy
/// whose profiles make more than [`MAX_CODE_SUFFIXES`] is refused, never cut short.
pub fn distinct_code_suffixes<'a, I>(patterns: I) -> usize
where
    I: IntoIterator<Item = &'a str>,
{
    let mut seen: [CodeSuffix; MAX_CODE_SUFFIXES] = [CodeSuffix::default(); MAX_CODE_SUFFIXES];
    let mut count = 0;
    for entry in patterns.into_iter().filter_map(code_suffix) {
        if seen[..count.min(MAX_CODE_SUFFIXES)].contains(&entry) {
            continue;
        }
        if count < MAX_CODE_SUFFIXES {
            seen[count] = entry;
        }
        count += 1;
    }
    count
}

/// The code suffix a pattern is, if it is `*` and a literal suffix of at most
/// [`CODE_SUFFIX_BYTES`] bytes.
fn code_suffix(pattern: &str) -> Option<CodeSuffix> {
    let suffix = pattern.strip_prefix('*')?;
    let bytes = suffix.as_bytes();
    let literal = !bytes
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'/'));
    if bytes.is_empty() || bytes.len() > CODE_SUFFIX_BYTES || !literal {
        return None;
    }
    let len = u32::try_from(bytes.len()).ok()?;
    let mut entry = CodeSuffix {
        len,
        bytes: [0; CODE_SUFFIX_BYTES],
    };
    entry.bytes[..bytes.len()].copy_from_slice(bytes);
    Some(entry)
}

/// Where the last path component starts in `tail`, the last `tail_len` bytes of a path of
/// `total` bytes (`tail_len` is `total` when the path fits). `None` when the component does
/// not fit in `tail` (then it is longer than any name can be).
#[inline(always)]
pub fn last_component_start(
    tail: &[u8; NAME_BUFFER],
    tail_len: usize,
    total: usize,
) -> Option<usize> {
    // Backwards from the end, returning at the first slash. Bounded by `tail_len` itself:
    // a constant bound with an `i < tail_len` test inside makes the verifier split its
    // state at every byte (quadratic), this one walks each byte once.
    let mut i = if tail_len < NAME_BUFFER {
        tail_len
    } else {
        NAME_BUFFER
    };
    while i > 0 {
        i -= 1;
        if tail[i & (NAME_BUFFER - 1)] == b'/' {
            return Some(i + 1);
        }
    }
    if tail_len == total { Some(0) } else { None }
}

/// Whether the first `len` bytes of `name` are named as code: the script operand's last
/// component, or a name ending in one of the first `suffix_count` suffixes, `suffix(i)`
/// for `i` below [`MAX_CODE_SUFFIXES`] (the kernel reads them one at a time: a copy of all
/// of them does not fit its stack).
#[inline(always)]
pub fn named_as_code<S: Fn(usize) -> CodeSuffix>(
    name: &[u8; NAME_BUFFER],
    len: u32,
    script: &MainScript,
    suffixes: S,
    suffix_count: u32,
) -> bool {
    if len == 0 || len as usize > NAME_BUFFER {
        return false;
    }
    // The suffixes first: the verifier then walks the variable-length comparison last,
    // with nothing left to verify after each of its exits.
    has_suffix(name, len as usize, suffixes, suffix_count)
        || (script.name_len == len && same_bytes(name, &script.name, len as usize))
}

/// Whether the first `len` bytes of `name` end with one of the first `suffix_count` code
/// suffixes: what a name says of itself, whoever reads it (the operand's name is one task's
/// alone). The test [`judge_readlink`] applies to a link's name and its target's.
#[inline(always)]
pub fn suffix_named_as_code<S: Fn(usize) -> CodeSuffix>(
    name: &[u8; NAME_BUFFER],
    len: u32,
    suffixes: S,
    suffix_count: u32,
) -> bool {
    if len == 0 || len as usize > NAME_BUFFER {
        return false;
    }
    has_suffix(name, len as usize, suffixes, suffix_count)
}

/// Whether a symbolic link's target, the first `len` bytes of `target` (a path as the link
/// holds it, below [`NAME_BUFFER`] bytes), names a file as code by
/// [`suffix_named_as_code`]: its last component, the name of the file the walk through it
/// ends at, which an interpreter resolving the link opens. A target ending in `/`, `.` or
/// `..` ends at a directory (node then loads its `package.json`'s `"main"` or an
/// `index.js`, not a file this name describes); an empty one at nothing. None is code.
#[inline(always)]
pub fn link_target_named_as_code<S: Fn(usize) -> CodeSuffix>(
    target: &[u8; NAME_BUFFER],
    len: usize,
    suffixes: S,
    suffix_count: u32,
) -> bool {
    if len == 0 || len >= NAME_BUFFER {
        return false;
    }
    // No walk to the last `/`: a suffix holds no `/`, so the last component ends with one
    // exactly when the path does and the byte before it is no `/` (`has_suffix`). A walk
    // would hand the verifier one state per position it stops at, each judged on.
    // Opaque indices: knowing `len` is below the buffer's length, the compiler would drop
    // the masks the verifier needs to see them in bounds.
    let at = |i: usize| target[opaque(i) & (NAME_BUFFER - 1)];
    if at(len - 1) == b'.' {
        if len == 1 || at(len - 2) == b'/' {
            return false;
        }
        if at(len - 2) == b'.' && (len == 2 || at(len - 3) == b'/') {
            return false;
        }
    }
    has_suffix(target, len, suffixes, suffix_count)
}

/// The rule an interpreter's `readlink` of a symbolic link breaks, if any:
/// `link_named_as_code` by its own name ([`suffix_named_as_code`]), `target_named_as_code`
/// by its target's ([`link_target_named_as_code`]), `None` when the target could not be
/// read. An interpreter that resolves a link before opening (node's `realpath`) opens the
/// target by the target's name: a code name that points at a data name would load data
/// as code unchecked. A target that cannot be read is no evidence it is code: refused.
#[inline(always)]
pub fn judge_readlink(
    link_named_as_code: bool,
    target_named_as_code: Option<bool>,
) -> Option<Rule> {
    if !link_named_as_code {
        return None;
    }
    match target_named_as_code {
        Some(true) => None,
        Some(false) => Some(Rule::CodeNamedLink),
        None => Some(Rule::FactsUnavailable),
    }
}

#[inline(always)]
fn same_bytes(a: &[u8; NAME_BUFFER], b: &[u8; NAME_BUFFER], len: usize) -> bool {
    // Bounded by `len` itself, as in `last_component_start`. The verifier needs to see the
    // bound; the compiler would fold it into earlier range checks the verifier cannot
    // follow, so it is taken again on a value the compiler knows nothing about.
    let len = opaque(len);
    let len = if len < NAME_BUFFER { len } else { NAME_BUFFER };
    let mut i = 0;
    while i < len {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `value`, as something the compiler cannot reason about (the verifier must see the
/// bounds check it would otherwise fold away).
#[allow(unsafe_code)]
#[inline(always)]
fn opaque(value: usize) -> usize {
    // SAFETY: a volatile read of a local the function owns.
    unsafe { core::ptr::read_volatile(&value) }
}

#[inline(always)]
/// Whether the name (or path) in the first `len` bytes of `name` ends with a code suffix.
fn has_suffix<S: Fn(usize) -> CodeSuffix>(
    name: &[u8; NAME_BUFFER],
    len: usize,
    suffixes: S,
    count: u32,
) -> bool {
    let mut s = 0;
    while s < MAX_CODE_SUFFIXES {
        let suffix = suffixes(s);
        let suffix_len = suffix.len as usize;
        // A name that is only the suffix (".py", "dir/.py") is a hidden file, not code by
        // its name. A dentry's name holds no `/`; a link's target may.
        if s < count as usize
            && suffix_len > 0
            && suffix_len < len
            && name[opaque(len - suffix_len - 1) & (NAME_BUFFER - 1)] != b'/'
        {
            let start = len - suffix_len;
            let mut j = 0;
            while j < CODE_SUFFIX_BYTES {
                // `start + j` is below `len`: the mask changes nothing but lets the
                // verifier see the index in bounds.
                if j < suffix_len && name[(start + j) & (NAME_BUFFER - 1)] != suffix.bytes[j] {
                    break;
                }
                j += 1;
            }
            if j == CODE_SUFFIX_BYTES {
                return true;
            }
        }
        s += 1;
    }
    false
}

#[cfg(test)]
// Test names are a few bytes long.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn a_task_keeps_its_nested_openings_apart() {
        let mut task = MainScript::default();
        assert_eq!(task.take_opening(0x1000), None);
        // An overlay's file, then its backing file: both found, each once.
        task.record_opening(0x1000, 7);
        task.record_opening(0x2000, 9);
        assert_eq!(task.take_opening(0x2000), Some(9));
        assert_eq!(task.take_opening(0x2000), None);
        assert_eq!(task.take_opening(0x1000), Some(7));
        // A record left behind (an open refused before file_post_open) is overwritten in
        // turn, never matched by another address.
        for n in 0..10u64 {
            task.record_opening(0x3000 + n, n);
        }
        assert_eq!(task.take_opening(0x3009), Some(9));
        assert_eq!(task.take_opening(0x3006), Some(6));
        assert_eq!(task.take_opening(0x3005), None);
        assert_eq!(task.take_opening(0), None);
        // A stale record at an address reused by the next open is replaced by it.
        task.record_opening(0x4000, 1);
        task.record_opening(0x4000, 2);
        assert_eq!(task.take_opening(0x4000), Some(2));
        assert_eq!(task.take_opening(0x4000), None);
    }

    fn buffer(bytes: &[u8]) -> [u8; NAME_BUFFER] {
        let mut buf = [0; NAME_BUFFER];
        buf[..bytes.len()].copy_from_slice(bytes);
        buf
    }

    fn script(name: &[u8]) -> MainScript {
        MainScript {
            name_len: name.len() as u32,
            name: buffer(name),
            ..MainScript::default()
        }
    }

    fn default_suffixes() -> ([CodeSuffix; MAX_CODE_SUFFIXES], u32) {
        let mut out = [CodeSuffix::default(); MAX_CODE_SUFFIXES];
        let patterns = [
            "*.py",
            "*.pyc",
            "*.pyo",
            "*.pyw",
            "*.pth",
            "*.so",
            "*.so.[0-9]*",
            "*.zip",
            "*.whl",
            "*.egg",
            "*.pyz",
            "*.py",
        ];
        let count = code_suffixes(patterns, &mut out);
        (out, count as u32)
    }

    fn code(name: &[u8], script_name: &[u8]) -> bool {
        let (suffixes, count) = default_suffixes();
        named_as_code(
            &buffer(name),
            name.len() as u32,
            &script(script_name),
            |i| suffixes[i],
            count,
        )
    }

    #[test]
    fn suffixes_keep_literal_patterns_once() {
        let (suffixes, count) = default_suffixes();
        assert_eq!(
            count, 10,
            "*.so.[0-9]* is no literal suffix, *.py is listed twice"
        );
        assert_eq!(&suffixes[1].bytes[..suffixes[1].len as usize], b".pyc");
        let mut out = [CodeSuffix::default(); MAX_CODE_SUFFIXES];
        assert_eq!(
            code_suffixes(["*", "x.py", "*.toolongsuffix", "*/a.py"], &mut out),
            0
        );
    }

    #[test]
    fn operand_names_and_code_suffixes_are_code() {
        assert!(code(b"environ", b"environ"));
        assert!(code(b"x.py", b""));
        assert!(code(b"__main__.pyc", b"tool"));
        assert!(code(b"evil.pth", b"tool"));
        // Data reads of /proc and /sys.
        assert!(!code(b"environ", b"tool"));
        assert!(!code(b"stat", b"statistics"));
        assert!(!code(b"statistics", b"stat"));
        assert!(!code(b"x.pyx", b"tool"));
        assert!(!code(b".py", b"tool"));
        assert!(!code(b"", b""));
    }

    fn node_suffixes() -> ([CodeSuffix; MAX_CODE_SUFFIXES], u32) {
        let mut out = [CodeSuffix::default(); MAX_CODE_SUFFIXES];
        let count = code_suffixes(["*.js", "*.mjs", "*.cjs", "*.node", "*.py"], &mut out);
        (out, count as u32)
    }

    fn link_name_is_code(name: &[u8]) -> bool {
        let (suffixes, count) = node_suffixes();
        suffix_named_as_code(&buffer(name), name.len() as u32, |i| suffixes[i], count)
    }

    fn target_is_code(target: &[u8]) -> bool {
        let (suffixes, count) = node_suffixes();
        link_target_named_as_code(&buffer(target), target.len(), |i| suffixes[i], count)
    }

    #[test]
    fn a_link_names_code_by_its_suffix_alone() {
        assert!(link_name_is_code(b"link.js"));
        assert!(link_name_is_code(b"addon.node"));
        assert!(!link_name_is_code(b"data.txt"));
        // The operand's name is one task's, not what a name says of itself.
        assert!(!link_name_is_code(b"tool"));
        assert!(!link_name_is_code(b".js"));
        assert!(!link_name_is_code(b"js"));
        assert!(!link_name_is_code(b""));
    }

    #[test]
    fn a_link_target_is_code_by_the_file_the_walk_ends_at() {
        assert!(target_is_code(b"real.js"));
        assert!(target_is_code(b"../lib/real.js"));
        assert!(target_is_code(b"/usr/share/nodejs/x/index.cjs"));
        assert!(target_is_code(b"dir.txt/real.mjs"));
        // What node would open is named as data, or is a directory (whose package.json's
        // "main" or index.js runs), or nothing.
        assert!(!target_is_code(b"data.txt"));
        assert!(!target_is_code(b"code.js/data.txt"));
        assert!(!target_is_code(b"lib.js/"));
        assert!(!target_is_code(b"lib.js/."));
        assert!(!target_is_code(b"lib.js/.."));
        assert!(!target_is_code(b"."));
        assert!(!target_is_code(b".."));
        assert!(!target_is_code(b"/"));
        assert!(!target_is_code(b""));
        assert!(!target_is_code(b"dir/.js"));
        assert!(!target_is_code(b"/proc/self/fd/3"));
        // A name that only starts with dots is still a name.
        assert!(target_is_code(b"..x.js"));
        assert!(target_is_code(b"a/.x.js"));
        // The longest target the kernel reads whole is one byte short of the buffer.
        let mut long = b"d/".repeat(124);
        long.extend_from_slice(b"a.js");
        assert_eq!(long.len(), NAME_BUFFER - 4);
        assert!(target_is_code(&long));
        let mut full = b"d/".repeat(126);
        full.extend_from_slice(b"a.js");
        assert_eq!(full.len(), NAME_BUFFER);
        assert!(!target_is_code(&full));
    }

    #[test]
    fn a_code_named_link_must_name_code_or_is_refused() {
        assert_eq!(judge_readlink(true, Some(true)), None);
        assert_eq!(judge_readlink(true, Some(false)), Some(Rule::CodeNamedLink));
        // A target the kernel could not read (a slow link, a procfs link, overlayfs).
        assert_eq!(judge_readlink(true, None), Some(Rule::FactsUnavailable));
        // Links that do not say code are none of the rule's business.
        assert_eq!(judge_readlink(false, Some(false)), None);
        assert_eq!(judge_readlink(false, None), None);
    }

    #[test]
    fn last_component_of_operands() {
        let start = |path: &[u8]| {
            let tail_len = path.len().min(NAME_BUFFER);
            let tail = buffer(&path[path.len() - tail_len..]);
            last_component_start(&tail, tail_len, path.len()).map(|s| tail[s..tail_len].to_vec())
        };
        assert_eq!(start(b"/proc/self/environ"), Some(b"environ".to_vec()));
        assert_eq!(start(b"environ"), Some(b"environ".to_vec()));
        assert_eq!(start(b"dir/"), Some(Vec::new()));
        let mut long = b"/".repeat(300);
        long.extend_from_slice(b"x.py");
        assert_eq!(start(&long), Some(b"x.py".to_vec()));
        // A component longer than the tail cannot be a name.
        assert_eq!(start(&b"a".repeat(300)), None);
    }
}
