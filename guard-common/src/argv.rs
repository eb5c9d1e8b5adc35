//! What every interpreter's command-line reader answers, word by word: the one interface
//! the kernel exec gate's judge ([`crate::exec_gate::ArgvJudge`]), the BPF LSM layer's
//! main-script record and user space read any interpreter's argv through.
//!
//! Each interpreter's grammar is a module of its own (`python_argv`, …), read exactly as
//! that interpreter reads its options and checked against the real binary by a
//! differential test. A reader runs in the kernel: it holds nothing borrowed, reads one word
//! at a time, keeps few bits of state (each one doubles the states the BPF verifier walks),
//! indexes only `arg[i]` with `i < arg.len()` and never panics.

/// Which grammar reads an interpreter's command line. The discriminants are the values of
/// the exec gate's executable map (`KIND_*` in [`crate::exec_gate`]) and part of the kernel
/// ABI: never renumber, only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    Python = 0,
    Perl = 2,
    Ruby = 3,
    Node = 4,
}

impl Dialect {
    pub const ALL: [Dialect; 4] = [Dialect::Python, Dialect::Perl, Dialect::Ruby, Dialect::Node];

    /// The name the policy spells (`argv = "perl"`).
    pub const fn name(self) -> &'static str {
        match self {
            Dialect::Python => "python",
            Dialect::Perl => "perl",
            Dialect::Ruby => "ruby",
            Dialect::Node => "node",
        }
    }

    pub const fn from_u32(value: u32) -> Option<Dialect> {
        let mut i = 0;
        while i < Dialect::ALL.len() {
            if Dialect::ALL[i] as u32 == value {
                return Some(Dialect::ALL[i]);
            }
            i += 1;
        }
        None
    }
}

/// What one word of an interpreter's command line turned out to be, as its [`Grammar`]
/// read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word<'a> {
    /// Options read to their last byte (a reader that saw only a prefix of the word must
    /// assume the rest could hold an option that runs code).
    Options,
    /// Options whose last one took the rest of the word, or the next word, as its argument.
    OptionsWithArgument,
    /// The argument of the previous word's option.
    Argument,
    /// Code on the command line (`python -c`, `perl -e`, `ruby -e`, `node -e`/`-p`, and any
    /// option whose value the interpreter evaluates as code).
    InlineCode,
    /// CPython's `-m`: the module name, attached to this word or in the next one.
    Module(Option<&'a [u8]>),
    /// The script operand.
    Script(&'a [u8]),
    /// A module the interpreter loads by the name given, before its program (`node -r
    /// NAME`, `--import NAME`): a file opened as code whatever its name. `name` is the
    /// option's value (the rest of this word after `=`, or the whole word); `descriptor`
    /// says whether the reader found it spelled as a descriptor or a device, by the rules
    /// the exec gate reads a script operand by (`/dev/stdin`, `/proc/self/fd/0`,
    /// `/dev/tty`), on what it saw of it.
    Preload { name: &'a [u8], descriptor: bool },
    /// After the program was found: belongs to the program.
    Program,
    /// An option cluster longer than the reader's limit, or an option whose effect the
    /// reader cannot establish: what it asks for is unknown.
    Unread,
    /// An option that skips the profile's start-up hook (CPython's `-S`), read by
    /// [`Grammar::feed_stopping_at_no_hook`] when asked to stop there: the rest of the word is
    /// not read.
    NoSite,
    /// An option that reads the interpreter's options or environment from a file the
    /// command line names (`node --env-file`): the environment variables a profile refuses
    /// could come from there.
    CodeEnvironment,
}

/// An interpreter's command-line grammar: reads its argv (without `argv[0]`) one word at a
/// time, exactly as the interpreter does.
pub trait Grammar: Copy + 'static {
    /// A reader at the start of a command line that reads at most `limit` option letters of
    /// one cluster, answering [`Word::Unread`] beyond (the kernel bounds its loops).
    fn with_cluster_limit(limit: usize) -> Self;

    /// Reads the next word; when `STOP`, an option that skips the profile's start-up hook
    /// answers [`Word::NoSite`]. Inlined in the kernel: a BPF subprogram cannot return a
    /// slice of its caller's stack.
    fn feed_stopping_at_no_hook<'a, const STOP: bool>(&mut self, arg: &'a [u8]) -> Word<'a>;

    /// Reads the next word.
    #[inline(always)]
    fn feed<'a>(&mut self, arg: &'a [u8]) -> Word<'a> {
        self.feed_stopping_at_no_hook::<false>(arg)
    }

    /// [`Self::feed_stopping_at_no_hook`], with the word also given as `padded`: its first
    /// `ARG_BUFFER - 1` bytes ([`crate::exec_gate::ARG_BUFFER`]), then zeros, which is what
    /// the kernel's word buffer holds (cleared before each read). A reader that scans a
    /// word's bytes scans them there, at fixed or masked offsets: the BPF verifier walks
    /// such a scan once, where a loop bounded by a word's length multiplies what follows
    /// it by every length. Slices in the answer are `arg`'s.
    #[inline(always)]
    fn feed_padded<'a, const STOP: bool>(
        &mut self,
        arg: &'a [u8],
        padded: &[u8; crate::exec_gate::ARG_BUFFER],
    ) -> Word<'a> {
        let _ = padded;
        self.feed_stopping_at_no_hook::<STOP>(arg)
    }

    /// True once the words that follow belong to the program: no later word can change what
    /// the interpreter runs.
    fn done(&self) -> bool;

    /// True when the next word is read as options (or as the script operand).
    fn expects_option(&self) -> bool;

    /// True when the options so far ask for a console or a debugger: CPython's `-i`,
    /// `perl -d`, `node -i`/`--inspect`/`inspect`.
    fn interactive(&self) -> bool;

    /// True when, with the command line ending here, the interpreter would read its program
    /// from standard input (or run a console on a terminal): no script, no inline code, no
    /// module.
    fn reads_stdin_without_script(&self) -> bool;
}

/// What an interpreter's command line (without `argv[0]`) asks it to run, read with its
/// dialect's grammar: user space's summary, the same reader the kernel walks.
pub fn parse<'a, I>(dialect: Dialect, args: I) -> crate::python_argv::Invocation<'a>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    match dialect {
        Dialect::Python => crate::python_argv::parse(args),
        Dialect::Perl => crate::perl_argv::parse(args),
        Dialect::Ruby => crate::ruby_argv::parse(args),
        Dialect::Node => {
            let node = crate::node_argv::parse(args);
            crate::python_argv::Invocation {
                inline_code: node.inline_code,
                module: None,
                // The empty operand is standard input, as `-` is.
                script: node
                    .script
                    .map(|s| if s.is_empty() { &b"-"[..] } else { s }),
                inspect: node.interactive,
                no_site: false,
                truncated: node.truncated,
                unread: node.unread,
            }
        }
    }
}
