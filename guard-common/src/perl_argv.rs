//! How perl reads its command line, from its argv alone: perl 5's `parse_body` and
//! `moreswitches` (perl.c, 5.36), checked against the real binary by
//! `tests/perl_argv_differential.rs`.
//!
//! # The grammar
//!
//! Words are read as switches while they start with `-` and are not `-` alone; the first
//! other word is the script operand (`-` and the empty word read the program from standard
//! input). One word is a cluster read to its end: each switch either continues with the
//! next letter, or takes the rest of the word (or, for `-e`/`-E` and `-I`, the next word)
//! as its argument, or reads an argument up to a delimiter and hands the rest back to the
//! cluster. Where a switch's argument ends is what this module gets exactly right, since
//! the next letter may be `e`:
//!
//! * `-e CODE`, `-E CODE`: the rest of the word, else the next word (whatever it is). Any
//!   number of them; the options go on after them, and then the first other word is the
//!   program's first argument, not a script.
//! * `-I DIR`: the rest of the word, else the next word; `-M`/`-m` too since perl 5.40 (an
//!   older perl refuses `-M` alone), read here as inline code with the next word its
//!   argument. `-x[DIR]`, `-d:…`, `-V:…`, `-0xHEX`: the rest of the word.
//! * `-0[OCT]` and `-l[OCT]`: at most three (`-0`: the `0` and three; `-l0…`: four) octal
//!   digits; `-D…`: word characters; `-C…`, `-F…`, `-i…`: up to whitespace (`-C` letters
//!   skip `\r` and `\n`). The cluster goes on after them.
//! * A space in a word ends it, unless the spaces are followed by `-`: `'-w -eCODE'` and
//!   `'- -eCODE'` are `-e`. A carriage return ends the word.
//! * `--` (also a cluster ending in `-`, or `-` before a space: `-w-`, `'-- x'`) ends the
//!   options: the next word is the operand even if it starts with `-`. `-v`, `-h`, `-?`,
//!   `--help` and `--version` print and exit on the spot; `-V` runs Config's report with
//!   `/dev/null` as the program (an operand is ignored); other letters croak.
//!
//! # Code that is not `-e`
//!
//! Several switches put text of the command line into the program perl compiles (its
//! "preamble", one line before the script's first): each is inline code here when that
//! text can be more than a module name.
//!
//! * `-MFoo` is `use Foo;`, `-MFoo=a,b` is `use Foo split(/,/,q\0a,b\0);`, `-mFoo` is
//!   `use Foo ();`; but with anything else after the name, `-M'Foo;system(1)'` is
//!   `use Foo;system(1);`. A module part that is not a plain name (`[A-Za-z_]\w*(::\w+)*`
//!   after an optional `-`) is inline code, `-M5.010` included.
//! * An argument list ending in a backslash (`-MFoo=x\`, also `-V:x\`) escapes the closing
//!   NUL of its quote: the quote then runs into the next preamble item, and what that
//!   item's arguments hold is compiled as code.
//! * `-d:Foo` sets `PERL5DB` to `use Devel::Foo;` (compiled first on that line); its
//!   arguments are quoted `q{…}`, so a `{`, `}` or `\` in them, or anything but `=args`
//!   after the name, is code.
//! * `-F/pattern/` (or `'…'`, `"…"`, with the delimiter again later) is pasted as
//!   `our @F=split(/pattern/);`: a `(?{…})` in it or a closing `)` runs code. Other
//!   patterns are quoted safely.
//!
//! A plain `-MFoo` still loads `Foo.pm` through `@INC`, a file judged when it is opened;
//! some modules evaluate their import arguments (`-MO=Backend`: `use B::$backend` in a
//! string eval; `-Mautouse=Mod,'f(PROTO)'` evals the prototype), which only a list of such
//! modules can refuse.
//!
//! # Interactive and hidden operands
//!
//! A bare `-d` loads `perl5db.pl`, whose prompt evaluates Perl read from the terminal (or
//! standard input), after the script: interactive. `-d:Foo` loads `Devel::Foo` instead,
//! whatever the order of the two. `-S NAME` looks a name without `/` up on PATH, and perl
//! reads a found `/dev/fd/N` from that descriptor without opening anything
//! (`PATH=/dev/fd perl -S 0 < code`): an operand after `-S` is [`Word::Unread`] (with a `/`
//! too: telling the two apart would scan the word, see below).
//!
//! # In the kernel
//!
//! Written for the kernel exec gate, like [`crate::python_argv`]: explicit indices, only
//! `arg[i]` with `i < arg.len()` read, loops bounded by the word's length, no panics. Unlike
//! CPython's, perl's arguments sit inside clusters (`-i.bak -e…`, `-0777e…`), so a cluster is
//! one loop over its bytes, each read as a letter or in the mode its switch's argument left
//! (up to whitespace, word characters, octal digits…), with that mode kept in the reader's
//! memory rather than in locals: the gate's reader lives in a map the verifier does not
//! track, so it walks each byte once instead of once per mode, digit count, delimiter and
//! flag. A letter count beside the byte index would multiply the walk again (and so do
//! bounds beside the word's length: a scan that stops early, a second limit): every
//! cluster is read to its end, bounded by the word itself
//! ([`crate::exec_gate::ARG_BUFFER`] bytes in the kernel). The exec gate's `perl_exec`
//! program verifies in 369 000 instructions (6.18; `ruby_exec` 198 000, CPython's
//! `sched_process_exec` 312 000); scanning the operand for a `/` after `-S` alone had cost
//! 310 000 more. A walk that keeps the reader on the BPF stack (where the verifier tracks
//! what it stores) goes past the million: the LSM layer's operand walk is in a map too.

use crate::argv::{Grammar, Word};
use crate::python_argv::{Invocation, bytes_eq, device_path, is_descriptor_link};

pub use crate::python_argv::cmdline_words;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Expect {
    #[default]
    Option,
    /// The directory of `-I` (or the module of `-M`, `-m`).
    Argument,
    /// The code of `-e`/`-E`.
    InlineCode,
    /// The word after `--` (or a cluster ending in `-`): the operand whatever it looks like.
    Script,
    /// The program is known; the rest is its argv.
    Done,
}

/// Reads a perl argv (without `argv[0]`) one word at a time, holding nothing borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reader {
    expect: Expect,
    /// Code from the command line: `-e`/`-E`, or code a switch carries into the preamble.
    pub inline_code: bool,
    /// `-e`/`-E`: the program is on the command line; the first non-option word is its
    /// first argument.
    pub e_script: bool,
    /// A script operand naming a file (`-` and the empty word read standard input).
    pub script: bool,
    /// No program is read from an operand or standard input: `-V` (the program is
    /// `/dev/null`, after Config's report), or a switch that exits (`-v`, `-h`…).
    pub no_script: bool,
    /// A bare `-d`: the interactive debugger (`perl5db.pl`).
    pub debugger: bool,
    /// `-d:MOD`: `Devel::MOD` is the debugger instead of `perl5db.pl`.
    pub debug_module: bool,
    /// `-S`: a script name without `/` is looked up on PATH.
    pub search: bool,
    /// The cluster being read: how its next byte is read (`LETTER`, or a mode of the last
    /// switch's argument), with `count` (octal digits left) and `first` (a `-F`
    /// delimiter; both also the state of a module switch's argument), and `code` (a switch
    /// of this word carried code). Kept here and read and written through
    /// memory on every byte ([`load`], [`store`]): in the kernel the reader lives in a map,
    /// whose contents the BPF verifier does not track, so every byte is one state of the
    /// walk rather than one per mode, count, delimiter and flag.
    mode: u8,
    count: u8,
    first: u8,
    code: u8,
}

/// A byte of the reader's cluster state, read from memory (see [`Reader::mode`]).
#[allow(unsafe_code)]
#[inline(always)]
fn load(field: &u8) -> u8 {
    // SAFETY: a reference is valid for reads of its referent.
    unsafe { core::ptr::read_volatile(field) }
}

/// A byte of the reader's cluster state, written to memory (see [`Reader::mode`]).
#[allow(unsafe_code)]
#[inline(always)]
fn store(field: &mut u8, value: u8) {
    // SAFETY: a mutable reference is valid for writes of its referent.
    unsafe { core::ptr::write_volatile(field, value) }
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

/// The byte at `i`, or 0 past the end (a word holds no NUL: 0 is its end, as in perl).
#[inline(always)]
fn at(arg: &[u8], i: usize) -> u8 {
    if i < arg.len() { arg[i] } else { 0 }
}

/// perl's `isSPACE`: space, `\t`, `\n`, `\v`, `\f`, `\r`.
#[inline(always)]
fn is_space(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

#[inline(always)]
fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// perl's `isWORDCHAR` (ASCII only): letters, digits, `_`.
#[inline(always)]
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the word ends in a backslash: the preamble's `q\0…\0` (`-M`, `-m`) or
/// `qw\0…\0` (`-V:`) quoting it then ends later, in the next item's text.
#[inline(always)]
fn ends_in_backslash(arg: &[u8]) -> bool {
    let len = arg.len();
    len > 0 && arg[len - 1] == b'\\'
}

/// `bytes[start..] == tail`, with only in-bounds indices.
#[inline(always)]
fn tail_is(bytes: &[u8], start: usize, tail: &[u8]) -> bool {
    if start > bytes.len() || bytes.len() - start != tail.len() {
        return false;
    }
    let mut i = 0;
    while i < tail.len() {
        let at = start + i;
        if at >= bytes.len() || bytes[at] != tail[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Reader {
    /// Reads command lines exactly as perl does.
    pub const fn new() -> Self {
        Reader::with_cluster_limit(usize::MAX)
    }

    /// A reader for the kernel: `limit` is not needed. Every byte of a word is one round
    /// of the cluster loop, bounded by the word (the kernel reads [`crate::exec_gate::ARG_BUFFER`]
    /// bytes of one), and a count of letters beside the byte index would multiply the
    /// states the BPF verifier walks by that count (`-i.bak`'s argument bytes are no
    /// letters): every cluster is read to its end.
    pub const fn with_cluster_limit(_limit: usize) -> Self {
        Reader {
            expect: Expect::Option,
            inline_code: false,
            e_script: false,
            script: false,
            no_script: false,
            debugger: false,
            debug_module: false,
            search: false,
            mode: LETTER,
            count: 0,
            first: 0,
            code: 0,
        }
    }

    /// True when the next word is read as switches (or the operand, when it does not
    /// start with `-`).
    pub fn expects_option(&self) -> bool {
        matches!(self.expect, Expect::Option)
    }

    /// True once the words that follow belong to the program.
    pub fn done(&self) -> bool {
        matches!(self.expect, Expect::Done)
    }

    /// True when `-e`, `-I` or `-M` came last without its argument: perl refuses to start.
    pub fn truncated(&self) -> bool {
        matches!(self.expect, Expect::Argument | Expect::InlineCode)
    }

    /// True when perl reads its program from standard input: no `-e`, no `-V`, and no
    /// operand, `-` or the empty word.
    pub fn reads_stdin_without_script(&self) -> bool {
        !self.script && !self.e_script && !self.no_script
    }

    /// True when the debugger perl runs is `perl5db.pl`, whose prompt reads Perl.
    pub fn interactive(&self) -> bool {
        self.debugger && !self.debug_module
    }

    /// Reads the next word. Inlined: a BPF subprogram cannot return the word's slice.
    ///
    /// One loop over the cluster's bytes, each either a switch letter or a byte of the
    /// argument the last switch reads (`mode`): the BPF verifier then walks one state per
    /// byte, mode and `code`, and reads every letter's branches once per byte (an argument's
    /// end hands the byte back to the next round rather than reading it as a letter in
    /// place).
    #[inline(always)]
    pub fn feed<'a>(&mut self, arg: &'a [u8]) -> Word<'a> {
        match self.expect {
            Expect::Done => return Word::Program,
            // The directory of `-I`, the code of `-e`: the options go on after them.
            Expect::Argument | Expect::InlineCode => {
                self.expect = Expect::Option;
                return Word::Argument;
            }
            Expect::Script => return self.operand(arg),
            Expect::Option => {}
        }
        let len = arg.len();
        if len < 2 || arg[0] != b'-' {
            return self.operand(arg);
        }
        // One byte a round, in the mode the previous bytes left; `code`: a switch earlier in
        // this word carried code (`-F/…/`) and the cluster went on after it.
        store(&mut self.mode, LETTER);
        store(&mut self.count, 0);
        store(&mut self.first, 0);
        store(&mut self.code, 0);
        let mut i = 1;
        while i < len {
            let byte = arg[i];
            i += 1;
            let mode = load(&self.mode);
            if mode != LETTER {
                // A byte of the last switch's argument, or the one after it.
                let more = match mode {
                    TO_SPACE => !is_space(byte),
                    UNICODE => !is_space(byte) || byte == b'\r' || byte == b'\n',
                    WORD => is_word(byte),
                    DIGITS => is_digit(byte),
                    OCTAL => {
                        let count = load(&self.count);
                        let digit = count > 0 && (b'0'..=b'7').contains(&byte);
                        if digit {
                            store(&mut self.count, count - 1);
                        }
                        digit
                    }
                    PATTERN => {
                        if byte == load(&self.first) {
                            store(&mut self.code, 1);
                        }
                        !is_space(byte)
                    }
                    SPACES => byte == b' ',
                    // `-0x` and another byte: the rest is the argument (hex, or `-x`'s
                    // directory when not all of it is hex).
                    ZERO_X => return self.with_argument(),
                    _ => false,
                };
                if more {
                    continue;
                }
                match mode {
                    SPACES => {
                        if byte != b'-' {
                            // A space not followed by `-`: the rest of the word is ignored.
                            break;
                        }
                        // The `-`: the cluster goes on.
                        store(&mut self.mode, LETTER);
                        continue;
                    }
                    // `-0`: an `x` (taking the rest when another byte follows), or the `0`
                    // and at most three more octal digits.
                    ZERO => {
                        if byte == b'x' {
                            store(&mut self.mode, ZERO_X);
                            continue;
                        }
                        if (b'0'..=b'7').contains(&byte) {
                            store(&mut self.mode, OCTAL);
                            store(&mut self.count, 2);
                            continue;
                        }
                    }
                    // `-d` then `t` (threads, unless a word character follows: then the
                    // `t` was `-t`), then `:MOD` or `=MOD`.
                    DEBUG | DEBUG_T => {
                        if byte == b':' || byte == b'=' {
                            self.debug_module = true;
                            let carries = self.spec_carries_code(arg, i, true);
                            return self.ends(carries);
                        }
                        if mode == DEBUG && byte == b't' {
                            store(&mut self.mode, DEBUG_T);
                            continue;
                        }
                    }
                    _ => {}
                }
                // The argument ended before this byte: it is a letter.
                store(&mut self.mode, LETTER);
            }
            // Read again from memory: every way here knows the same of it (the modes'
            // comparisons narrowed the copy in hand), so the verifier walks the letters
            // once per byte.
            let byte = load(&arg[i - 1]);
            match byte {
                b'e' | b'E' => {
                    self.e_script = true;
                    self.inline_code = true;
                    if i >= len {
                        self.expect = Expect::InlineCode;
                    }
                    return Word::InlineCode;
                }
                b'I' => {
                    if i >= len {
                        self.expect = Expect::Argument;
                    }
                    return self.with_argument();
                }
                // The rest is the directory to change to.
                b'x' => {
                    return if i < len {
                        self.with_argument()
                    } else {
                        self.ends(false)
                    };
                }
                b'M' | b'm' => {
                    if i >= len {
                        // `-M Foo`: perl 5.40 reads the next word (older ones refuse to
                        // start), judged unread as code: a walk of it of its own would
                        // cost the verifier as much as a third of the rest.
                        self.inline_code = true;
                        self.expect = Expect::Argument;
                        return Word::InlineCode;
                    }
                    let carries = self.spec_carries_code(arg, i, false);
                    return self.ends(carries);
                }
                b'V' => {
                    self.no_script = true;
                    if at(arg, i) == b':' {
                        let carries = ends_in_backslash(arg);
                        return self.ends(carries);
                    }
                }
                b'd' => {
                    // perl5db.pl, unless a `-d:MOD` anywhere names another debugger.
                    self.debugger = true;
                    store(&mut self.mode, DEBUG);
                }
                b'0' => store(&mut self.mode, ZERO),
                b'l' => {
                    let digit = at(arg, i);
                    if is_digit(digit) {
                        store(&mut self.mode, OCTAL);
                        store(&mut self.count, if digit == b'0' { 4 } else { 3 });
                    }
                }
                b'D' => store(&mut self.mode, WORD),
                b'C' => {
                    let mode = if is_digit(at(arg, i)) {
                        DIGITS
                    } else {
                        UNICODE
                    };
                    store(&mut self.mode, mode);
                }
                b'i' => store(&mut self.mode, TO_SPACE),
                b'F' => {
                    // Pasted into the program when it starts with a delimiter that comes
                    // again before its end (whitespace).
                    let delimiter = at(arg, i);
                    if delimiter == b'/' || delimiter == b'\'' || delimiter == b'"' {
                        store(&mut self.first, delimiter);
                        store(&mut self.mode, PATTERN);
                        i += 1;
                    } else {
                        store(&mut self.mode, TO_SPACE);
                    }
                }
                b' ' => store(&mut self.mode, SPACES),
                b'\r' => break,
                b'-' => {
                    if i >= len || is_space(arg[i]) {
                        // `--`, `-w-`, `'-- x'`: the next word is the operand.
                        self.expect = Expect::Script;
                        break;
                    }
                    if tail_is(arg, i, b"help") || tail_is(arg, i, b"version") {
                        self.exits();
                    }
                    // Otherwise perl croaks: an unknown switch.
                    break;
                }
                b'v' | b'h' | b'?' => {
                    self.exits();
                    break;
                }
                b'S' => self.search = true,
                // Switches without an argument (`acfgnpstTuUwWX`); anything else makes
                // perl croak, read on as if it did not.
                _ => {}
            }
        }
        self.ends(false)
    }

    /// The word of a cluster that ended (`carries`: its last switch carried code): inline
    /// code if a switch in it carried code.
    #[inline(always)]
    fn ends<'a>(&mut self, carries: bool) -> Word<'a> {
        if carries || load(&self.code) != 0 {
            self.inline_code = true;
            Word::InlineCode
        } else {
            Word::Options
        }
    }

    /// The word of a cluster whose last switch took the rest of it, or the next word.
    #[inline(always)]
    fn with_argument<'a>(&mut self) -> Word<'a> {
        if load(&self.code) != 0 {
            self.inline_code = true;
            Word::InlineCode
        } else {
            Word::OptionsWithArgument
        }
    }

    /// The word that is no switch: the operand, or the program's first argument.
    #[inline(always)]
    fn operand<'a>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.expect = Expect::Done;
        if self.e_script || self.no_script {
            return Word::Program;
        }
        let stdin = arg.is_empty() || bytes_eq(arg, b"-");
        self.script = !stdin;
        if self.search {
            // Looked up on PATH when it has no `/` (an entry `/dev/fd` makes it a descriptor
            // perl reads without opening: what it names is not in the command line), else
            // as given: refused unread either way rather than scanned for a `/` (each
            // bound the verifier learns of the word's length on the way would be a state of
            // its own), which only `perl -S ./x` pays for.
            return Word::Unread;
        }
        Word::Script(arg)
    }

    /// `-v`, `-h`, `-?`, `--help`, `--version`: perl prints and exits before it reads
    /// any program.
    #[inline(always)]
    fn exits(&mut self) {
        self.expect = Expect::Done;
        self.no_script = true;
        self.debugger = false;
    }
}

/// The argument modes of the cluster loop: how the next byte is read.
const LETTER: u8 = 0;
/// Up to whitespace (`-F`, `-i`).
const TO_SPACE: u8 = 1;
/// `-C` letters: up to whitespace other than `\r` and `\n`.
const UNICODE: u8 = 2;
/// `-D`: word characters.
const WORD: u8 = 3;
/// `-C` digits.
const DIGITS: u8 = 4;
/// `-0`, `-l`: octal digits, a given number at most.
const OCTAL: u8 = 5;
/// A `-F` pattern that starts with a delimiter: code when it comes again.
const PATTERN: u8 = 6;
/// After a space: more spaces, then a `-` goes on with the cluster.
const SPACES: u8 = 7;
/// After `-0`: `x`, or octal digits.
const ZERO: u8 = 8;
/// After `-0x`.
const ZERO_X: u8 = 9;
/// After `-d`: `t`, `:` or `=`.
const DEBUG: u8 = 10;
/// After `-dt`: `:` or `=`.
const DEBUG_T: u8 = 11;

/// How far a module switch's argument (`-M`, `-m`, `-d:`) is read: before the name (an
/// optional `-` for `no`), after that `-`, in a name, after one `:`, after `::` (a word
/// character must follow), after `=` (the arguments, quoted).
const SPEC_START: u8 = 0;
const SPEC_LEAD: u8 = 1;
const SPEC_NAME: u8 = 2;
const SPEC_COLON: u8 = 3;
const SPEC_COLONS: u8 = 4;
const SPEC_ARGUMENTS: u8 = 5;

impl Reader {
    /// Whether the argument of `-M`/`-m` (from `start`: `Foo`, `-Foo`, `Foo=a,b`) or of
    /// `-d:` (`devel`) is more than a plain module name (`[A-Za-z_]\w*(::\w+)*`) and quoted
    /// arguments. The arguments break their quote when they end in a backslash (`-M`'s
    /// `q\0…\0`) or hold a brace or a backslash (`-d:`'s `q{…}`). Read byte by byte with
    /// the state in memory, as the cluster is ([`Reader::mode`]): `count` holds how far,
    /// `first` whether the quote breaks.
    #[inline(always)]
    fn spec_carries_code(&mut self, arg: &[u8], start: usize, devel: bool) -> bool {
        store(&mut self.count, SPEC_START);
        store(&mut self.first, 0);
        let mut i = start;
        while i < arg.len() {
            let b = arg[i];
            i += 1;
            let next = match load(&self.count) {
                SPEC_START if b == b'-' => SPEC_LEAD,
                SPEC_START | SPEC_LEAD if name_starts(b) => SPEC_NAME,
                SPEC_COLONS if is_word(b) => SPEC_NAME,
                SPEC_NAME if is_word(b) => SPEC_NAME,
                SPEC_NAME if b == b':' => SPEC_COLON,
                SPEC_COLON if b == b':' => SPEC_COLONS,
                SPEC_NAME if b == b'=' => SPEC_ARGUMENTS,
                SPEC_ARGUMENTS => {
                    let breaks = if devel {
                        b == b'{' || b == b'}' || b == b'\\'
                    } else {
                        b == b'\\'
                    };
                    if breaks {
                        store(&mut self.first, 1);
                    } else if !devel {
                        // `-M`: only the last byte counts.
                        store(&mut self.first, 0);
                    }
                    SPEC_ARGUMENTS
                }
                // Anything else after the name is code (`-M'Foo;…'`, `-M5.010`,
                // `-MFoo:Bar`).
                _ => return true,
            };
            store(&mut self.count, next);
        }
        match load(&self.count) {
            SPEC_NAME => false,
            SPEC_ARGUMENTS => load(&self.first) != 0,
            // No name, or a name ending in `:` (perl croaks, or `use Foo::`).
            _ => true,
        }
    }
}

/// Whether a module name starts with `lead`: `[A-Za-z_]`.
#[inline(always)]
fn name_starts(lead: u8) -> bool {
    lead.is_ascii_alphabetic() || lead == b'_'
}

impl Grammar for Reader {
    #[inline(always)]
    fn with_cluster_limit(limit: usize) -> Self {
        Reader::with_cluster_limit(limit)
    }
    /// perl has no start-up hook to skip: `STOP` changes nothing.
    #[inline(always)]
    fn feed_stopping_at_no_hook<'a, const STOP: bool>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.feed(arg)
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

/// What perl will run, as far as its switches say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading<'a> {
    /// Code from the command line: `-e`/`-E`, or code a switch carries.
    pub inline_code: bool,
    /// `-e`/`-E`: the program is on the command line.
    pub e_script: bool,
    /// The script operand, if any (`-` and the empty word read standard input).
    pub script: Option<&'a [u8]>,
    /// The interactive debugger (`-d` without `:MOD`).
    pub interactive: bool,
    /// `-V`, or a switch that exits: no program is read from an operand or stdin.
    pub no_script: bool,
    /// `-S`: the operand, without `/`, is looked up on PATH.
    pub search: bool,
    /// `-e` or `-I` came last without its argument: perl refuses to start.
    pub truncated: bool,
}

impl Reading<'_> {
    /// True when perl reads its program from standard input.
    pub fn reads_stdin(&self) -> bool {
        if self.e_script || self.no_script {
            return false;
        }
        match self.script {
            Some(script) => script.is_empty() || script == b"-",
            None => true,
        }
    }

    /// True when the script operand names an inherited descriptor rather than a file.
    pub fn script_is_descriptor_link(&self) -> bool {
        self.script.is_some_and(is_descriptor_link)
    }

    /// True when the script operand's spelling names a device.
    pub fn script_is_device(&self) -> bool {
        self.script.is_some_and(|s| device_path(s).device)
    }
}

/// Reads a command line as the kernel keeps it ([`cmdline_words`]), skipping `argv[0]`.
pub fn read_cmdline(cmdline: &[u8]) -> Reading<'_> {
    read(cmdline_words(cmdline).skip(1))
}

/// Reads a perl argv (without `argv[0]`) in the terms every interpreter's reader answers
/// in: the script operand (`-` for standard input, which the empty operand also is),
/// inline code (`-e`, and code in other switches), the debugger as `inspect`. A command
/// line without a program (`perl -v`, `perl -V`) still `reads_stdin()` there, and one
/// whose operand is looked up on PATH (`-S`) is `truncated`: [`read`] and the [`Grammar`]
/// know better.
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
        inspect: reading.interactive,
        no_site: false,
        truncated: reading.truncated || (reading.search && reading.script.is_some()),
        unread: reading.search && reading.script.is_some(),
    }
}

/// Reads a perl argv (without `argv[0]`). Everything after the operand belongs to the
/// program.
pub fn read<'a, I>(args: I) -> Reading<'a>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut reader = Reader::new();
    let mut invocation = Reading::default();
    for arg in args {
        match reader.feed(arg) {
            Word::Script(script) => invocation.script = Some(script),
            // `-S NAME`: the operand, whose file PATH decides.
            Word::Unread if reader.done() => invocation.script = Some(arg),
            _ => {}
        }
        if reader.done() {
            break;
        }
    }
    invocation.inline_code = reader.inline_code;
    invocation.e_script = reader.e_script;
    invocation.interactive = reader.interactive();
    invocation.no_script = reader.no_script;
    invocation.search = reader.search;
    invocation.truncated = reader.truncated();
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::boxed::Box;
    use std::vec::Vec;

    fn run(args: &[&str]) -> Reading<'static> {
        let owned: &'static [&'static [u8]] = Box::leak(
            args.iter()
                .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
                .collect::<Vec<&'static [u8]>>()
                .into_boxed_slice(),
        );
        read(owned.iter().copied())
    }

    fn script(args: &[&str]) -> Option<&'static [u8]> {
        run(args).script
    }

    #[test]
    fn e_in_every_spelling() {
        for args in [
            &["-e", "print 1"][..],
            &["-eprint 1"],
            &["-E", "say 1"],
            &["-wle", "print 1"],
            &["-w", "-e", "1", "-e", "2"],
            &["-we1", "p"],
            &["-0e", "1"],
            &["-0777e", "1"],
            &["-l0e", "1"],
            &["-Dxyz", "-e1"],
            &["-CSD -e1"],
            &["-w -e1"],
            &["-w  -e1"],
            &["- -e1"],
            &["-i.bak -e1"],
            &["-F: -e1"],
            &["-de0"],
            &["-dte", "1"],
            &["-Ve", "1"],
            &["-e"],
        ] {
            let inv = run(args);
            assert!(inv.inline_code && inv.e_script, "{args:?}");
            assert_eq!(inv.script, None, "{args:?}");
            assert!(!inv.reads_stdin(), "{args:?}");
        }
        assert!(run(&["-e"]).truncated);
    }

    #[test]
    fn after_e_the_options_go_on_and_the_operand_is_an_argument() {
        let inv = run(&["-e", "1", "p"]);
        assert!(inv.e_script && inv.script.is_none());
        let inv = run(&["-e", "1", "-d", "p"]);
        assert!(inv.interactive && inv.script.is_none());
        // The word after -e is its code, whatever it looks like.
        let inv = run(&["-e", "-d", "p"]);
        assert!(!inv.interactive);
        // ...and `--` there is code, not the end of the options.
        assert!(run(&["-e", "--", "-d"]).interactive);
        assert!(run(&["-e", "1", "-", "x"]).script.is_none());
    }

    #[test]
    fn arguments_are_not_switches() {
        assert_eq!(script(&["-I", "-e", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-Ie", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-xe", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-Dxe", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-i.e", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-F,e", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-0xe", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-0x1F", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-CSDe", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-Mstrict=e", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-d:Peek=e", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-V:e", "p"]), None);
        // A space ends the word unless a `-` follows; a carriage return ends it.
        assert_eq!(script(&["-w e", "p"]), Some(&b"p"[..]));
        assert_eq!(script(&["-w\r-e", "p"]), Some(&b"p"[..]));
        assert!(run(&["-CS\r -e1"]).e_script);
        assert_eq!(script(&["-C7\r -e1", "p"]), Some(&b"p"[..]));
        // Octal digits: four with -0 (its own `0` included), four with -l0, three with -l.
        assert!(run(&["-0777e1"]).e_script);
        assert!(run(&["-l0777e1"]).e_script);
        assert!(run(&["-l777e1"]).e_script);
        assert!(!run(&["-0777", "p"]).e_script);
    }

    #[test]
    fn operands() {
        assert_eq!(script(&["p", "-e", "1"]), Some(&b"p"[..]));
        assert!(!run(&["p", "-e", "1"]).inline_code);
        assert!(run(&[]).reads_stdin());
        assert!(run(&["-"]).reads_stdin());
        assert!(run(&[""]).reads_stdin());
        assert!(run(&["-w", ""]).reads_stdin());
        assert!(!run(&["p"]).reads_stdin());
        // `--` and a cluster ending in `-` end the options.
        assert_eq!(script(&["--", "-e"]), Some(&b"-e"[..]));
        assert_eq!(script(&["-w-", "-e"]), Some(&b"-e"[..]));
        assert_eq!(script(&["-- x", "-e"]), Some(&b"-e"[..]));
        assert_eq!(script(&["-w --", "-e"]), Some(&b"-e"[..]));
        assert!(run(&["--", "-"]).reads_stdin());
        assert!(run(&["--"]).reads_stdin());
        // `- ` (a dash and a space) is an empty cluster, not standard input's `-`.
        assert_eq!(script(&["- ", "p"]), Some(&b"p"[..]));
        assert!(run(&["/dev/fd/0"]).script_is_descriptor_link());
        assert!(run(&["/dev/fd/0/x"]).script_is_descriptor_link());
        assert!(run(&["/dev/tty"]).script_is_device());
    }

    #[test]
    fn switches_that_run_nothing() {
        for args in [
            &["-v"][..],
            &["-h"],
            &["-?"],
            &["--help"],
            &["--version"],
            &["-w-version"],
            &["-d", "-v"],
            &["-V"],
            &["-V:osname"],
            &["-V", "p"],
        ] {
            let inv = run(args);
            assert!(inv.no_script && !inv.reads_stdin(), "{args:?}");
            assert!(!inv.interactive && inv.script.is_none(), "{args:?}");
        }
        // Exits on the spot: what follows is never read.
        assert!(!run(&["-ve1"]).inline_code);
        // -V does not: its -e runs.
        assert!(run(&["-V", "-e1"]).inline_code);
        // An unknown long option croaks; read on.
        assert!(run(&["--frob"]).reads_stdin());
    }

    #[test]
    fn code_in_switches() {
        for word in [
            "-MFoo;system(1)",
            "-M'Foo qw(a)'",
            "-MFoo bar",
            "-M5.010",
            "-Mv5.36",
            "-M-",
            "-MFoo:Bar",
            "-MFoo::",
            "-MFoo=x\\",
            "-mFoo=a,b\\",
            "-mFoo;1",
            "-d:Foo;print 1",
            "-d:Foo=},do{1}",
            "-d:Foo={",
            "-d:Foo=a\\",
            "-d:",
            "-d:Foo:Bar",
            "-F/x/",
            "-F'x'",
            "-F\"x\"",
            "-F/(?{1})/",
            "-wF/x/",
            "-F/x/ -w",
        ] {
            let inv = run(&[word, "p"]);
            assert!(inv.inline_code && !inv.e_script, "{word:?}");
            assert_eq!(inv.script, Some(&b"p"[..]), "{word:?}");
        }
        for word in [
            "-MFoo",
            "-MFoo::Bar",
            "-M-Foo",
            "-MFoo=a,b",
            "-MFoo=",
            "-MFoo=;system(1)",
            "-mFoo",
            "-m_x::y2",
            "-MFoo::2",
            "-V:osname",
            "-d:Foo",
            "-d=Foo",
            "-dt:Foo",
            "-d:-Foo",
            "-d:Foo=a,b",
            "-F,",
            "-F/",
            "-Fx/x/",
            "-F",
        ] {
            assert!(!run(&[word, "p"]).inline_code, "{word:?}");
        }
        // `-M Foo` (5.40): the next word is the module, unread: inline code.
        let inv = run(&["-M", "strict", "p"]);
        assert!(inv.inline_code && inv.script == Some(&b"p"[..]));
        let inv = run(&["-m", "Foo;system(1)", "p"]);
        assert!(inv.inline_code && inv.script == Some(&b"p"[..]));
        assert!(run(&["-M"]).truncated);
        let inv = run(&["-V:x\\", "p"]);
        assert!(inv.inline_code && inv.script.is_none());
        // After a delimited -F the cluster goes on.
        assert_eq!(script(&["-F/x/ --", "-e"]), Some(&b"-e"[..]));
    }

    #[test]
    fn the_debugger() {
        assert!(run(&["-d", "p"]).interactive);
        assert!(run(&["-wd", "p"]).interactive);
        assert!(run(&["-dt", "p"]).interactive);
        assert!(run(&["-dw", "p"]).interactive);
        assert!(!run(&["-d:Peek", "p"]).interactive);
        // PERL5DB set by -d:MOD wins over perl5db.pl in either order.
        assert!(!run(&["-d", "-d:Peek", "p"]).interactive);
        assert!(!run(&["-d:Peek", "-d", "p"]).interactive);
        // `-dtx`: the `t` is taint, the `x` is -x.
        assert!(run(&["-dtx", "p"]).interactive);
        assert!(!run(&["p", "-d"]).interactive);
    }

    #[test]
    fn path_search() {
        let mut reader = Reader::new();
        assert_eq!(reader.feed(b"-S"), Word::Options);
        assert_eq!(reader.feed(b"0"), Word::Unread);
        assert!(reader.done());
        assert_eq!(script(&["-S", "0"]), Some(&b"0"[..]));
        // With a `/` perl opens the operand as given, still refused unread.
        let mut reader = Reader::new();
        reader.feed(b"-wS");
        assert_eq!(reader.feed(b"./p"), Word::Unread);
        assert_eq!(script(&["-wS", "./p"]), Some(&b"./p"[..]));
        let mut reader = Reader::new();
        reader.feed(b"-S");
        reader.feed(b"-e1");
        assert_eq!(reader.feed(b"0"), Word::Program);
    }

    #[test]
    fn words_as_the_kernel_reads_them() {
        let mut reader = Reader::new();
        assert_eq!(reader.feed(b"-I"), Word::OptionsWithArgument);
        assert_eq!(reader.feed(b"dir"), Word::Argument);
        assert_eq!(reader.feed(b"-e"), Word::InlineCode);
        assert_eq!(reader.feed(b"code"), Word::Argument);
        assert_eq!(reader.feed(b"-xdir"), Word::OptionsWithArgument);
        assert_eq!(reader.feed(b"-MFoo"), Word::Options);
        assert_eq!(reader.feed(b"p"), Word::Program);
        assert_eq!(reader.feed(b"-e"), Word::Program);
        // Every cluster is read to its end, however long.
        let mut reader = Reader::with_cluster_limit(3);
        assert_eq!(
            reader.feed(b"-wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwe"),
            Word::InlineCode
        );
    }

    fn parse_cmdline_words(cmdline: &'static [u8]) -> Invocation<'static> {
        parse(cmdline_words(cmdline).skip(1))
    }

    #[test]
    fn cmdline() {
        let inv = read_cmdline(b"perl\0-I\0\0p\0");
        assert_eq!(inv.script, Some(&b"p"[..]));
        assert!(read_cmdline(b"perl\0\0").reads_stdin());
        assert_eq!(read_cmdline(b"perl\0-e\0\0").script, None);
        // In every reader's terms: the empty operand is `-`, a PATH lookup unknown.
        let parsed = parse_cmdline_words(b"perl\0\0");
        assert!(parsed.reads_stdin());
        assert_eq!(parsed.script, Some(&b"-"[..]));
        assert!(parse_cmdline_words(b"perl\0-S\0x\0").truncated);
        let parsed = parse_cmdline_words(b"perl\0-d\0-MFoo;1\0p\0");
        assert!(parsed.inspect && parsed.inline_code);
        assert_eq!(parsed.script, Some(&b"p"[..]));
    }
}
