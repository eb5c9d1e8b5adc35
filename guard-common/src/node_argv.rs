//! How a Node.js command line asks to be run, from its argv alone: [`Reader`], node's
//! [`Grammar`](crate::argv::Grammar), read exactly as node's own option parser
//! (`src/node_options-inl.h`, `OptionsParser::Parse`) and its choice of main
//! (`src/node.cc`, `StartExecution`) read it, for node 18 and 20; checked against the real
//! binaries by `tests/argv_node_differential.rs`, which also compares [`OPTIONS`] with the
//! option table each binary reports of itself.
//!
//! Node's reading, word by word:
//! - A word of one byte (`-`), an empty word or one that does not start with `-` ends the
//!   options: it is the main operand (`-` and the empty word mean standard input), and
//!   every later word belongs to the program. `--` ends them too, and the next word is the
//!   operand whatever it looks like.
//! - There are no clusters: `-pe` is an alias of its own, `-ep` an unknown option.
//! - Only a word starting with `--` splits at its first `=` (`--eval=CODE`; `-e=CODE` is an
//!   unknown option). In the name, every `_` from the third byte on is a `-`
//!   (`--input_type`), and a leading `--no-` negates (`--no-interactive`).
//! - Aliases: `-e` is `--eval`, `-p` is `--print`, `-r` is `--require`, `--loader` is
//!   `--experimental-loader`… `--print` (also `-p`, `--no-print`, `--print=X`) followed by
//!   a word that is not empty and does not start with `-` becomes `--print --eval WORD`:
//!   `node -p script.js` evaluates the text `script.js`. `--prof-process` is
//!   `--prof-process --`: it ends the options, negated or not. `--inspect=H` is
//!   `--inspect-port=H --inspect`.
//! - An option with a value takes the rest of the word after `=` or the next word (which
//!   must not start with `-`; `\-` escapes one). A boolean ignores what follows its `=`.
//! - A name node does not know goes to V8 as one word (`--expose-gc`, `--stack-size=N`):
//!   the next word is never its value to node. V8 rejects names it does not know either,
//!   but not always: a V8 flag with a value given without `=` takes the next word V8 was
//!   handed as its value, whatever that word is (`--trace-turbo-path --frob` passes).
//!
//! So an option node 20 knows with a value, and node 18 does not know at all, is read by
//! node 18 as a single word: `node18 --trace-turbo-path --disable-warning X app` runs `X`.
//! One reader serves every node version, so such options ([`Kind::ValueInSomeVersions`])
//! are read only with their value attached (`--disable-warning=X`); given the next word,
//! they are [`Word::Unread`]. A node major whose table has an option with a value that
//! [`OPTIONS`] lacks is read wrongly: the differential test fails on it (and must pass
//! before such a node is profiled).
//!
//! What node runs, in `StartExecution`'s order: the debugger client when the operand is the
//! word `inspect`; the help; the tick processor (`--prof-process`); `--eval`/`--print`
//! code, unless `-i`; a syntax check (`--check`, the operand or standard input, running
//! nothing); the test runner (`--test`, each file in a child node); watch mode (a child
//! node); the operand as the main module; a REPL when `-i` (or a terminal); standard input.
//! `--version`, `--v8-options` and `--completion-bash` print and exit before any of it.
//! An inspector (`--inspect*`, `--debug*`) is a debugger port: whoever connects runs code.
//!
//! Options that load code named on the command line: `-r`/`--require` (CommonJS: a file or
//! a package, whatever its name: `-r ./notes.txt` runs notes.txt), and `--import`,
//! `--loader`/`--experimental-loader`, `--test-reporter` (ES module specifiers, where a
//! `data:` URL is inline code and `http(s):` code from the network: [`specifier`]). Each
//! module named is a [`Word::Preload`], its spelling judged ([`names_descriptor`]):
//! `-r /dev/stdin` reads standard input as a module. `--env-file` reads the environment,
//! `NODE_OPTIONS` included, from a file ([`Word::CodeEnvironment`]). A heap snapshot
//! (`--snapshot-blob` when not building one) holds compiled code and a main function node
//! runs instead of any operand, and `--build-snapshot-config`/`--experimental-sea-config`
//! name in a JSON file a script node runs: guard sees neither file as code by its name, so
//! those are [`Word::Unread`].
//!
//! Written for the kernel exec gate, which runs [`Reader::feed_padded`] on the word in its
//! buffer, zeros after it: no allocation, nothing borrowed kept, no panics, and no loop
//! bounded by a word's length whose exit position lives on (the verifier would walk what
//! follows once per length). Names, specifiers and spellings are read eight bytes at a time
//! with arithmetic ([`option_word_padded`], [`specifier_padded`], [`names_descriptor`]), the
//! option table through a hash index with one test per probe. The gate's `node_exec`
//! verifies in about 160,000 instructions (6.18).

use crate::argv::Word;
use crate::exec_gate::ARG_BUFFER;

/// Bytes of an option name the table holds (`--network-family-autoselection-attempt-timeout`
/// has 46): a longer name is no option node has.
pub const NAME_MAX: usize = 48;
const NAME_WORDS: usize = NAME_MAX / 8;

/// An option name, normalized as node normalizes it, packed big-endian and zero-padded so
/// that comparing keys compares names.
type Key = [u64; NAME_WORDS];

/// What an option name does to the reading, and what it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A name the table does not hold: a boolean, a V8 flag or an unknown option. One word.
    Word = 0,
    /// An option with a value (a string, a number, a list, host:port), in every version.
    Value = 1,
    /// An option with a value in some node versions and unknown to others: read only with
    /// its value attached.
    ValueInSomeVersions = 2,
    /// `--eval`/`-e`: code.
    Eval = 3,
    /// `-pe`: `--print --eval`, code.
    PrintEval = 4,
    /// `--print`/`-p`: the next word is code unless it is empty or starts with `-`.
    Print = 5,
    /// An ES module specifier node imports before the main module: [`specifier`].
    Specifier = 6,
    /// `--env-file`: the environment, `NODE_OPTIONS` included, from a file (node 20).
    EnvFile = 7,
    /// A file node runs code from, whose name says nothing (a JSON configuration naming a
    /// script).
    CodeFile = 8,
    /// `--snapshot-blob`: the snapshot written when building one, else code node runs.
    SnapshotBlob = 9,
    /// `--build-snapshot`.
    BuildSnapshot = 10,
    /// `--interactive`/`-i`: a REPL where node would read standard input (or run `-e`).
    Interactive = 11,
    /// An inspector: `--inspect`, `--inspect-brk`, `--inspect-wait`, `--inspect-brk-node`,
    /// and the refused `--debug`, `--debug-brk`.
    Inspector = 12,
    /// `--check`/`-c`: syntax check only.
    Check = 13,
    /// `--test`: the test runner.
    Test = 14,
    /// Prints and exits, or prints help: `--help`, `--version`, `--v8-options`,
    /// `--completion-bash`.
    NoMain = 15,
    /// `--prof-process`: the alias of `--prof-process --`, the end of the options.
    EndOfOptions = 16,
    /// `--require`/`-r`: a CommonJS module node loads before the main one, a path or a
    /// package name ([`Word::Preload`]).
    Require = 17,
    /// `--title`: node writes the title over its argv before it loads any module, so the
    /// command line the agent reads in `/proc/PID/cmdline` (to know what the operand and
    /// the preloads name) is gone: refused unread.
    Title = 18,
}

/// Packs a name at compile time (the table) or panics at compile time when it is too long.
const fn key(name: &str) -> Key {
    let bytes = name.as_bytes();
    assert!(bytes.len() <= NAME_MAX, "option name longer than NAME_MAX");
    let mut key = [0u64; NAME_WORDS];
    let mut i = 0;
    while i < bytes.len() {
        key[i / 8] |= (bytes[i] as u64) << (56 - 8 * (i % 8));
        i += 1;
    }
    key
}

macro_rules! options {
    ($($name:literal => $kind:ident,)*) => {
        /// The option names (normalized, aliases included) whose reading is not one word,
        /// or that ask for something guard judges: the union of node 18's and node 20's
        /// tables, sorted by name (a unit test checks the order, the differential test
        /// each binary's own table).
        pub const OPTIONS: &[(&str, Kind)] = &[$(($name, Kind::$kind),)*];
        const KEYS: &[(Key, Kind)] = &[$((key($name), Kind::$kind),)*];
    };
}

options! {
    "--allow-fs-read" => ValueInSomeVersions,
    "--allow-fs-write" => ValueInSomeVersions,
    "--build-snapshot" => BuildSnapshot,
    "--build-snapshot-config" => CodeFile,
    "--check" => Check,
    "--completion-bash" => NoMain,
    "--conditions" => Value,
    "--cpu-prof-dir" => Value,
    "--cpu-prof-interval" => Value,
    "--cpu-prof-name" => Value,
    "--debug" => Inspector,
    "--debug-brk" => Inspector,
    "--debug-port" => Value,
    "--diagnostic-dir" => Value,
    "--disable-proto" => Value,
    "--disable-warning" => ValueInSomeVersions,
    "--dns-result-order" => Value,
    "--env-file" => EnvFile,
    "--env-file-if-exists" => EnvFile,
    "--es-module-specifier-resolution" => ValueInSomeVersions,
    "--eval" => Eval,
    "--experimental-default-type" => Value,
    "--experimental-loader" => Specifier,
    "--experimental-policy" => Value,
    "--experimental-sea-config" => CodeFile,
    "--experimental-specifier-resolution" => ValueInSomeVersions,
    "--heap-prof-dir" => Value,
    "--heap-prof-interval" => Value,
    "--heap-prof-name" => Value,
    "--heapsnapshot-near-heap-limit" => Value,
    "--heapsnapshot-signal" => Value,
    "--help" => NoMain,
    "--icu-data-dir" => Value,
    "--import" => Specifier,
    "--input-type" => Value,
    "--inspect" => Inspector,
    "--inspect-brk" => Inspector,
    "--inspect-brk-node" => Inspector,
    "--inspect-port" => Value,
    "--inspect-publish-uid" => Value,
    "--inspect-wait" => Inspector,
    "--interactive" => Interactive,
    "--loader" => Specifier,
    "--max-http-header-size" => Value,
    "--network-family-autoselection-attempt-timeout" => ValueInSomeVersions,
    "--openssl-config" => Value,
    "--policy-integrity" => Value,
    "--print" => Print,
    "--prof-process" => EndOfOptions,
    "--redirect-warnings" => Value,
    "--report-dir" => Value,
    "--report-directory" => Value,
    "--report-filename" => Value,
    "--report-signal" => Value,
    "--require" => Require,
    "--secure-heap" => Value,
    "--secure-heap-min" => Value,
    "--security-revert" => Value,
    "--security-reverts" => Value,
    "--snapshot-blob" => SnapshotBlob,
    "--test" => Test,
    "--test-concurrency" => Value,
    "--test-name-pattern" => Value,
    "--test-reporter" => Specifier,
    "--test-reporter-destination" => Value,
    "--test-shard" => Value,
    "--test-timeout" => ValueInSomeVersions,
    "--title" => Title,
    "--tls-cipher-list" => Value,
    "--tls-keylog" => Value,
    "--trace-event-categories" => Value,
    "--trace-event-file-pattern" => Value,
    "--trace-require-module" => ValueInSomeVersions,
    "--unhandled-rejections" => Value,
    "--use-largepages" => Value,
    "--v8-options" => NoMain,
    "--v8-pool-size" => Value,
    "--version" => NoMain,
    "--watch-path" => Value,
    "-C" => Value,
    "-c" => Check,
    "-e" => Eval,
    "-h" => NoMain,
    "-i" => Interactive,
    "-p" => Print,
    "-pe" => PrintEval,
    "-r" => Require,
    "-v" => NoMain,
}

/// Slots of the name table's hash index (a power of two, about three times the names).
const SLOTS: usize = 256;

/// A packed name's slot: arithmetic only (multiply and xor), no branch.
#[inline(always)]
const fn hash(key: &Key) -> usize {
    let mut h: u64 = 0;
    let mut i = 0;
    while i < NAME_WORDS {
        h = (h ^ key[i]).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
        i += 1;
    }
    // The top byte: below SLOTS.
    (h >> 56) as usize
}

/// The hash index: slot -> one more than the name's place in [`KEYS`] (0: empty), names
/// placed by linear probing; and the longest probe any name needs.
const INDEX: ([u8; SLOTS], usize) = {
    let mut slots = [0u8; SLOTS];
    let mut longest = 0;
    let mut n = 0;
    while n < KEYS.len() {
        let start = hash(&KEYS[n].0);
        let mut probe = 0;
        while slots[(start + probe) % SLOTS] != 0 {
            probe += 1;
        }
        // Below 255: asserted after.
        #[allow(clippy::cast_possible_truncation)]
        let entry = (n + 1) as u8;
        slots[(start + probe) % SLOTS] = entry;
        if probe + 1 > longest {
            longest = probe + 1;
        }
        n += 1;
    }
    (slots, longest)
};
const PROBES: usize = INDEX.1;
const _: () = assert!(
    KEYS.len() < 255 && PROBES <= 4,
    "the name index needs few probes"
);

/// The kind of a packed name. Written for the BPF verifier: a slot from arithmetic, then at
/// most [`PROBES`] entries, each compared with one test on the xor of all its words (a test
/// per word, or a binary search, would refine the name differently on each path, and the
/// verifier would walk every refinement: it refused the program).
#[inline(always)]
fn kind_of(name: &Key) -> Kind {
    let start = hash(name);
    let mut probe = 0;
    while probe < PROBES {
        let slot = INDEX.0[(start + probe) & (SLOTS - 1)] as usize;
        // An empty slot (0) is no entry: the name is in none.
        let Some(&(key, kind)) = KEYS.get(slot.wrapping_sub(1)) else {
            return Kind::Word;
        };
        let mut differ = 0u64;
        let mut i = 0;
        while i < NAME_WORDS {
            differ |= key[i] ^ name[i];
            i += 1;
        }
        if differ == 0 {
            return kind;
        }
        probe += 1;
    }
    Kind::Word
}

/// Bytes of a word the reader scans: the kernel's word buffer, [`ARG_BUFFER`]
/// (`crate::exec_gate::ARG_BUFFER`): at most that less one byte of the word, then zeros.
pub type Padded = [u8; ARG_BUFFER];

/// The first [`ARG_BUFFER`]` - 1` bytes of `word`, then zeros: what the kernel's word buffer
/// holds (cleared before each read).
pub fn pad(word: &[u8]) -> Padded {
    let mut padded = [0u8; ARG_BUFFER];
    let n = word.len().min(ARG_BUFFER - 1);
    padded[..n].copy_from_slice(&word[..n]);
    padded
}

/// An option word as node reads it (it starts with `-`, has two bytes or more, is not `--`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionWord {
    pub kind: Kind,
    /// `--no-NAME`.
    pub negated: bool,
    /// A word starting with `--` has an `=` in its first [`SCAN`] bytes: the value is the
    /// rest. Further on, the name is longer than any in the table, and the word one word.
    pub attached: bool,
    /// Where the value starts when `attached`: after the first `=`.
    pub value: usize,
}

/// 64-bit words of an option word read to find its name: the longest name in the table,
/// a negation's `no-` and one byte more (a name reaching it is longer than any).
const SCAN_WORDS: usize = NAME_WORDS + 1;
/// Bytes of an option word read to find its name.
pub const SCAN: usize = SCAN_WORDS * 8;

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// 0x80 in each byte of `x` that is zero, 0 in the others (exact: no carry crosses bytes).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// All ones when `x` is not zero, else zero.
#[inline(always)]
fn nonzero_mask(x: u64) -> u64 {
    ((x | x.wrapping_neg()) >> 63).wrapping_neg()
}

/// Every bit from the highest set one down.
#[inline(always)]
fn smear(mut x: u64) -> u64 {
    x |= x >> 1;
    x |= x >> 2;
    x |= x >> 4;
    x |= x >> 8;
    x |= x >> 16;
    x | (x >> 32)
}

/// Reads an option word's name as node does: up to the first `=` when the word starts with
/// `--`; `_` from the third byte on read as `-`; a leading `--no-` taken off.
pub fn option_word(word: &[u8]) -> OptionWord {
    option_word_padded(&pad(word))
}

/// [`option_word`] of a padded word ([`pad`]). Written for the BPF verifier: the name is
/// read as eight-byte words at fixed offsets, and the `=`, the `_` and the negation are
/// arithmetic on them, without a branch on a byte. A loop over the word's bytes that
/// carried where the `=` was, or how long the name is, made the verifier walk every
/// combination (over its million instructions).
#[inline(always)]
pub fn option_word_padded(padded: &Padded) -> OptionWord {
    let mut raw = [0u64; SCAN_WORDS];
    let mut j = 0;
    while j < SCAN_WORDS {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&padded[8 * j..8 * j + 8]);
        raw[j] = u64::from_be_bytes(bytes);
        j += 1;
    }
    // All ones when the word starts with `--`.
    let long = !nonzero_mask((raw[0] >> 48) ^ 0x2d2d);
    // The name: bytes up to the first `=` of a long word, `_` from the third byte on as `-`.
    let mut name = [0u64; SCAN_WORDS];
    let mut cut = 0u64;
    let mut value = 0u64;
    let mut j = 0;
    while j < SCAN_WORDS {
        let equals = zero_bytes(raw[j] ^ (b'=' as u64 * ONES)) & long;
        let kept = raw[j] & !smear(equals) & !cut;
        // The first `=`: its byte's high bit is the highest set one of `equals`.
        let here = nonzero_mask(equals) & !cut;
        value |= (8 * j as u64 + u64::from(equals.leading_zeros()) / 8 + 1) & here;
        cut |= nonzero_mask(equals);
        let mut underscores = zero_bytes(kept ^ (b'_' as u64 * ONES));
        if j == 0 {
            underscores &= 0x0000_ffff_ffff_ffff;
        }
        // `_` (0x5f) less 0x32 is `-` (0x2d), in each byte on its own.
        name[j] = kept - (underscores >> 7) * (b'_' - b'-') as u64;
        j += 1;
    }
    // All ones for `--no-`: bytes 2 to 4 of a long word. The name is then what follows,
    // after `--`: every byte three places earlier.
    let negated = !nonzero_mask(((name[0] >> 24) & 0xff_ffff) ^ 0x6e_6f2d) & long;
    let mut key = [0u64; SCAN_WORDS];
    let mut j = 0;
    while j < SCAN_WORDS {
        let next = if j + 1 < SCAN_WORDS {
            name[j + 1] >> 40
        } else {
            0
        };
        let mut shifted = (name[j] << 24) | next;
        if j == 0 {
            shifted = (shifted & 0x0000_ffff_ffff_ffff) | (0x2d2d << 48);
        }
        key[j] = (shifted & negated) | (name[j] & !negated);
        j += 1;
    }
    let mut table_key = [0u64; NAME_WORDS];
    table_key.copy_from_slice(&key[..NAME_WORDS]);
    // A nonzero byte past NAME_MAX: no name in the table is that long.
    let kind = if key[NAME_WORDS] != 0 {
        Kind::Word
    } else {
        kind_of(&table_key)
    };
    OptionWord {
        kind,
        negated: negated != 0,
        attached: cut != 0,
        // At most SCAN.
        #[allow(clippy::cast_possible_truncation)]
        value: value as usize,
    }
}

/// The bytes of a padded word from `start` on: a padded value of its own, which ends at its
/// first NUL (what follows it, the start of the word again, is never read as the value).
/// Indices are masked, so the verifier sees each read in bounds; no byte is tested, so it
/// walks the copy once.
#[inline(always)]
fn padded_from(padded: &Padded, start: usize) -> Padded {
    let mut value = [0u8; ARG_BUFFER];
    let mut k = 0;
    while k < ARG_BUFFER {
        value[k] = padded[(start + k) & (ARG_BUFFER - 1)];
        k += 1;
    }
    value
}

#[inline(always)]
fn starts(padded: &Padded, prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() && i < ARG_BUFFER {
        if padded[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether a padded name (a module's) is spelled as a descriptor or a device: an absolute
/// name whose first component, after a leading run of `/` and `.` (all of them stay at
/// `/`), is `dev` or `proc`: `/dev/stdin`, `/dev/fd/3`, `/proc/self/fd/0`, `/dev/tty`,
/// `//dev/./stdin`, `/./proc/…`; and a run of sixteen bytes or more, which no module's name
/// has. Wider than the exec gate's reading of a script operand (all of `/dev` and `/proc`,
/// `/dev/shm` included: a module has no business there), and as blind to `..` through
/// another directory and to symlinks, which the kernel layer judges by what was opened.
/// The name ends at its first NUL; all it looks at lies in its first 21 bytes, which the
/// kernel always reads.
///
/// Written for the BPF verifier: the run's end comes from arithmetic on the first sixteen
/// bytes, not from a loop, so the reads after it are one path (a loop's exit position,
/// used after it, made every position a path of its own: half a million instructions).
#[inline(always)]
pub fn names_descriptor(name: &Padded) -> bool {
    if name[0] != b'/' {
        return false;
    }
    let word = |j: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&name[8 * j..8 * j + 8]);
        u64::from_be_bytes(bytes)
    };
    // 0x80 in each byte that is neither `/` nor `.`.
    let other = |w: u64| {
        !(zero_bytes(w ^ (b'/' as u64 * ONES)) | zero_bytes(w ^ (b'.' as u64 * ONES))) & (ONES << 7)
    };
    let (first, second) = (other(word(0)), other(word(1)));
    if first == 0 && second == 0 {
        return true;
    }
    // Bytes in the run: before the first byte that is neither.
    let run = if first != 0 {
        first.leading_zeros() / 8
    } else {
        8 + second.leading_zeros() / 8
    } as usize;
    let at = |i: usize| name[i & (ARG_BUFFER - 1)];
    // `/..dev` is the component `..dev`.
    if at(run.wrapping_sub(1)) != b'/' {
        return false;
    }
    let (a, b, c, d, e) = (at(run), at(run + 1), at(run + 2), at(run + 3), at(run + 4));
    (a == b'd' && b == b'e' && c == b'v' && d == b'/')
        || (a == b'p' && b == b'r' && c == b'o' && d == b'c' && e == b'/')
}

/// How node reads an ES module specifier given to `--import`, `--loader` or
/// `--test-reporter` (resolved from the working directory): a specifier starting with `/`,
/// `./` or `../` is a path, anything else that parses as a URL that URL, and the rest a
/// package name. The URL parser (WHATWG) strips leading C0 controls and spaces, removes
/// tabs and newlines anywhere, reads the scheme whatever its case, `\` as `/` and
/// percent-escapes in paths (`--import /%64ev/stdin` reads standard input), so:
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Specifier {
    /// Code that is no file: a `data:` URL (inline code), `http:`/`https:` (the network),
    /// any other scheme but `file:` and `node:` (` DATA:…` and `da\tta:…` are `data:` URLs).
    Code,
    /// A built-in module (`node:fs`).
    Builtin,
    /// A path or a package name, spelled as node will open it: [`Word::Preload`].
    Name,
    /// A `file:` URL, or a name the URL parser would rewrite (a `%`, a `\`, a space or
    /// control byte), or one longer than the kernel reads: what it names is not known by
    /// its spelling.
    Unjudged,
}

/// Reads an ES module specifier as node resolves it (see [`Specifier`]).
pub fn specifier(value: &[u8]) -> Specifier {
    specifier_padded(&pad(value), value.len() < ARG_BUFFER - 1)
}

/// 0x80 in each byte of `x` below `n` (at most 0x80), 0 in the others: exact, as
/// [`zero_bytes`].
#[inline(always)]
fn bytes_below(x: u64, n: u8) -> u64 {
    !((x | (ONES << 7)).wrapping_sub(n as u64 * ONES)) & !x & (ONES << 7)
}

/// 0x80 in each byte of `x` that is one the URL parser strips, removes or rewrites in a
/// specifier: a C0 control or a space (but not a zero: the padding), `%`, `\`, DEL.
#[inline(always)]
fn rewritten_bytes(x: u64) -> u64 {
    (bytes_below(x, 0x21) & !zero_bytes(x))
        | zero_bytes(x ^ (b'%' as u64 * ONES))
        | zero_bytes(x ^ (b'\\' as u64 * ONES))
        | zero_bytes(x ^ (0x7f * ONES))
}

/// [`specifier`] of a padded value, `whole` when it was read to its end. A `data:`,
/// `http:` or `https:` scheme has its `:` within the first six bytes unless a byte the URL
/// parser strips or removes comes first, so either byte there makes it [`Specifier::Code`];
/// the rest of a name is read for bytes the parser rewrites.
///
/// Written for the BPF verifier: arithmetic on eight bytes at a time, no loop that stops
/// at the value's end (a path per length for the verifier, a quarter of a million
/// instructions). Bytes after the value's end are zeros, or what a copy from within a word
/// brings after them (the option's name), never bytes it looks for.
#[inline(always)]
pub fn specifier_padded(value: &Padded, whole: bool) -> Specifier {
    let word = |j: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&value[8 * j..8 * j + 8]);
        u64::from_be_bytes(bytes)
    };
    let first = word(0);
    let path = value[0] == b'/' || starts(value, b"./") || starts(value, b"../");
    if !path {
        if starts(value, b"node:") {
            return Specifier::Builtin;
        }
        if starts(value, b"file:") {
            return Specifier::Unjudged;
        }
        // A `:`, a space or a control byte in the first six bytes, before the value's end.
        let ended = smear(zero_bytes(first));
        let scheme = (zero_bytes(first ^ (b':' as u64 * ONES)) | bytes_below(first, 0x21))
            & !ended
            & 0xffff_ffff_ffff_0000;
        if scheme != 0 {
            return Specifier::Code;
        }
    }
    if !whole {
        return Specifier::Unjudged;
    }
    let mut rewritten = 0u64;
    let mut j = 0;
    while j < ARG_BUFFER / 8 {
        rewritten |= rewritten_bytes(word(j));
        j += 1;
    }
    if rewritten != 0 {
        Specifier::Unjudged
    } else {
        Specifier::Name
    }
}

/// The word a specifier is read as: `name` is its slice of the word, `value` its padded
/// copy; `attached`: the option's own word.
#[inline(always)]
fn specifier_word<'a>(name: &'a [u8], value: &Padded, whole: bool, attached: bool) -> Word<'a> {
    match specifier_padded(value, whole) {
        Specifier::Code => Word::InlineCode,
        Specifier::Unjudged => Word::Unread,
        Specifier::Name => Word::Preload {
            name,
            descriptor: names_descriptor(value),
        },
        Specifier::Builtin if attached => Word::OptionsWithArgument,
        Specifier::Builtin => Word::Argument,
    }
}

/// What the reader expects of the next word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Expect {
    #[default]
    Option,
    /// The value of an option.
    Value,
    /// The value of `--require`.
    Require,
    /// The value of an option that imports an ES module specifier.
    Specifier,
    /// After `--print`: code when not empty and not starting with `-`, else read as usual.
    PrintArgument,
    /// After `--` (or `--prof-process`): the operand, whatever it is.
    Operand,
    /// The operand was read: the rest is the program's.
    Done,
}

// The reader's state bits. Set and cleared without branches, and only judged at the end:
// each bit the verifier had to follow from word to word would double the states it walks.
/// `--eval` code (also `-p WORD`, `-pe`).
const EVAL: u16 = 1 << 0;
/// `-i`/`--interactive`, last one wins (`--no-interactive`).
const REPL: u16 = 1 << 1;
/// An inspector was asked for (never cleared: `--no-inspect` is not read).
const INSPECTOR: u16 = 1 << 2;
/// `--check`.
const CHECK: u16 = 1 << 3;
/// `--test`.
const TEST: u16 = 1 << 4;
/// `--help`, `--version`, `--v8-options`, `--completion-bash`.
const NO_MAIN: u16 = 1 << 5;
/// `--build-snapshot` (its negation is refused unread).
const BUILD: u16 = 1 << 6;
/// An operand was read.
const OPERAND: u16 = 1 << 7;
/// The operand is standard input: `-` or the empty word.
const STDIN_OPERAND: u16 = 1 << 8;
/// The operand is `inspect`: the debugger client, a REPL on another node.
const CLIENT: u16 = 1 << 9;

#[inline(always)]
fn set(state: u16, bit: u16, on: bool) -> u16 {
    (state & !bit) | (bit * u16::from(on))
}

/// Reads a node argv (without `argv[0]`) one word at a time, holding nothing borrowed, as
/// the kernel exec gate does; [`parse`] is built on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reader {
    expect: Expect,
    state: u16,
}

impl Reader {
    pub const fn new() -> Self {
        Reader {
            expect: Expect::Option,
            state: 0,
        }
    }

    /// True once the words that follow belong to the program.
    pub fn done(&self) -> bool {
        matches!(self.expect, Expect::Done)
    }

    /// True when the next word is read as an option or the operand.
    pub fn expects_option(&self) -> bool {
        matches!(self.expect, Expect::Option | Expect::PrintArgument)
    }

    #[inline(always)]
    fn has(&self, bit: u16) -> bool {
        self.state & bit != 0
    }

    /// The operand names a file node runs as its main module (not `-`, the empty word or
    /// `inspect`).
    fn file_operand(&self) -> bool {
        self.has(OPERAND) && !self.has(STDIN_OPERAND) && !self.has(CLIENT)
    }

    /// Node runs no main of its own choosing: a syntax check, the test runner, help or
    /// version.
    fn no_main(&self) -> bool {
        self.state & (CHECK | TEST | NO_MAIN) != 0
    }

    /// True when the options ask for a console or a debugger: an inspector, the debugger
    /// client, or `-i` where node would otherwise read standard input or run `-e` code.
    pub fn interactive(&self) -> bool {
        self.has(INSPECTOR)
            || self.has(CLIENT)
            || (self.has(REPL) && !self.file_operand() && !self.no_main())
    }

    /// True when, with the command line ending here, node would read its program from
    /// standard input (or run a REPL on a terminal): no operand (or `-`, or the empty
    /// word), no `-e`/`-p` code, no syntax check, test runner or help.
    pub fn reads_stdin_without_script(&self) -> bool {
        !self.file_operand() && !self.has(CLIENT) && !self.has(EVAL) && !self.no_main()
    }

    /// True when an option that needs a value came last with none: node refuses to start.
    pub fn truncated(&self) -> bool {
        matches!(
            self.expect,
            Expect::Value | Expect::Require | Expect::Specifier
        )
    }

    #[inline(always)]
    fn operand<'a>(&mut self, word: &'a [u8], padded: &Padded) -> Word<'a> {
        self.expect = Expect::Done;
        let len = word.len();
        let stdin = len == 0 || (len == 1 && padded[0] == b'-');
        let client = starts(padded, b"inspect\0");
        self.state |= OPERAND;
        self.state = set(self.state, STDIN_OPERAND, stdin);
        self.state = set(self.state, CLIENT, client);
        Word::Script(word)
    }

    /// Reads the next word.
    pub fn feed<'a>(&mut self, word: &'a [u8]) -> Word<'a> {
        self.feed_padded(word, &pad(word))
    }

    /// Reads the next word, given also padded ([`pad`]: the kernel's word buffer, cleared
    /// before each read), where the reader scans its bytes at fixed or masked offsets: the
    /// BPF verifier then walks each scan once. Every slice in the answer is one of `word`'s.
    /// Inlined: a BPF subprogram cannot return the word's slice.
    #[inline(always)]
    pub fn feed_padded<'a>(&mut self, word: &'a [u8], padded: &Padded) -> Word<'a> {
        // The kernel read the word to its end (as far as it can tell: one that fills the
        // buffer may go on).
        let whole = word.len() < ARG_BUFFER - 1;
        match self.expect {
            Expect::Done => return Word::Program,
            Expect::Operand => return self.operand(word, padded),
            Expect::Value => {
                self.expect = Expect::Option;
                return Word::Argument;
            }
            Expect::Require => {
                self.expect = Expect::Option;
                return Word::Preload {
                    name: word,
                    descriptor: names_descriptor(padded),
                };
            }
            Expect::Specifier => {
                self.expect = Expect::Option;
                return specifier_word(word, padded, whole, false);
            }
            Expect::PrintArgument => {
                self.expect = Expect::Option;
                // `--print WORD` is `--print --eval WORD`.
                if !word.is_empty() && padded[0] != b'-' {
                    self.state |= EVAL;
                    return Word::InlineCode;
                }
            }
            Expect::Option => {}
        }
        let len = word.len();
        if len < 2 || padded[0] != b'-' {
            return self.operand(word, padded);
        }
        if len == 2 && padded[1] == b'-' {
            self.expect = Expect::Operand;
            return Word::Options;
        }
        let option = option_word_padded(padded);
        let on = !option.negated;
        let attached = option.attached;
        match option.kind {
            Kind::Word => Word::Options,
            Kind::Value => self.value(attached),
            Kind::ValueInSomeVersions => {
                if attached {
                    Word::OptionsWithArgument
                } else {
                    Word::Unread
                }
            }
            Kind::Eval | Kind::PrintEval => {
                self.state |= EVAL;
                if !attached {
                    self.expect = Expect::Value;
                }
                Word::InlineCode
            }
            Kind::Print => {
                self.expect = Expect::PrintArgument;
                Word::Options
            }
            Kind::Specifier => {
                if attached {
                    let value = padded_from(padded, option.value);
                    specifier_word(
                        word.get(option.value..).unwrap_or_default(),
                        &value,
                        whole,
                        true,
                    )
                } else {
                    self.expect = Expect::Specifier;
                    Word::OptionsWithArgument
                }
            }
            Kind::Require => {
                if attached {
                    let value = padded_from(padded, option.value);
                    Word::Preload {
                        name: word.get(option.value..).unwrap_or_default(),
                        descriptor: names_descriptor(&value),
                    }
                } else {
                    self.expect = Expect::Require;
                    Word::OptionsWithArgument
                }
            }
            Kind::EnvFile => {
                if attached {
                    Word::CodeEnvironment
                } else {
                    Word::Unread
                }
            }
            Kind::CodeFile => Word::Unread,
            Kind::Title => {
                if !attached {
                    self.expect = Expect::Value;
                }
                Word::Unread
            }
            Kind::SnapshotBlob => {
                if self.has(BUILD) {
                    self.value(attached)
                } else {
                    Word::Unread
                }
            }
            Kind::BuildSnapshot => {
                if on {
                    self.state |= BUILD;
                    Word::Options
                } else {
                    Word::Unread
                }
            }
            Kind::Interactive => {
                self.state = set(self.state, REPL, on);
                Word::Options
            }
            Kind::Inspector => {
                self.state |= INSPECTOR * u16::from(on);
                Word::Options
            }
            Kind::Check => {
                self.state = set(self.state, CHECK, on);
                Word::Options
            }
            Kind::Test => {
                self.state = set(self.state, TEST, on);
                Word::Options
            }
            Kind::NoMain => {
                self.state = set(self.state, NO_MAIN, on);
                Word::Options
            }
            Kind::EndOfOptions => {
                self.expect = Expect::Operand;
                Word::Options
            }
        }
    }

    #[inline(always)]
    fn value<'a>(&mut self, attached: bool) -> Word<'a> {
        if !attached {
            self.expect = Expect::Value;
        }
        Word::OptionsWithArgument
    }
}

impl crate::argv::Grammar for Reader {
    /// Node has no option clusters: the limit does not apply.
    #[inline(always)]
    fn with_cluster_limit(_limit: usize) -> Self {
        Reader::new()
    }
    /// Node has no option that skips a start-up hook: never [`Word::NoSite`].
    #[inline(always)]
    fn feed_stopping_at_no_hook<'a, const STOP: bool>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.feed(arg)
    }
    #[inline(always)]
    fn feed_padded<'a, const STOP: bool>(&mut self, arg: &'a [u8], padded: &Padded) -> Word<'a> {
        Reader::feed_padded(self, arg, padded)
    }
    #[inline(always)]
    fn done(&self) -> bool {
        Reader::done(self)
    }
    #[inline(always)]
    fn expects_option(&self) -> bool {
        Reader::expects_option(self)
    }
    #[inline(always)]
    fn interactive(&self) -> bool {
        Reader::interactive(self)
    }
    #[inline(always)]
    fn reads_stdin_without_script(&self) -> bool {
        Reader::reads_stdin_without_script(self)
    }
}

/// What node will run, as far as its options say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invocation<'a> {
    /// Code on the command line: `-e`, `--eval`, `-p CODE`, `-pe`, or a specifier that is
    /// a `data:` (or `http:`) URL.
    pub inline_code: bool,
    /// The operand (`-` and the empty word mean standard input, `inspect` the debugger).
    pub script: Option<&'a [u8]>,
    /// A REPL, an inspector or the debugger client ([`Reader::interactive`]).
    pub interactive: bool,
    /// Node reads its program from standard input ([`Reader::reads_stdin_without_script`]).
    pub reads_stdin: bool,
    /// `--env-file=FILE`.
    pub code_environment: bool,
    /// An option guard does not read (a code file, a value a node version might not take).
    pub unread: bool,
    /// An option that needs a value came last with none: node refuses to start.
    pub truncated: bool,
}

/// Reads a node argv (without `argv[0]`). Everything after the operand belongs to the
/// program.
pub fn parse<'a, I>(args: I) -> Invocation<'a>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut reader = Reader::new();
    let mut invocation = Invocation::default();
    for arg in args {
        match reader.feed(arg) {
            Word::Script(script) => invocation.script = Some(script),
            Word::InlineCode => invocation.inline_code = true,
            Word::CodeEnvironment => invocation.code_environment = true,
            Word::Unread => invocation.unread = true,
            _ => {}
        }
        if reader.done() {
            break;
        }
    }
    invocation.interactive = reader.interactive();
    invocation.reads_stdin = reader.reads_stdin_without_script();
    invocation.truncated = reader.truncated();
    invocation
}

/// Reads a command line as the kernel keeps it, skipping `argv[0]`.
pub fn parse_cmdline(cmdline: &[u8]) -> Invocation<'_> {
    parse(crate::python_argv::cmdline_words(cmdline).skip(1))
}

/// How a module named on the command line is loaded before the main one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreloadKind {
    /// `-r`/`--require`: CommonJS `require()`, a path or a package; any extension but
    /// `.json`, `.node` (and `.mjs`) is compiled as JavaScript.
    Require,
    /// `--import`, `--loader`/`--experimental-loader`, `--test-reporter`: an ES module
    /// specifier resolved from the working directory.
    Import,
}

/// The modules the options name to load before the main one (`-r X`, `--import=X`…), in
/// order, as node reads them: what node opens for them is code whatever its name. Stops at
/// the operand.
pub fn preloads<'a, I>(args: I) -> Preloads<'a, I::IntoIter>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    Preloads {
        args: args.into_iter(),
        reader: Reader::new(),
        pending: PreloadKind::Require,
    }
}

/// See [`preloads`].
pub struct Preloads<'a, I: Iterator<Item = &'a [u8]>> {
    args: I,
    reader: Reader,
    /// The kind of the option whose value the next word may be.
    pending: PreloadKind,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Iterator for Preloads<'a, I> {
    type Item = (PreloadKind, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.reader.done() {
                return None;
            }
            let word = self.args.next()?;
            let option = self.reader.expects_option() && word.len() > 1 && word[0] == b'-';
            let read = self.reader.feed(word);
            let kind = if option {
                match option_word(word).kind {
                    Kind::Require => PreloadKind::Require,
                    _ => PreloadKind::Import,
                }
            } else {
                self.pending
            };
            match read {
                Word::Preload { name, .. } => return Some((kind, name)),
                Word::OptionsWithArgument if option => self.pending = kind,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::boxed::Box;
    use std::vec::Vec;

    fn run(args: &[&str]) -> Invocation<'static> {
        let owned: &'static [&'static [u8]] = Box::leak(
            args.iter()
                .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
                .collect::<Vec<&'static [u8]>>()
                .into_boxed_slice(),
        );
        parse(owned.iter().copied())
    }

    #[test]
    fn table_is_sorted_unique_and_packs_back() {
        for pair in OPTIONS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (i, (name, kind)) in OPTIONS.iter().enumerate() {
            assert!(name.len() <= NAME_MAX, "{name}");
            assert_eq!(KEYS[i].0, key(name));
            assert_eq!(option_word(name.as_bytes()).kind, *kind, "{name}");
        }
    }

    #[test]
    fn names_are_read_as_node_reads_them() {
        let kind = |w: &str| option_word(w.as_bytes()).kind;
        assert_eq!(kind("--eval=x"), Kind::Eval);
        assert_eq!(kind("--eval"), Kind::Eval);
        assert_eq!(kind("-e"), Kind::Eval);
        // No `=` split for one dash: `-e=x` is an unknown option.
        assert_eq!(kind("-e=x"), Kind::Word);
        assert_eq!(kind("--input_type=module"), Kind::Value);
        assert_eq!(kind("--no-interactive"), Kind::Interactive);
        assert_eq!(kind("--no_interactive"), Kind::Interactive);
        assert!(option_word(b"--no_interactive").negated);
        assert!(!option_word(b"--node-memory-debug").negated);
        assert_eq!(kind("--inspect_brk=0"), Kind::Inspector);
        assert_eq!(kind("--EVAL"), Kind::Word);
        assert_eq!(kind("---eval"), Kind::Word);
        assert_eq!(kind("--e"), Kind::Word);
        assert_eq!(kind("-ep"), Kind::Word);
        assert_eq!(kind("-pe"), Kind::PrintEval);
        assert_eq!(kind("-_e"), Kind::Word);
        assert_eq!(kind("--no-"), Kind::Word);
        assert_eq!(kind("--no-no-interactive"), Kind::Word);
        assert_eq!(kind("--expose-gc"), Kind::Word);
        assert_eq!(kind("--eval_"), Kind::Word);
        assert!(option_word(b"--title=a=b").attached);
        assert_eq!(option_word(b"--title=a=b").value, 8);
        assert_eq!(option_word(b"--no_title=").value, 11);
        let at_end = std::format!("--{}=", "t".repeat(SCAN - 3));
        assert_eq!(option_word(at_end.as_bytes()).value, SCAN);
        assert!(!option_word(std::format!("--{}=", "t".repeat(SCAN - 2)).as_bytes()).attached);
        assert!(!option_word(b"-p=x").attached);
        assert!(!option_word(b"--title").attached);
        assert_eq!(kind("--no_input-type=x"), Kind::Value);
        assert!(option_word(b"--no_input-type=x").negated);
        assert_eq!(kind("--no-=x"), Kind::Word);
        assert_eq!(kind("--test_name_pattern"), Kind::Value);
        assert_eq!(kind("-_p"), Kind::Word);
        // The longest name, negated, and one byte longer.
        let longest = "--network-family-autoselection-attempt-timeout";
        assert_eq!(kind(longest), Kind::ValueInSomeVersions);
        assert_eq!(
            kind(&std::format!("--no-{}", &longest[2..])),
            Kind::ValueInSomeVersions
        );
        assert_eq!(kind(&std::format!("{longest}x")), Kind::Word);
        assert_eq!(
            kind(&std::format!("{longest}=x")),
            Kind::ValueInSomeVersions
        );
        assert_eq!(kind(&std::format!("--no-{}x", &longest[2..])), Kind::Word);
        let long = std::format!("--{}", "a".repeat(200));
        assert_eq!(kind(&long), Kind::Word);
        // A name that is a table name followed by more bytes past NAME_MAX.
        let long = std::format!("--require{}", "_".repeat(60));
        assert_eq!(kind(&long), Kind::Word);
    }

    #[test]
    fn inline_code_in_every_spelling() {
        for args in [
            &["-e", "x"][..],
            &["--eval", "x"],
            &["--eval=x"],
            &["-pe", "x"],
            &["-p", "x"],
            &["--print", "x"],
            &["--print=y", "x"],
            &["--no-print", "x"],
            &["-p", "p.js"],
            &["-p", "\\-x"],
            &["--title", "t", "-e", "x", "s.js"],
            &["-e", ""],
            &["--import", "data:text/javascript,1"],
            &["--import= data:text/javascript,1"],
            &["--loader", "DATA:text/javascript,1"],
            &["--experimental_loader=https://x/y.mjs"],
            &["--test", "--test-reporter", "da\tta:text/javascript,1"],
        ] {
            assert!(run(args).inline_code, "{args:?}");
        }
        for args in [
            &["-p", ""][..],
            &["-p", "-"],
            &["-p", "-i"],
            &["--import", "./data:x"],
            &["--import", "file:data:text/javascript,1"],
            &["--import", "node:fs"],
            &["--import", "pkg"],
            &["--import", "/abs/x.mjs"],
            &["-r", "data:text/javascript,1"],
            &["s.js", "-e", "x"],
            &["--", "-e", "x"],
            &["--title", "-e"],
        ] {
            assert!(!run(args).inline_code, "{args:?}");
        }
        assert!(run(&["-p", "-e", "x"]).inline_code);
        assert!(!run(&["-p", ""]).inline_code);
        assert!(run(&["-p", ""]).reads_stdin);
    }

    #[test]
    fn operands() {
        let script = |args: &[&str]| run(args).script.map(|s| s.to_vec());
        assert_eq!(script(&["s.js", "-e", "x"]), Some(b"s.js".to_vec()));
        assert_eq!(script(&["--", "-e"]), Some(b"-e".to_vec()));
        assert_eq!(script(&["--title", "t", "s.js"]), Some(b"s.js".to_vec()));
        assert_eq!(script(&["--title=t", "s.js"]), Some(b"s.js".to_vec()));
        assert_eq!(script(&["-r", "./p", "s.js"]), Some(b"s.js".to_vec()));
        assert_eq!(script(&["--expose-gc", "s.js"]), Some(b"s.js".to_vec()));
        assert_eq!(script(&["--stack-size", "s.js"]), Some(b"s.js".to_vec()));
        assert_eq!(script(&["--inspect", "s.js"]), Some(b"s.js".to_vec()));
        assert_eq!(
            script(&["--inspect-port", "0", "s.js"]),
            Some(b"s.js".to_vec())
        );
        assert_eq!(script(&["--prof-process", "-e"]), Some(b"-e".to_vec()));
        assert_eq!(script(&["--no-prof-process", "-i"]), Some(b"-i".to_vec()));
        assert_eq!(script(&["-p", "-", "x"]), Some(b"-".to_vec()));
        assert_eq!(script(&["-i", "", "x"]), Some(b"".to_vec()));
        assert!(run(&["--", ""]).reads_stdin);
        assert!(run(&["-"]).reads_stdin);
        assert!(run(&[""]).reads_stdin);
        assert!(run(&[]).reads_stdin);
        assert!(!run(&["s.js"]).reads_stdin);
        assert!(!run(&["-c"]).reads_stdin);
        assert!(!run(&["--test"]).reads_stdin);
        assert!(!run(&["--version"]).reads_stdin);
        assert!(!run(&["-v"]).reads_stdin);
        assert!(run(&["--version", "--no-version"]).reads_stdin);
        assert!(run(&["-r", "./p"]).reads_stdin);
        assert!(run(&["--title"]).truncated);
    }

    #[test]
    fn interactive_forms() {
        for args in [
            &["-i"][..],
            &["--interactive"],
            &["-i", "-"],
            &["-i", ""],
            &["-i", "-e", "x"],
            &["--no-interactive", "-i"],
            &["--interactive=0"],
            &["--inspect", "s.js"],
            &["--inspect=0", "s.js"],
            &["--inspect-brk=127.0.0.1:0", "s.js"],
            &["--inspect_wait", "s.js"],
            &["--inspect-brk-node", "s.js"],
            &["--debug", "s.js"],
            &["inspect", "s.js"],
            &["--", "inspect"],
            &["-c", "--inspect", "s.js"],
        ] {
            assert!(run(args).interactive, "{args:?}");
        }
        for args in [
            &["-i", "s.js"][..],
            &["-i", "--no-interactive"],
            &["--inspect-port", "0", "s.js"],
            &["--debug-port=0", "s.js"],
            &["--no-inspect", "s.js"],
            &["./inspect"],
            &["s.js", "-i"],
            &["-c", "-i"],
            &["--help", "-i"],
        ] {
            assert!(!run(args).interactive, "{args:?}");
        }
    }

    #[test]
    fn code_files_and_environment() {
        assert!(run(&["--env-file=.env", "s.js"]).code_environment);
        assert!(run(&["--env-file", ".env", "s.js"]).unread);
        // A title written over argv hides the command line from the agent.
        assert!(run(&["--title=x", "s.js"]).unread);
        assert!(run(&["--title", "x", "s.js"]).unread);
        assert!(run(&["s.js", "--title=x"]).script == Some(&b"s.js"[..]));
        assert!(!run(&["s.js", "--title=x"]).unread);
        assert!(run(&["--snapshot-blob", "b", "s.js"]).unread);
        assert!(run(&["--snapshot-blob=b"]).unread);
        assert!(!run(&["--build-snapshot", "--snapshot-blob", "b", "s.js"]).unread);
        assert_eq!(
            run(&["--build-snapshot", "--snapshot-blob", "b", "s.js"]).script,
            Some(&b"s.js"[..])
        );
        assert!(run(&["--build-snapshot", "--no-build-snapshot"]).unread);
        assert!(run(&["--build-snapshot-config", "c.json"]).unread);
        assert!(run(&["--experimental-sea-config=c.json"]).unread);
        // A value node 18 does not know as an option: only attached.
        assert!(run(&["--disable-warning", "X", "s.js"]).unread);
        assert!(!run(&["--disable-warning=X", "s.js"]).unread);
        assert!(run(&["--experimental-specifier-resolution", "node", "s.js"]).unread);
        assert_eq!(
            run(&["--experimental-specifier-resolution=node", "s.js"]).script,
            Some(&b"s.js"[..])
        );
    }

    #[test]
    fn specifiers() {
        for code in [
            "data:text/javascript,1",
            "DATA:x",
            " data:x",
            "\tdata:x",
            "da\tta:x",
            "dat\na:x",
            "http://x/y.mjs",
            "https://x/y.mjs",
            "blob:x",
            "FILE:///x",
            "x:y",
        ] {
            assert_eq!(specifier(code.as_bytes()), Specifier::Code, "{code:?}");
        }
        for name in [
            "./x.mjs",
            "../x.mjs",
            "/x.mjs",
            "/dev/stdin",
            "pkg",
            "@scope/pkg",
            "pkg/sub:path",
            "#internal",
            "httpsx:y",
            "./data:x",
            "",
        ] {
            assert_eq!(specifier(name.as_bytes()), Specifier::Name, "{name:?}");
        }
        for unjudged in [
            "file:///dev/stdin",
            "file:data:x",
            "/%64ev/stdin",
            "/dev\\stdin",
            "/de\tv/stdin",
            "./ data:x",
            "pkg/%2e%2e/x",
            "\\-data:x",
        ] {
            assert_eq!(
                specifier(unjudged.as_bytes()),
                Specifier::Unjudged,
                "{unjudged:?}"
            );
        }
        let long = std::format!("/{}", "a".repeat(130));
        assert_eq!(specifier(long.as_bytes()), Specifier::Unjudged);
        assert_eq!(specifier(b"node:repl"), Specifier::Builtin);
    }

    #[test]
    fn preloads_are_words_of_their_own() {
        let preload = |name: &'static [u8], descriptor| Word::Preload { name, descriptor };
        let mut reader = Reader::new();
        assert_eq!(reader.feed(b"-r"), Word::OptionsWithArgument);
        assert_eq!(reader.feed(b"/dev/stdin"), preload(b"/dev/stdin", true));
        assert_eq!(reader.feed(b"--require=./a"), preload(b"./a", false));
        assert_eq!(
            reader.feed(b"--import=/proc/self/fd/0"),
            preload(b"/proc/self/fd/0", true)
        );
        assert_eq!(reader.feed(b"--import"), Word::OptionsWithArgument);
        assert_eq!(reader.feed(b"/%64ev/stdin"), Word::Unread);
        assert_eq!(reader.feed(b"--loader=node:fs"), Word::OptionsWithArgument);
        assert_eq!(reader.feed(b"--loader"), Word::OptionsWithArgument);
        assert_eq!(reader.feed(b"node:fs"), Word::Argument);
        assert_eq!(reader.feed(b"--test-reporter=data:x"), Word::InlineCode);
        assert_eq!(
            reader.feed(b"--require=//dev/./tty"),
            preload(b"//dev/./tty", true)
        );
        // Unlike a script operand, a module under /dev/shm counts too.
        assert_eq!(
            reader.feed(b"--require=/dev/shm/x.js"),
            preload(b"/dev/shm/x.js", true)
        );
        assert_eq!(
            reader.feed(b"--require=/dev/shm/../tty"),
            preload(b"/dev/shm/../tty", true)
        );
        assert_eq!(
            reader.feed(b"--require=/dev/shm/.."),
            preload(b"/dev/shm/..", true)
        );
        assert_eq!(reader.feed(b"-r"), Word::OptionsWithArgument);
        assert_eq!(
            reader.feed(b"/opt/dev/x.js"),
            preload(b"/opt/dev/x.js", false)
        );
        assert_eq!(reader.feed(b"s.js"), Word::Script(b"s.js"));
        assert_eq!(reader.feed(b"-r"), Word::Program);
        // Spellings of descriptors and devices.
        for (name, descriptor) in [
            ("/dev/fd/3", true),
            ("/dev/stdin", true),
            ("/dev/stdinx", true),
            ("/proc/self/fd/0", true),
            ("/proc/1/task/1/fd/3", true),
            ("/proc/self/fdinfo/3", true),
            ("/proc/cpuinfo", true),
            ("/dev/tty", true),
            ("/./dev/tty", true),
            ("//dev/./stdin", true),
            ("/../proc/self/fd/0", true),
            ("/dev/shm/x.js", true),
            ("/dev", false),
            ("/devx/y", false),
            ("/..dev/y", false),
            ("/opt/dev/x.js", false),
            ("/procx/y", false),
            ("x.js", false),
            ("./dev/tty", false),
            ("/usr/lib/x.js", false),
            ("/", false),
        ] {
            assert_eq!(
                names_descriptor(&pad(name.as_bytes())),
                descriptor,
                "{name}"
            );
        }
        let long_proc = std::format!("/proc/{}", "x".repeat(200));
        assert!(names_descriptor(&pad(long_proc.as_bytes())));
        let long_usr = std::format!("/usr/{}", "x".repeat(200));
        assert!(!names_descriptor(&pad(long_usr.as_bytes())));
        assert!(names_descriptor(&pad("/.".repeat(100).as_bytes())));
        assert!(names_descriptor(&pad(b"/./././././././dev/tty")));
        assert!(names_descriptor(&pad(b"/./././././././.dev/tty")));
        assert!(names_descriptor(&pad(b"/././././././././dev/tty")));
        assert!(!names_descriptor(&pad(b"/")));
        assert!(!names_descriptor(&pad(b"/./x")));
    }

    #[test]
    fn preloads_in_order() {
        let words: Vec<&[u8]> = [
            "-r",
            "./a.txt",
            "--require=b",
            "--import",
            "./c.mjs",
            "--loader=d",
            "--title",
            "-r",
            "--experimental_loader",
            "data:x",
            "s.js",
            "-r",
            "e",
        ]
        .iter()
        .map(|w| w.as_bytes())
        .collect();
        let found: Vec<(PreloadKind, &[u8])> = preloads(words.iter().copied()).collect();
        assert_eq!(
            found,
            [
                (PreloadKind::Require, &b"./a.txt"[..]),
                (PreloadKind::Require, b"b"),
                (PreloadKind::Import, b"./c.mjs"),
                (PreloadKind::Import, b"d"),
            ]
        );
    }
}
