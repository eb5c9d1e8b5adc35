//! How CRuby reads its command line (`proc_options` and `proc_long_options` in `ruby.c`),
//! from its argv alone: the [`Grammar`] the exec gate and user space read a `ruby` argv
//! with, checked against the real binary by `tests/ruby_argv_differential.rs`.
//!
//! The grammar, as `ruby.c` reads it (3.1 and 3.3 read in the source, 3.1 run by the test;
//! the long flags only older or newer versions have, `--jit-*` of 2.6 to 3.0 and `--zjit`,
//! taken by name). What a version lacks it refuses as an invalid option, so reading the union
//! of the versions is exact for each:
//!
//! - Options are read while a word starts with `-` and is longer than `-`; the first other
//!   word is the script operand, `-` and the empty word meaning standard input
//!   (`process_options` turns `""` into `"-"`). `--` (also `--\r`, and a cluster ending in
//!   `-`, such as `-w-`) ends the options: the next word is the operand whatever it looks like.
//! - `-e CODE` (the rest of the cluster, or the next word) is inline code, and unlike
//!   CPython's `-c` it does not end the options: several `-e` add lines, later options still
//!   count (`ruby -e code -r lib`), and the first word that is not an option is then the
//!   program's first argument, not a script (`ruby -e 'p ARGV' script` prints `["script"]`).
//! - Letters that continue the cluster: `a c d l n p s S U v w y`, `-W` with at most one
//!   octal digit (`-W2e` is `-W2 -e`, `-We` is `-W -e`), `-0` with up to three more octal
//!   digits (`-0e` is `-0 -e`), `-K` with the one byte after it whatever it is (`-Kxe` is
//!   `-Kx -e`, `-K-` is no long option). A `\r` ending the cluster is ignored (a DOS shebang).
//! - Letters that take the rest of the cluster: `-i[ext]`, `-x[dir]`, `-F[pattern]`, `-W:cat`;
//!   the rest or, when none, the next word: `-r lib`, `-I dir` (none at the end: no error),
//!   `-C dir`, `-X dir` (an old alias of `-C`), `-E enc` (required).
//! - `-h` prints the usage and reads nothing further.
//! - Long options (`--NAME`, or `-w-NAME` inside a cluster) are compared whole or by a
//!   prefix and a terminator: `--enable`, `--disable`, `--crash-report` (`=VALUE`,
//!   `-VALUE` or the next word), `--encoding`, `--internal-encoding`, `--external-encoding`,
//!   `--source-encoding`, `--parser`, `--dump`, `--backtrace-limit` (`=VALUE` or the next
//!   word); `--debug[=…|-…]`, `--jit*`, `--mjit*`, `--rjit*`, `--yjit*`, `--zjit*`,
//!   `--yydebug` take no next word; `--version`, `--copyright`, `--verbose`, `--help` make a
//!   command line without a program exit without reading standard input. None takes code.
//! - `-r debug/start`, `-r debug/open`, `-r debug/open_nonstop` start the debug gem's console
//!   (any feature with a `debug/` in it is taken as one),
//!   which evaluates what standard input, the terminal or a socket's peer says: answered as
//!   [`Grammar::interactive`]. `--disable=gems` (and `all`, or any prefix of them) skips
//!   RubyGems and what it loads at start-up: [`read`] says so (`no_gems`); guard installs no
//!   start-up hook in Ruby, so the kernel's walk never stops there.
//!
//! An option letter or long option no version knows makes ruby refuse to start: this reader
//! answers [`Word::Unread`] there rather than guess how a newer ruby reads it (one that gave
//! it an argument would read the next word differently).
//!
//! Not read here, and why it is safe: `-C dir`, `-x dir` and `-S` (search `RUBYPATH`, then
//! `PATH`, for the script: regular files only) resolve a relative operand elsewhere than
//! its spelling says, as a relative operand or a symlink does for any interpreter: the
//! operand's spelling is judged here, the file it opens by the layers that see the open.
//! `-r lib` names a feature `require` finds through `$LOAD_PATH` (`.rb`, `.so`): a file,
//! judged as code when it is opened, never code itself. The options on a script's `#!` line
//! come from a file already judged as code.
//!
//! Written for the kernel like [`crate::python_argv`]: explicit indices below the length,
//! constant-length comparisons, few bits of state.

use crate::argv::{Grammar, Word};
use crate::exec_gate::MAX_CLUSTER;
use crate::python_argv::Invocation;

// The long option names are compared one literal at a time, after a dispatch on their first
// letter: a table of slices is pointers in `.rodata`, which the BPF loader cannot relocate,
// and a chain of every comparison is more paths than the verifier's budget walks.

/// What a long option's name (from its first letter on) is to ruby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Long {
    /// `--help`: prints the usage, reads nothing further.
    Help,
    /// `--version`, `--copyright`, `--verbose`: a command line without a program exits
    /// without reading standard input.
    Exits,
    /// Read by a prefix with whatever follows it, never the next word: `--debug[…]`,
    /// `--jit*`, `--mjit*`, `--rjit*`, `--yjit*`, `--zjit*`; and `--yydebug`, whole.
    Flag,
    /// Takes a value (`=VALUE`, `-VALUE` or the next word) after the name ending at this
    /// index; `true` for `--disable`.
    Value(usize, bool),
    /// No ruby knows it.
    Unknown,
}

/// The long option whose name starts at `start`.
#[inline(always)]
fn long_name(arg: &[u8], start: usize) -> Long {
    let value = |name: &[u8], disable: bool| {
        prefix_at(arg, start, name).then_some(Long::Value(start + name.len(), disable))
    };
    let first = if start < arg.len() { arg[start] } else { 0 };
    let found = match first {
        b'h' => tail_is(arg, start, b"help").then_some(Long::Help),
        b'v' => (tail_is(arg, start, b"version") || tail_is(arg, start, b"verbose"))
            .then_some(Long::Exits),
        b'c' => {
            if tail_is(arg, start, b"copyright") {
                Some(Long::Exits)
            } else {
                value(b"crash-report", false)
            }
        }
        b'y' => (tail_is(arg, start, b"yydebug") || prefix_at(arg, start, b"yjit"))
            .then_some(Long::Flag),
        b'j' => prefix_at(arg, start, b"jit").then_some(Long::Flag),
        b'm' => prefix_at(arg, start, b"mjit").then_some(Long::Flag),
        b'r' => prefix_at(arg, start, b"rjit").then_some(Long::Flag),
        b'z' => prefix_at(arg, start, b"zjit").then_some(Long::Flag),
        b'd' => {
            if prefix_at(arg, start, b"debug") {
                Some(Long::Flag)
            } else {
                value(b"disable", true).or_else(|| value(b"dump", false))
            }
        }
        b'e' => value(b"enable", false)
            .or_else(|| value(b"encoding", false))
            .or_else(|| value(b"external-encoding", false)),
        b'i' => value(b"internal-encoding", false),
        b's' => value(b"source-encoding", false),
        b'p' => value(b"parser", false),
        b'b' => value(b"backtrace-limit", false),
        _ => None,
    };
    found.unwrap_or(Long::Unknown)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Expect {
    #[default]
    Option,
    /// The argument of `-I`, `-C`, `-X`, `-E` or a long option with a value.
    Argument,
    /// The feature of `-r` (none at the end: no error).
    Feature,
    /// The directory of `-I` (none at the end: no error).
    Directory,
    /// The feature list of `--disable`.
    DisableList,
    /// The code of `-e`.
    InlineCode,
    /// The word after `--` (or a cluster ending in `-`, such as `-w-`).
    Operand,
    /// The program is known (or ruby prints its usage); the rest is its argv.
    Done,
}

/// Reads a CRuby argv (without `argv[0]`) one word at a time, holding nothing borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reader {
    expect: Expect,
    /// `-e` was seen: the first word that is no option belongs to the program.
    pub inline_code: bool,
    /// The script operand is `-` or the empty word: the program is standard input.
    pub stdin_script: bool,
    /// `-v`, `--verbose`, `--version`, `--copyright`, `-h` or `--help` was seen: without a
    /// script or `-e`, ruby exits rather than read its program from standard input.
    pub exits_without_program: bool,
    /// `-r` named a debugger entry point (`debug/start`, `debug/open`, `debug/open_nonstop`;
    /// any feature with a `debug/` in it).
    pub debugger: bool,
    /// How many option letters of one cluster are read.
    cluster_limit: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

/// What [`Reader`] made of a whole command line (see [`read`]; [`parse`] gives the summary
/// every interpreter's reader gives).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading<'a> {
    /// `-e CODE`: code on the command line.
    pub inline_code: bool,
    /// The script operand (`-` and the empty word mean standard input).
    pub script: Option<&'a [u8]>,
    /// A command line without a program exits (`-v`, `--version`, `-h`…).
    pub exits_without_program: bool,
    /// `-r` named a debugger entry point.
    pub debugger: bool,
    /// `--disable` named `gems` or `all`: rubygems is not loaded at start-up.
    pub no_gems: bool,
    /// A word no ruby reads as an option, or a longer cluster than the reader's limit.
    pub unread: bool,
    /// An option that needs an argument came last without one.
    pub truncated: bool,
}

impl Reading<'_> {
    /// True when ruby reads its program from standard input.
    pub fn reads_stdin(&self) -> bool {
        match self.script {
            Some(script) => script.is_empty() || script == b"-",
            None => !self.inline_code && !self.exits_without_program,
        }
    }
}

impl Reader {
    /// Reads command lines exactly as ruby does.
    pub const fn new() -> Self {
        Reader::with_cluster_limit(usize::MAX)
    }

    /// Reads at most `limit` option letters per cluster, reporting [`Word::Unread`] beyond.
    pub const fn with_cluster_limit(limit: usize) -> Self {
        Reader {
            expect: Expect::Option,
            inline_code: false,
            stdin_script: false,
            exits_without_program: false,
            debugger: false,
            cluster_limit: limit,
        }
    }

    /// True when the next word is read as options (or as the operand).
    pub fn expects_option(&self) -> bool {
        matches!(self.expect, Expect::Option)
    }

    /// True once the words that follow belong to the program.
    pub fn done(&self) -> bool {
        matches!(self.expect, Expect::Done)
    }

    /// True when an option that needs its argument in the next word came last: ruby
    /// refuses to start (`-r` and `-I` at the end are no error).
    pub fn truncated(&self) -> bool {
        matches!(
            self.expect,
            Expect::Argument | Expect::DisableList | Expect::InlineCode
        )
    }

    /// True when ruby reads its program from standard input: `-` or the empty word as the
    /// operand, or no operand, no `-e` and nothing that makes it exit first. No bit of its
    /// own says an operand was read: without `-e`, only the operand and `-h`/`--help` (which
    /// exit) end the reading.
    pub fn reads_stdin_without_script(&self) -> bool {
        self.stdin_script || (!self.done() && !self.inline_code && !self.exits_without_program)
    }

    /// Reads the next word.
    #[inline(always)]
    pub fn feed<'a>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.feed_stopping_at_no_gems::<false>(arg)
    }

    /// [`Self::feed`], answering [`Word::NoSite`] when `STOP` and a `--disable` names
    /// `gems` or `all`: rubygems, and everything it loads at start-up
    /// (`rubygems/defaults/operating_system.rb`, `did_you_mean`, `error_highlight`), is
    /// skipped.
    #[inline(always)]
    pub fn feed_stopping_at_no_gems<'a, const STOP: bool>(&mut self, arg: &'a [u8]) -> Word<'a> {
        match self.expect {
            Expect::Done => return Word::Program,
            Expect::Argument | Expect::Directory | Expect::InlineCode => {
                self.expect = Expect::Option;
                return Word::Argument;
            }
            Expect::Feature => {
                self.expect = Expect::Option;
                self.debugger |= names_debugger(arg, 0);
                return Word::Argument;
            }
            Expect::DisableList => {
                self.expect = Expect::Option;
                if STOP {
                    return disable_list(arg, 0);
                }
                return Word::Argument;
            }
            Expect::Operand => return self.operand(arg),
            Expect::Option => {}
        }
        let len = arg.len();
        if len < 2 || arg[0] != b'-' {
            return self.operand(arg);
        }
        // At most the kernel's letters, whatever the reader was made with: a bound the
        // verifier sees (the reader's own field is in map memory, unknown to it), so the
        // loop's states end at the 16th letter rather than the word's 127th byte.
        let limit = if self.cluster_limit < MAX_CLUSTER {
            self.cluster_limit
        } else {
            MAX_CLUSTER
        };
        let mut i = 1;
        while i < len {
            if i > limit {
                return Word::Unread;
            }
            let option = arg[i];
            i += 1;
            // Branch-free: a letter that only continues leaves the state as it was.
            self.exits_without_program |= option == b'v';
            match option {
                b'a' | b'c' | b'd' | b'l' | b'n' | b'p' | b's' | b'S' | b'U' | b'v' | b'w'
                | b'y' => {}
                b'W' => {
                    if i < len && arg[i] == b':' {
                        // `-W:deprecated`: the rest of the word is a category.
                        return Word::OptionsWithArgument;
                    }
                    if i < len && is_octal(arg[i]) {
                        i += 1;
                    }
                }
                b'0' => {
                    // `scan_oct(s, 4)` from the `0` itself: three more digits at most.
                    let mut digits = 0;
                    while digits < 3 && i < len && is_octal(arg[i]) {
                        i += 1;
                        digits += 1;
                    }
                }
                b'K' => {
                    if i < len {
                        i += 1;
                    }
                }
                b'e' => {
                    self.inline_code = true;
                    if i == len {
                        self.expect = Expect::InlineCode;
                    }
                    return Word::InlineCode;
                }
                b'r' => {
                    if i == len {
                        self.expect = Expect::Feature;
                    } else {
                        self.debugger |= names_debugger(arg, i);
                    }
                    return Word::OptionsWithArgument;
                }
                b'I' => {
                    if i == len {
                        self.expect = Expect::Directory;
                    }
                    return Word::OptionsWithArgument;
                }
                b'C' | b'X' | b'E' => {
                    if i == len {
                        self.expect = Expect::Argument;
                    }
                    return Word::OptionsWithArgument;
                }
                b'i' | b'x' | b'F' => return Word::OptionsWithArgument,
                b'h' => {
                    self.exits_without_program = true;
                    self.expect = Expect::Done;
                    return Word::Options;
                }
                b'-' => return self.long_option::<STOP>(arg, i),
                // A DOS line end after the options of a `#!` line.
                b'\r' if i == len => {}
                _ => return Word::Unread,
            }
        }
        Word::Options
    }

    /// The script operand, or the program's first argument after `-e`.
    #[inline(always)]
    fn operand<'a>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.expect = Expect::Done;
        if self.inline_code {
            return Word::Program;
        }
        self.stdin_script = arg.is_empty() || (arg.len() == 1 && arg[0] == b'-');
        Word::Script(arg)
    }

    /// The long option whose name starts at `start` (after `--`, or after the `-` that
    /// ends a cluster).
    #[inline(always)]
    fn long_option<'a, const STOP: bool>(&mut self, arg: &'a [u8], start: usize) -> Word<'a> {
        let len = arg.len();
        if start == len || (start + 1 == len && arg[start] == b'\r') {
            // `--`, `-w-`: the next word is the operand.
            self.expect = Expect::Operand;
            return Word::Options;
        }
        let end = match long_name(arg, start) {
            Long::Help => {
                self.exits_without_program = true;
                self.expect = Expect::Done;
                return Word::Options;
            }
            Long::Exits => {
                self.exits_without_program = true;
                return Word::Options;
            }
            Long::Flag => return Word::Options,
            Long::Unknown => return Word::Unread,
            Long::Value(end, disable) => {
                if end == len {
                    self.expect = if disable {
                        Expect::DisableList
                    } else {
                        Expect::Argument
                    };
                    return Word::OptionsWithArgument;
                }
                if STOP && disable {
                    (end, true)
                } else {
                    (end, false)
                }
            }
        };
        // Only in-bounds reads (an index the compiler cannot prove keeps a panic call, which
        // the BPF verifier refuses).
        let terminator = if end.0 < len { arg[end.0] } else { 0 };
        if terminator == b'=' || terminator == b'-' {
            if end.1 {
                return disable_list(arg, end.0 + 1);
            }
            return Word::OptionsWithArgument;
        }
        Word::Unread
    }
}

impl Grammar for Reader {
    #[inline(always)]
    fn with_cluster_limit(limit: usize) -> Self {
        Reader::with_cluster_limit(limit)
    }
    #[inline(always)]
    fn feed_stopping_at_no_hook<'a, const STOP: bool>(&mut self, arg: &'a [u8]) -> Word<'a> {
        // guard installs no start-up hook in Ruby (the stop is CPython's `-S`): skipping
        // rubygems skips nothing of guard's, and the kernel walks one reader, not two.
        self.feed_stopping_at_no_gems::<false>(arg)
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
        self.debugger
    }
    #[inline(always)]
    fn reads_stdin_without_script(&self) -> bool {
        Reader::reads_stdin_without_script(self)
    }
}

fn is_octal(byte: u8) -> bool {
    (b'0'..=b'7').contains(&byte)
}

/// `bytes[start..] == tail`, with only in-bounds indices.
fn tail_is(bytes: &[u8], start: usize, tail: &[u8]) -> bool {
    start <= bytes.len() && bytes.len() - start == tail.len() && prefix_at(bytes, start, tail)
}

/// `bytes[start..]` starts with `prefix`, with only in-bounds indices.
fn prefix_at(bytes: &[u8], start: usize, prefix: &[u8]) -> bool {
    let mut i = 0;
    while i < prefix.len() {
        let at = start + i;
        if at >= bytes.len() || bytes[at] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the feature `bytes[start..]` may be a debugger entry point: the debug gem's
/// `debug/start` reads debugger commands (and so Ruby expressions) from the terminal or
/// standard input, `debug/open` and `debug/open_nonstop` from anyone who connects to its
/// socket. Read wider than that, as any feature with a `debug/` in it (one pass of a
/// rolling window, which the BPF verifier walks once per byte): the gem's other files start
/// nothing, and a feature under another `debug/` directory is no common name.
fn names_debugger(bytes: &[u8], start: usize) -> bool {
    const NEEDLE: u64 = u64::from_be_bytes(*b"\0\0debug/");
    const MASK: u64 = 0x0000_ffff_ffff_ffff;
    let mut window: u64 = 0;
    let mut i = start;
    while i < bytes.len() {
        window = ((window << 8) | bytes[i] as u64) & MASK;
        // Out at once: a flag carried on would double the verifier's states at each byte.
        if window == NEEDLE {
            return true;
        }
        i += 1;
    }
    false
}

/// A `--disable` feature list read when `STOP`: [`Word::NoSite`] when it names `gems` or
/// `all`, else [`Word::Options`], which the judge refuses for a word it saw only a prefix
/// of (the rest of the list could name them).
#[inline(always)]
fn disable_list<'a>(bytes: &[u8], start: usize) -> Word<'a> {
    if disables_gems(bytes, start) {
        Word::NoSite
    } else {
        Word::Options
    }
}

/// Whether the `--disable` feature list `bytes[start..]` names `gems` or `all`. Ruby splits
/// the list at `,` and white space and matches each item as a case-insensitive prefix of a
/// feature's name (`g`, `GEM`, `a` are `gems` and `all`): an item starting with `g` or `a`
/// is taken as one (`gx` is no feature: ruby warns and goes on, so this errs towards the
/// refusal).
fn disables_gems(bytes: &[u8], start: usize) -> bool {
    let mut separated = true;
    let mut i = start;
    while i < bytes.len() {
        let byte = bytes[i];
        let lower = byte | 0x20;
        if separated && (lower == b'g' || lower == b'a') {
            return true;
        }
        separated = byte == b',' || byte == b' ' || (b'\t'..=b'\r').contains(&byte);
        i += 1;
    }
    false
}

/// Reads a CRuby argv (without `argv[0]`) in the terms every interpreter's reader answers
/// in: the script operand (`-` for standard input, which the empty operand also is),
/// inline code, a debugger console as `inspect`, rubygems skipped as `no_site`. A command
/// line that exits without a program (`ruby -v`) still `reads_stdin()` there: [`read`] and
/// the [`Grammar`] know better.
pub fn parse<'a, I>(args: I) -> Invocation<'a>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let reading = read(args);
    Invocation {
        inline_code: reading.inline_code,
        module: None,
        script: reading
            .script
            .map(|script| if script.is_empty() { &b"-"[..] } else { script }),
        inspect: reading.debugger,
        no_site: reading.no_gems,
        truncated: reading.truncated || reading.unread,
        unread: reading.unread,
    }
}

/// Reads a CRuby argv (without `argv[0]`). Everything after the program (the script
/// operand, or the first word that is no option after `-e`) belongs to it.
pub fn read<'a, I>(args: I) -> Reading<'a>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut reader = Reader::new();
    let mut invocation = Reading::default();
    for arg in args {
        let mut probe = reader;
        if probe.feed_stopping_at_no_gems::<true>(arg) == Word::NoSite {
            invocation.no_gems = true;
        }
        match reader.feed(arg) {
            Word::Script(script) => invocation.script = Some(script),
            Word::Unread => invocation.unread = true,
            _ => {}
        }
        if reader.done() {
            break;
        }
    }
    invocation.inline_code = reader.inline_code;
    invocation.exits_without_program = reader.exits_without_program;
    invocation.debugger = reader.debugger;
    invocation.truncated = reader.truncated();
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec::Vec;

    fn run(args: &[&str]) -> Reading<'static> {
        read(leak(args))
    }

    fn leak(args: &[&str]) -> Vec<&'static [u8]> {
        args.iter()
            .map(|a| &*std::boxed::Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
            .collect()
    }

    fn words(args: &[&str]) -> Vec<Word<'static>> {
        let mut reader = Reader::new();
        args.iter()
            .map(|a| {
                let word: &'static [u8] =
                    std::boxed::Box::leak(a.as_bytes().to_vec().into_boxed_slice());
                reader.feed(word)
            })
            .collect()
    }

    #[test]
    fn inline_code_in_every_spelling() {
        for args in [
            &["-e", "puts 1"][..],
            &["-eputs 1"],
            &["-we", "x"],
            &["-We", "x"],
            &["-W2e", "x"],
            &["-W:deprecated", "-e", "x"],
            &["-0e", "x"],
            &["-0777e", "x"],
            &["-Kxe", "x"],
            &["-Ke", "-e", "x"],
            &["-K-e", "x"],
            &["-r", "json", "-e", "x"],
            &["-I", "-e", "-e", "x"],
            &["--enable", "gems", "-e", "x"],
            &["-w-disable", "-e", "-e", "x"],
            &["-e"],
        ] {
            assert!(run(args).inline_code, "{args:?}");
        }
        // Option arguments and the rest of the cluster are not `-e`.
        for args in [
            &["-r", "-e", "s.rb"][..],
            &["-re", "s.rb"],
            &["-ie", "s.rb"],
            &["-Fe", "s.rb"],
            &["-xe", "s.rb"],
            &["-W:e", "s.rb"],
            &["-E", "-e", "s.rb"],
            &["-C", "-e", "s.rb"],
            &["--encoding", "-e", "s.rb"],
            &["--dump", "-e", "s.rb"],
            &["s.rb", "-e", "x"],
            &["--", "-e", "x"],
        ] {
            let inv = run(args);
            assert!(!inv.inline_code, "{args:?}");
            assert!(inv.script.is_some(), "{args:?}");
        }
    }

    #[test]
    fn options_go_on_after_inline_code() {
        assert_eq!(
            words(&["-e", "x", "-r", "lib", "p", "-e"]),
            [
                Word::InlineCode,
                Word::Argument,
                Word::OptionsWithArgument,
                Word::Argument,
                Word::Program,
                Word::Program,
            ]
        );
        let inv = run(&["-e", "x", "-"]);
        assert_eq!(inv.script, None);
        assert!(!inv.reads_stdin());
        let inv = run(&["-e", "x", "--", "s.rb"]);
        assert_eq!(inv.script, None);
    }

    #[test]
    fn stdin_forms() {
        assert!(run(&[]).reads_stdin());
        assert!(run(&["-"]).reads_stdin());
        assert!(run(&[""]).reads_stdin());
        assert!(run(&["--", ""]).reads_stdin());
        assert!(run(&["--", "-"]).reads_stdin());
        assert!(run(&["-w", "-S"]).reads_stdin());
        assert!(run(&["-r", "json"]).reads_stdin());
        assert!(run(&["-r"]).reads_stdin());
        assert!(run(&["-v", "-"]).reads_stdin());
        assert!(run(&["-v", ""]).reads_stdin());
        assert!(!run(&["-v"]).reads_stdin());
        assert!(!run(&["-wv"]).reads_stdin());
        assert!(!run(&["--verbose"]).reads_stdin());
        assert!(!run(&["--version"]).reads_stdin());
        assert!(!run(&["-h", "-"]).reads_stdin());
        assert!(!run(&["--help", "-"]).reads_stdin());
        assert!(!run(&["s.rb"]).reads_stdin());
        assert_eq!(run(&["-w-", "-e"]).script, Some(&b"-e"[..]));
    }

    #[test]
    fn long_options() {
        for (args, script) in [
            (&["--enable=gems", "s"][..], "s"),
            (&["--enable-gems", "s"], "s"),
            (&["--enable", "gems", "s"], "s"),
            (&["--disable", "-e", "s"], "s"),
            (&["--encoding", "x", "s"], "s"),
            (&["--encoding=x", "s"], "s"),
            (&["--backtrace-limit", "1", "s"], "s"),
            (&["--crash-report", "f", "s"], "s"),
            (&["--parser", "prism", "s"], "s"),
            (&["--dump=insns", "s"], "s"),
            (&["--debug", "s"], "s"),
            (&["--debug=frozen-string-literal", "s"], "s"),
            (&["--jit", "s"], "s"),
            (&["--yjit-call-threshold=1", "s"], "s"),
            (&["--mjit-verbose=1", "s"], "s"),
            (&["-w-enable", "gems", "s"], "s"),
            (&["-W-", "s"], "s"),
        ] {
            let inv = run(args);
            assert_eq!(inv.script, Some(script.as_bytes()), "{args:?}");
            assert!(!inv.unread && !inv.inline_code, "{args:?}");
        }
        // Unknown options make ruby refuse to start: unread, not guessed.
        for args in [
            &["--frob", "s"][..],
            &["--verbose=1", "s"],
            &["--encodingx", "s"],
            &["-b", "s"],
            &["-T", "s"],
            &["-W8", "s"],
            &["-01234", "s"],
            &["-\rx", "s"],
        ] {
            assert!(run(args).unread, "{args:?}");
        }
        assert!(!run(&["-w\r", "s"]).unread);
        assert!(run(&["--enable"]).truncated);
        assert!(run(&["-E"]).truncated);
        assert!(!run(&["-r"]).truncated);
        assert!(!run(&["-I"]).truncated);
    }

    #[test]
    fn gems_disabled() {
        for args in [
            &["--disable=gems"][..],
            &["--disable-gems"],
            &["--disable", "gems"],
            &["--disable=G"],
            &["--disable=did_you_mean,all"],
            &["--disable= rubyopt gem"],
            &["-w-disable=gems"],
        ] {
            assert!(run(args).no_gems, "{args:?}");
        }
        for args in [
            &["--enable=gems"][..],
            &["--disable=rubyopt"],
            &["--disable=did_you_mean", "gems"],
            &["-r", "--disable=gems"],
        ] {
            assert!(!run(args).no_gems, "{args:?}");
        }
    }

    #[test]
    fn debugger_features() {
        for args in [
            &["-r", "debug/start", "s"][..],
            &["-rdebug/open"],
            &["-wrdebug/open_nonstop.rb"],
            &[
                "-r",
                "/usr/lib/ruby/gems/3.1.0/gems/debug-1.4.0/lib/debug/start.rb",
            ],
            // Read wider than the gem's three entry points: anything under a `debug/`.
            &["-r", "xdebug/start"],
            &["-r", "debug/starts"],
        ] {
            assert!(run(args).debugger, "{args:?}");
        }
        for args in [
            &["-r", "debug", "s"][..],
            &["-r", "debugstart"],
            &["-I", "debug/start"],
        ] {
            assert!(!run(args).debugger, "{args:?}");
        }
    }

    #[test]
    fn parse_gives_the_common_summary() {
        let inv = parse(leak(&["-w", "", "x"]));
        assert_eq!(inv.script, Some(&b"-"[..]));
        assert!(inv.reads_stdin());
        let inv = parse(leak(&["-r", "debug/start", "--disable-gems", "s.rb", "-e"]));
        assert_eq!(inv.script, Some(&b"s.rb"[..]));
        assert!(inv.inspect && inv.no_site && !inv.inline_code && inv.module.is_none());
        let inv = parse(leak(&["-e", "x", "s.rb"]));
        assert!(inv.inline_code && inv.script.is_none() && !inv.reads_stdin());
        assert!(parse(leak(&["-C"])).truncated);
        assert!(parse(leak(&["--frob", "s.rb"])).truncated);
    }

    /// The kernel's judge on this grammar, with the kernel's limits.
    #[test]
    fn the_judge_on_ruby_command_lines() {
        use crate::Rule;
        use crate::exec_gate::{
            ArgvJudge, DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE, DENY_NO_SITE,
            DENY_STDIN_CODE, NoModules, Step,
        };
        const ALL: u32 =
            DENY_INLINE_CODE | DENY_STDIN_CODE | DENY_INTERACTIVE | DENY_DESCRIPTOR_SCRIPT;
        let ruby = |flags: u32, args: &[&str]| {
            ArgvJudge::<Reader>::judge_words(flags, &NoModules, leak(args))
        };
        let refused = |args: &[&str], rule: Rule| {
            assert_eq!(ruby(ALL, args), Step::Refuse(rule), "{args:?}");
        };
        for args in [
            &["-e", "x"][..],
            &["-ex"],
            &["-We", "x"],
            &["-0e", "x"],
            &["-Kxe", "x"],
            &["-r", "json", "-e", "x"],
            &["--enable", "gems", "-e", "x"],
        ] {
            refused(args, Rule::NoInlineCode);
        }
        for args in [
            &[][..],
            &["-"],
            &[""],
            &["-w"],
            &["-r", "json"],
            &["--", "-"],
            &["-v", "-"],
        ] {
            refused(args, Rule::NoStdinCode);
        }
        refused(&["/dev/fd/0"], Rule::ScriptIsFile);
        refused(&["-C", "/x", "/dev/tty"], Rule::ScriptIsFile);
        refused(&["-r", "debug/start", "s.rb"], Rule::NoInteractive);
        // Options ruby refuses, and clusters past the kernel's limit, are not guessed.
        refused(&["--frob", "s.rb"], Rule::FactsUnavailable);
        refused(&["-b", "s.rb"], Rule::FactsUnavailable);
        refused(&["-wwwwwwwwwwwwwwwwwwww", "s.rb"], Rule::FactsUnavailable);
        let mut long = std::string::String::from("--disable=");
        long.push_str(&",".repeat(200));
        let allowed = |args: &[&str]| assert_eq!(ruby(ALL, args), Step::Allow, "{args:?}");
        allowed(&["s.rb", "-e", "x"]);
        allowed(&["-w", "-r", "json", "-I", "lib", "s.rb"]);
        allowed(&["-re", "s.rb"]);
        allowed(&["-ie", "s.rb"]);
        allowed(&["-W:e", "s.rb"]);
        allowed(&["--encoding", "-e", "s.rb"]);
        allowed(&["-w-", "-e"]);
        allowed(&["-C", "/srv/app", "main.rb"]);
        allowed(&["-S", "rake"]);
        allowed(&["-v"]);
        allowed(&["--version"]);
        allowed(&["-h"]);
        allowed(&["--disable=gems", "s.rb"]);
        allowed(&[long.as_str(), "s.rb"]);
        assert_eq!(ruby(0, &["-e", "x"]), Step::Allow);
        assert_eq!(ruby(0, &[]), Step::Allow);
        // Without rubygems: guard has no start-up hook in Ruby, so CPython's stop for a
        // start-up that skips its hook (DENY_NO_SITE) says nothing here.
        for args in [
            &["--disable=gems", "s.rb"][..],
            &["--disable-gems", "s.rb"],
            &["--disable", "all", "s.rb"],
            &[long.as_str(), "s.rb"],
        ] {
            assert_eq!(ruby(ALL | DENY_NO_SITE, args), Step::Allow, "{args:?}");
        }
        assert_eq!(
            ruby(ALL | DENY_NO_SITE, &["--disable=rubyopt", "s.rb"]),
            Step::Allow
        );
    }

    #[test]
    fn cluster_limit() {
        let mut reader = Reader::with_cluster_limit(3);
        assert_eq!(reader.feed(b"-www"), Word::Options);
        assert_eq!(reader.feed(b"-wwwe"), Word::Unread);
    }
}
