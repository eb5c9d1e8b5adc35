//! How a CPython command line asks to be run, from its argv alone.
//!
//! Shared by the kernel exec gate and user space so both read a command line the same way.
//! Works on byte slices without allocation so it stays usable from `no_std` code.

/// What the interpreter will run, as far as its options say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invocation<'a> {
    /// `-c CMD` (also combined, as in `-Ic`): code on the command line.
    pub inline_code: bool,
    /// `-m MOD`: the module name.
    pub module: Option<&'a [u8]>,
    /// The script operand, if any (`-` means standard input).
    pub script: Option<&'a [u8]>,
    /// `-i`: interactive inspection after the script.
    pub inspect: bool,
    /// `-S`: no `site` at start-up, so nothing a `.pth` file or `sitecustomize` installs.
    pub no_site: bool,
    /// An option that needs an argument came last with none: CPython refuses to start.
    pub truncated: bool,
    /// An option whose effect the grammar does not read from the command line (the exec
    /// gate refuses it unread): none in CPython's; `perl -S`, node's `--title`…
    pub unread: bool,
}

impl Invocation<'_> {
    /// True when the interpreter reads its program from standard input: `-` as the script,
    /// or no script, no `-c` and no `-m`.
    pub fn reads_stdin(&self) -> bool {
        match self.script {
            Some(script) => script == b"-",
            None => !self.inline_code && self.module.is_none(),
        }
    }

    /// True when the script operand names an inherited descriptor rather than a file:
    /// `/dev/fd/N`, `/dev/stdin`, `/proc/<anything>/fd/N`.
    pub fn script_is_descriptor_link(&self) -> bool {
        match self.script {
            Some(script) => is_descriptor_link(script),
            None => false,
        }
    }

    /// True when the script operand's spelling names a device ([`device_path`]): a terminal
    /// read as a script is an interactive console in all but name.
    pub fn script_is_device(&self) -> bool {
        match self.script {
            Some(script) => device_path(script).device,
            None => false,
        }
    }
}

/// `/dev/fd/*`, `/dev/std{in,out,err}`, `/proc/*/fd/*` (also `/proc/self/fd`, `/proc/thread-self/fd`).
///
/// Written with explicit indices and no slice comparisons: the kernel exec gate runs this very
/// function, and the BPF verifier needs loops it can bound (and no `memcmp` calls).
pub fn is_descriptor_link(path: &[u8]) -> bool {
    if starts_with(path, b"/dev/fd/")
        || bytes_eq(path, b"/dev/stdin")
        || bytes_eq(path, b"/dev/stdout")
        || bytes_eq(path, b"/dev/stderr")
    {
        return true;
    }
    if !starts_with(path, b"/proc/") {
        return false;
    }
    // /proc/<pid|self|thread-self>/fd/<n>  or /proc/<pid>/task/<tid>/fd/<n>: an "fd"
    // component followed by another one, that is "/fd/" from the slash ending "/proc" on.
    // A rolling window rather than component bookkeeping: the BPF verifier walks this loop
    // once per byte, and one variable keeps it from forking states; and only `path[i]` with
    // `i < len` is indexed, as any other index keeps a panic call that makes the program
    // unloadable.
    let needle = u32::from_be_bytes(*b"/fd/");
    let mut window: u32 = u32::from_be_bytes(*b"roc/");
    let mut i = 6;
    while i < path.len() {
        window = (window << 8) | path[i] as u32;
        if window == needle {
            return true;
        }
        i += 1;
    }
    false
}

/// What [`device_path`] concluded about an absolute path's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePath {
    /// The path names something under `/dev/` other than `/dev/shm/`: a device (a terminal,
    /// the console, a pty), never a script.
    pub device: bool,
    /// The path ends at `/` or `/dev` (or inside the component after them): more bytes could
    /// still make it a device. For a word the reader saw only a prefix of, that is unknown.
    pub open: bool,
}

/// Whether an absolute path names a device by its spelling: after a leading run of `/` and
/// `.` (`//`, `/./`, `/../`: all of them stay at `/`), the component `dev`, then anything
/// but `shm/` (`/dev/shm` is the one filesystem of files there; a `..` component anywhere
/// in such a path makes it a device too, as `/dev/shm/../tty` is). A relative path, a
/// symlink to a device or `..` through another directory (`/tmp/../dev/tty`) say nothing
/// here: the kernel layer judges the opened file's type.
///
/// Written for the kernel exec gate, which runs this very function: one scan of the leading
/// run, then reads at fixed offsets from its end, and only `path[i]` with `i < len` read.
pub fn device_path(path: &[u8]) -> DevicePath {
    device_path_with(path, has_dot_dot_component(path))
}

/// [`device_path`] of a prefix of a path, with whether the whole path (as far as it was
/// read) has a `..` component: the kernel keeps only a prefix of the operand, NUL-padded (a
/// path holds no NUL: the first one ends it).
#[inline(always)]
pub fn device_path_with(path: &[u8], dot_dot: bool) -> DevicePath {
    let len = path.len();
    let at = |i: usize| if i < len { path[i] } else { 0 };
    let not = DevicePath {
        device: false,
        open: false,
    };
    let open = DevicePath {
        device: false,
        open: true,
    };
    if at(0) != b'/' {
        return not;
    }
    let mut k = 0;
    while k < len && (path[k] == b'/' || path[k] == b'.') {
        k += 1;
    }
    // `k` is where the first component that is not `.` or `..` starts, or the end.
    if at(k) == 0 {
        return open;
    }
    if k == 0 || at(k - 1) != b'/' {
        return not;
    }
    // `dev/`, or a prefix of it at the end of what was read.
    match compare_word(path, k, b"dev/") {
        Compared::Differs => return not,
        Compared::EndsAfter(_) => return open,
        Compared::Equal => {}
    }
    let rest = k + 4;
    if at(rest) == 0 {
        // `/dev/` itself, a directory: what follows could be anything.
        return open;
    }
    match compare_word(path, rest, b"shm/") {
        Compared::Differs => DevicePath {
            device: true,
            open: false,
        },
        // `/dev/s`, `/dev/sh`: devices, or the start of `/dev/shm/`; `/dev/shm` is the
        // directory.
        Compared::EndsAfter(j) => DevicePath {
            device: j < 3,
            open: true,
        },
        Compared::Equal => DevicePath {
            device: dot_dot,
            open: !dot_dot,
        },
    }
}

/// How the bytes of a path from `start` compare with a four-byte word.
enum Compared {
    Equal,
    /// The path ends (its end or a NUL) after this many equal bytes.
    EndsAfter(usize),
    Differs,
}

#[inline(always)]
fn compare_word(path: &[u8], start: usize, word: &[u8; 4]) -> Compared {
    let mut j = 0;
    while j < 4 {
        let i = start + j;
        let byte = if i < path.len() { path[i] } else { 0 };
        if byte == 0 {
            return Compared::EndsAfter(j);
        }
        if byte != word[j] {
            return Compared::Differs;
        }
        j += 1;
    }
    Compared::Equal
}

/// Whether a path has a `..` component: a rolling window of the last four bytes, with `/`
/// standing in before the start and after the end.
#[inline(always)]
pub fn has_dot_dot_component(path: &[u8]) -> bool {
    let needle = u32::from_be_bytes(*b"/../");
    let mut window: u32 = u32::from_be_bytes(*b"\0\0\0/");
    let mut found = false;
    let mut i = 0;
    while i <= path.len() {
        let byte = if i < path.len() { path[i] } else { b'/' };
        window = (window << 8) | byte as u32;
        found |= window == needle;
        i += 1;
    }
    found
}

pub(crate) fn starts_with(bytes: &[u8], prefix: &[u8]) -> bool {
    if bytes.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if bytes[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

pub(crate) fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && starts_with(a, b)
}

/// CPython options that take an argument (attached, as in `-Wd`, or as the next word).
const SHORT_WITH_ARGUMENT: &[u8] = b"cmWX";
/// The name of the long option that takes an argument (`--check-hash-based-pycs VALUE`;
/// `--opt=VALUE` is an unknown option to CPython).
const LONG_WITH_ARGUMENT: &[u8] = b"check-hash-based-pycs";

pub use crate::argv::Word;

/// Whether the option cluster `word` (`-ES`, `-IsS`, `-Wx`…), read as options, holds the
/// option `letter`, as CPython's getopt reads it: the letters up to the first one that takes
/// an argument (the rest is that argument) or a `-` (a long option), at most `limit` of
/// them. A pass of its own rather than state [`Reader::feed`] carries from letter to letter:
/// each such bit doubles the states the BPF verifier walks through the cluster loop.
#[inline(always)]
pub fn cluster_has(word: &[u8], letter: u8, limit: usize) -> bool {
    if word.len() < 2 || word[0] != b'-' {
        return false;
    }
    let mut i = 1;
    while i < word.len() && i <= limit {
        let option = word[i];
        if option == letter {
            return true;
        }
        if option == b'-' || takes_argument(option) {
            return false;
        }
        i += 1;
    }
    false
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Expect {
    #[default]
    Option,
    /// The argument of `-W`, `-X` or the long option.
    Argument,
    /// The code of `-c`.
    InlineCode,
    /// The module name of `-m`.
    Module,
    /// The word after `--` (or a cluster ending in `-`, such as `-E-`).
    Script,
    /// The program is known; the rest is its argv.
    Done,
}

/// Reads a CPython argv (without `argv[0]`) one word at a time, holding nothing borrowed:
/// the kernel exec gate can only look at one word at a time, and [`parse`] is built on it so
/// both read a command line identically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reader {
    expect: Expect,
    /// `-c` was seen.
    pub inline_code: bool,
    /// `-m` was seen.
    pub module: bool,
    /// A script operand was seen.
    pub script: bool,
    /// `-i` was seen.
    pub inspect: bool,
    /// How many option letters of one cluster are read.
    cluster_limit: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    /// Reads command lines exactly as CPython does.
    pub const fn new() -> Self {
        Reader::with_cluster_limit(usize::MAX)
    }

    /// Reads at most `limit` option letters per cluster (`-EIc` has three), reporting
    /// [`Word::Unread`] beyond. The BPF verifier's cost grows faster than linearly with the
    /// bytes a loop may scan, so the kernel bounds it; no real command line comes close.
    pub const fn with_cluster_limit(limit: usize) -> Self {
        Reader {
            expect: Expect::Option,
            inline_code: false,
            module: false,
            script: false,
            inspect: false,
            cluster_limit: limit,
        }
    }

    /// True when the next word is read as options (or the script operand, when it does
    /// not start with `-`).
    pub fn expects_option(&self) -> bool {
        matches!(self.expect, Expect::Option)
    }

    /// True once the words that follow belong to the program: no later word can change
    /// what the interpreter runs.
    pub fn done(&self) -> bool {
        matches!(self.expect, Expect::Done)
    }

    /// Reads the next word. Inlined: a BPF subprogram cannot return the word's slice, a
    /// pointer into its caller's stack.
    #[inline(always)]
    pub fn feed<'a>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.feed_stopping_at_no_site::<false>(arg)
    }

    /// [`Self::feed`], stopping at `-S` with [`Word::NoSite`] when `STOP`: the kernel's
    /// judge refuses there. Nothing is carried from letter to letter, which would double
    /// the states the BPF verifier walks (a letter that only continues leaves the state as
    /// it was), and nothing is kept in the reader or beside it, whose room the kernel's
    /// 512-byte stack pays for: a constant, one copy of the walk per setting.
    #[inline(always)]
    pub fn feed_stopping_at_no_site<'a, const STOP: bool>(&mut self, arg: &'a [u8]) -> Word<'a> {
        match self.expect {
            Expect::Done => return Word::Program,
            Expect::Argument => {
                self.expect = Expect::Option;
                return Word::Argument;
            }
            Expect::InlineCode => {
                self.expect = Expect::Done;
                return Word::Argument;
            }
            Expect::Module => {
                self.expect = Expect::Done;
                return Word::Module(Some(arg));
            }
            Expect::Script => {
                self.expect = Expect::Done;
                self.script = true;
                return Word::Script(arg);
            }
            Expect::Option => {}
        }
        let len = arg.len();
        if len == 0 || arg[0] != b'-' || len == 1 {
            self.expect = Expect::Done;
            self.script = true;
            return Word::Script(arg);
        }
        // A cluster of short options: "-Ic", "-Esc", "-Wdefault", "-mjson". CPython's getopt
        // takes a `-` in it as the start of a long option, whatever came before: "--x" and
        // "-E-x" both read "x" as one.
        let mut long = 0;
        let mut i = 1;
        while i < len {
            if i > self.cluster_limit {
                return Word::Unread;
            }
            let option = arg[i];
            i += 1;
            if option == b'-' {
                long = i;
                break;
            }
            if STOP && option == b'S' {
                return Word::NoSite;
            }
            // Branch-free so the verifier does not fork a state per byte.
            self.inspect |= option == b'i';
            if !takes_argument(option) {
                continue;
            }
            let attached = i < len;
            if option == b'c' {
                self.inline_code = true;
                self.expect = if attached {
                    Expect::Done
                } else {
                    Expect::InlineCode
                };
                return Word::InlineCode;
            }
            if option == b'm' {
                self.module = true;
                if attached {
                    self.expect = Expect::Done;
                    return Word::Module(Some(&arg[i..]));
                }
                self.expect = Expect::Module;
                return Word::Module(None);
            }
            // -W / -X: the rest of the cluster, or the next word, is their argument.
            if !attached {
                self.expect = Expect::Argument;
            }
            return Word::OptionsWithArgument;
        }
        if long == len {
            // No name after the `-`: getopt ends the options there, so "-E-" is "-E --" and
            // the next word is the script even if it looks like `-c` (CPython 3.11
            // Python/getopt.c, "expected long option").
            self.expect = Expect::Script;
            return Word::Options;
        }
        if long != 0 && tail_is(arg, long, LONG_WITH_ARGUMENT) {
            // "-E-check-hash-based-pycs always ./x": the next word is the argument, and the
            // `c` in the name is no `-c`.
            self.expect = Expect::Argument;
            return Word::OptionsWithArgument;
        }
        // Any other long option (`--help`, `-E-help-env`, unknown ones) makes CPython print
        // and exit.
        Word::Options
    }

    /// True when an option that needs an argument came last with none: CPython refuses to
    /// start.
    pub fn truncated(&self) -> bool {
        matches!(
            self.expect,
            Expect::Argument | Expect::InlineCode | Expect::Module
        )
    }

    /// True when the interpreter reads its program from standard input: no script (or `-`),
    /// no `-c` and no `-m`.
    pub fn reads_stdin_without_script(&self) -> bool {
        !self.script && !self.inline_code && !self.module
    }
}

impl crate::argv::Grammar for Reader {
    #[inline(always)]
    fn with_cluster_limit(limit: usize) -> Self {
        Reader::with_cluster_limit(limit)
    }
    #[inline(always)]
    fn feed_stopping_at_no_hook<'a, const STOP: bool>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.feed_stopping_at_no_site::<STOP>(arg)
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
        self.inspect
    }
    #[inline(always)]
    fn reads_stdin_without_script(&self) -> bool {
        Reader::reads_stdin_without_script(self)
    }
}

/// `bytes[start..] == tail`, with only in-bounds indices (see [`is_descriptor_link`]).
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

fn takes_argument(option: u8) -> bool {
    let mut i = 0;
    while i < SHORT_WITH_ARGUMENT.len() {
        if SHORT_WITH_ARGUMENT[i] == option {
            return true;
        }
        i += 1;
    }
    false
}

/// The words of a command line as the kernel keeps it (`/proc/PID/cmdline`: every word,
/// `argv[0]` included, ends with a NUL), exactly as the program received them: an empty
/// word is a word. CPython takes `python3 -W '' ./x` as `-W ''` then the script `./x`;
/// a reader that drops the empty word reads `-W ./x` and loses the script.
pub fn cmdline_words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = match cmdline.split_last() {
        Some((0, body)) => body,
        _ => cmdline,
    };
    // No words at all (a kernel thread, a zombie), not one empty word.
    let words = if cmdline.is_empty() { None } else { Some(body) };
    words.into_iter().flat_map(|body| body.split(|b| *b == 0))
}

/// Reads a command line as the kernel keeps it ([`cmdline_words`]), skipping `argv[0]`.
pub fn parse_cmdline(cmdline: &[u8]) -> Invocation<'_> {
    parse(cmdline_words(cmdline).skip(1))
}

/// Reads a CPython argv (without `argv[0]`). Everything after the script operand, `-c CMD`
/// or `-m MOD` belongs to the program and is not interpreted.
pub fn parse<'a, I>(args: I) -> Invocation<'a>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut reader = Reader::new();
    let mut invocation = Invocation::default();
    for arg in args {
        if reader.expects_option() && cluster_has(arg, b'S', usize::MAX) {
            invocation.no_site = true;
        }
        match reader.feed(arg) {
            Word::Script(script) => invocation.script = Some(script),
            Word::Module(Some(module)) => invocation.module = Some(module),
            _ => {}
        }
        if reader.done() {
            break;
        }
    }
    invocation.inline_code = reader.inline_code;
    invocation.inspect = reader.inspect;
    invocation.truncated = reader.truncated();
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Invocation<'static> {
        let owned: &'static [&'static [u8]] = Box::leak(
            args.iter()
                .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
                .collect::<Vec<&'static [u8]>>()
                .into_boxed_slice(),
        );
        parse(owned.iter().copied())
    }

    extern crate std;
    use std::boxed::Box;
    use std::vec::Vec;

    #[test]
    fn inline_code_in_every_spelling() {
        assert!(run(&["-c", "print(1)"]).inline_code);
        assert!(run(&["-Ic", "print(1)"]).inline_code);
        assert!(run(&["-E", "-X", "dev", "-c", "x"]).inline_code);
        assert!(run(&["-cprint(1)"]).inline_code);
        assert!(run(&["-IsEc", "x"]).inline_code);
        assert!(run(&["-c"]).inline_code);
    }

    #[test]
    fn option_arguments_are_not_options() {
        // "-W c" : 'c' is -W's argument, not -c
        let inv = run(&["-W", "c", "script.py"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"script.py"[..]));
        let inv = run(&["-Wc", "script.py"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"script.py"[..]));
        let inv = run(&["-X", "-c", "s.py"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"s.py"[..]));
        let inv = run(&["--check-hash-based-pycs", "always", "s.py"]);
        assert_eq!(inv.script, Some(&b"s.py"[..]));
    }

    #[test]
    fn arguments_after_the_script_belong_to_it() {
        let inv = run(&["signed.py", "arg1", "-c", "x"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"signed.py"[..]));
        let inv = run(&["-m", "mod", "-c", "x"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.module, Some(&b"mod"[..]));
        let inv = run(&["-mjson.tool"]);
        assert_eq!(inv.module, Some(&b"json.tool"[..]));
    }

    #[test]
    fn module_in_every_spelling() {
        for args in [
            &["-m", "code"][..],
            &["-mcode"],
            &["-I", "-m", "code"],
            &["-Im", "code"],
            &["-IEmcode"],
            &["-E", "-X", "dev", "-m", "code"],
            &["-Wd", "-m", "code", "-c", "x"],
            &["--check-hash-based-pycs", "always", "-m", "code"],
        ] {
            let inv = run(args);
            assert_eq!(inv.module, Some(&b"code"[..]), "{args:?}");
            assert!(!inv.inline_code && !inv.reads_stdin(), "{args:?}");
        }
        // Option arguments and the program's own words are not `-m`.
        assert_eq!(run(&["-X", "-m", "code"]).module, None);
        assert_eq!(run(&["-W", "m", "s.py"]).module, None);
        assert_eq!(run(&["s.py", "-m", "code"]).module, None);
        assert_eq!(run(&["-c", "x", "-m", "code"]).module, None);
        assert!(run(&["-m"]).truncated);
    }

    #[test]
    fn stdin_forms() {
        assert!(run(&[]).reads_stdin());
        assert!(run(&["-"]).reads_stdin());
        assert!(run(&["-I", "-"]).reads_stdin());
        assert!(run(&["-i"]).reads_stdin());
        assert!(!run(&["s.py"]).reads_stdin());
        assert!(!run(&["-m", "x"]).reads_stdin());
        assert!(!run(&["-c", "x"]).reads_stdin());
        assert!(run(&["-i", "s.py"]).inspect);
        assert!(run(&["-Ei", "s.py"]).inspect);
        assert!(!run(&["s.py", "-i"]).inspect);
        assert_eq!(run(&["--", "-c"]).script, Some(&b"-c"[..]));
    }

    #[test]
    fn long_options_inside_clusters() {
        // getopt reads "-E-NAME" as "-E --NAME": the long option's argument is no option,
        // and the `c` of its name is no `-c`.
        let inv = run(&["-E-check-hash-based-pycs", "always", "./p"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"./p"[..]));
        let inv = run(&["-Ii-check-hash-based-pycs", "never", "/dev/fd/3"]);
        assert!(!inv.inline_code && inv.inspect);
        assert_eq!(inv.script, Some(&b"/dev/fd/3"[..]));
        assert!(run(&["-E-check-hash-based-pycs"]).truncated);
        // A cluster ending in `-` ends the options as "--" does.
        let inv = run(&["-E-", "-c", "x"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"-c"[..]));
        let inv = run(&["-i-", "-m", "x"]);
        assert!(inv.inspect && inv.module.is_none());
        assert_eq!(inv.script, Some(&b"-m"[..]));
        assert!(run(&["-IE-", "-"]).reads_stdin());
        assert_eq!(run(&["--", "-i"]).script, Some(&b"-i"[..]));
        // Other long options print and exit (or are unknown): never short options.
        assert!(!run(&["-E-help-xoptions"]).inspect);
        assert!(!run(&["--check-hash-based-pycs=always", "p"]).inline_code);
    }

    #[test]
    fn cmdline_keeps_empty_words() {
        let words: Vec<&[u8]> = cmdline_words(b"python3\0-W\0\0./x\0").collect();
        assert_eq!(words, [&b"python3"[..], b"-W", b"", b"./x"]);
        let inv = parse_cmdline(b"python3\0-W\0\0./x\0");
        assert_eq!(inv.script, Some(&b"./x"[..]));
        // An empty operand is the script (CPython runs the cwd's __main__).
        assert_eq!(parse_cmdline(b"python3\0\0").script, Some(&b""[..]));
        assert_eq!(parse_cmdline(b"python3\0").script, None);
        assert_eq!(cmdline_words(b"").count(), 0);
        // A rewritten command line without its final NUL keeps its last word.
        let words: Vec<&[u8]> = cmdline_words(b"a\0b").collect();
        assert_eq!(words, [&b"a"[..], b"b"]);
    }

    #[test]
    fn device_paths_by_spelling() {
        for device in [
            "/dev/tty",
            "/dev/pts/0",
            "/dev/console",
            "/dev/tty1",
            "//dev/tty",
            "/dev//tty",
            "/./dev/./tty",
            "/../dev/tty",
            "/dev/../dev/tty",
            "/dev/shm/../tty",
            "/dev/mqueue/q",
            "/dev/s",
        ] {
            assert!(device_path(device.as_bytes()).device, "{device}");
        }
        for file in [
            "/dev/shm/x.py",
            "/dev/shm",
            "/dev",
            "/dev/",
            "/",
            "tty",
            "dev/tty",
            "./dev/tty",
            "/home/a/dev/tool.py",
            "/devx/tty",
            "/de/tty",
            "/.dev/tty",
            "/usr/lib/x.py",
            // `..` through another directory: out of reach by name (the kernel layer's).
            "/x/../dev/tty",
        ] {
            assert!(!device_path(file.as_bytes()).device, "{file}");
        }
        // Still open: a prefix of a longer word could go on to a device.
        // (a cut `/dev/shm/…` could still go on to `/..`)
        for open in [
            "/",
            "/./.",
            "/de",
            "/dev",
            "/dev/",
            "/dev/sh",
            "/dev/shm",
            "/dev/shm/x",
        ] {
            assert!(device_path(open.as_bytes()).open, "{open}");
        }
        for closed in ["/usr/lib", "/dev/tt", "/x"] {
            assert!(!device_path(closed.as_bytes()).open, "{closed}");
        }
        assert!(run(&["/dev/tty"]).script_is_device());
        assert!(!run(&["/dev/shm/x.py"]).script_is_device());
    }

    #[test]
    fn descriptor_links() {
        for link in [
            "/dev/fd/3",
            "/dev/stdin",
            "/proc/self/fd/0",
            "/proc/123/fd/4",
            "/proc/thread-self/fd/9",
            "/proc/1/task/1/fd/3",
        ] {
            assert!(is_descriptor_link(link.as_bytes()), "{link}");
        }
        for file in [
            "/dev/fdx",
            "/proc/self/fdinfo/3",
            "/proc/cpuinfo",
            "x.py",
            "/proc/self/fd",
        ] {
            assert!(!is_descriptor_link(file.as_bytes()), "{file}");
        }
        assert!(run(&["/dev/fd/63"]).script_is_descriptor_link());
    }
}
