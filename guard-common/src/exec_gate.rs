//! The exec gate's wire format and its judgement of a CPython command line.
//!
//! The kernel program (`guard-ebpf`, `tp_btf/sched_process_exec`) and user space share this
//! module: the structs cross the BPF boundary, and [`ArgvJudge`] / [`EnvPattern`] are the
//! very code the kernel runs, so `guard`'s own tests pin down what the kernel decides.

use crate::Rule;
use crate::argv::{Dialect, Grammar, Word};
use crate::loader_argv::{LoaderReader, LoaderWord};
use crate::python_argv::{device_path_with, has_dot_dot_component, is_descriptor_link};

/// Refuse `-c` (also inside clusters such as `-Ic`).
pub const DENY_INLINE_CODE: u32 = 1 << 0;
/// Refuse code from standard input: `-` as the script, or no script, `-c` or `-m`.
pub const DENY_STDIN_CODE: u32 = 1 << 1;
/// Refuse `-i` (inspect interactively).
pub const DENY_INTERACTIVE: u32 = 1 << 2;
/// Refuse a script operand that names a descriptor (`/dev/fd/*`, `/dev/stdin`, `/proc/*/fd/*`)
/// or, by its absolute spelling, a device (`/dev/tty`, `/dev/pts/N`; not `/dev/shm/`).
pub const DENY_DESCRIPTOR_SCRIPT: u32 = 1 << 3;
/// Refuse `-S`: without `site`, the profile's audit hook (installed by a `.pth` file) never
/// loads ([`Rule::AuditHookRequired`]).
pub const DENY_NO_SITE: u32 = 1 << 4;
pub use crate::PERMISSIVE;

/// How many words after `argv[0]` the kernel reads before it must have found the program.
/// CPython command lines with more options than this before the script are refused
/// ([`Rule::FactsUnavailable`]): padding must not push `-c` out of sight.
pub const MAX_ARGS: u32 = 32;
/// How many environment entries the kernel reads. A longer environment is refused when env
/// names are configured, for the same reason.
pub const MAX_ENV: u32 = 256;
/// Bytes of one argv word the kernel reads (including the terminating NUL).
pub const ARG_BUFFER: usize = 128;
/// Option letters of one cluster the kernel reads (`-EIc` has three); a longer cluster is
/// refused ([`Rule::FactsUnavailable`]).
pub const MAX_CLUSTER: usize = 15;
/// How many refused environment variable names the policy may hold.
pub const MAX_ENV_NAMES: usize = 16;
/// Longest refused name: the name, its `=` and the NUL the kernel's string read always
/// writes fit in four 64-bit words.
pub const MAX_ENV_NAME_LEN: usize = 30;

/// Longest module name the policy may list as an interpreter module (`-m NAME`): the name is
/// the key of the kernel's module map, NUL-padded to this size.
pub const MODULE_NAME_LEN: usize = 32;
/// How many interpreter modules the kernel's map holds (all profiles together).
pub const MAX_EVAL_MODULES: usize = 64;
/// Value bit in the module map: the module's `__main__` runs Python given on its command
/// line or read from a file it opens as data (`timeit -s CODE`, `pdb -c CODE`, `doctest
/// FILE`): `-m NAME` is `-c` in another spelling ([`Rule::NoInlineCode`]).
pub const MODULE_INLINE_CODE: u32 = 1 << 0;
/// Value bit in the module map: the module's `__main__` reads Python from standard input
/// (a REPL: `code`, `asyncio`): `-m NAME` is a bare interpreter reading stdin
/// ([`Rule::NoStdinCode`]).
pub const MODULE_STDIN_CODE: u32 = 1 << 1;

/// Value in the executable map: a profiled interpreter, whose argv is CPython's. The other
/// interpreters' values are their [`Dialect`]s (`Dialect::X as u32`).
pub const KIND_INTERPRETER: u32 = Dialect::Python as u32;
/// Value in the executable map: a dynamic loader (`ld.so`), a launcher whose direct use may
/// not run a program ([`LoaderJudge`]).
pub const KIND_LOADER: u32 = 1;

/// Key of the interpreter map: the executable's identity as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InterpreterKey {
    /// `inode->i_ino`.
    pub ino: u64,
    /// `sb->s_dev` in the kernel's encoding (`major << 20 | minor`), not `st_dev`.
    pub dev: u32,
    /// Always 0: the kernel hashes all key bytes.
    pub pad: u32,
}

/// Key of the module map: a dotted module name, NUL-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModuleKey {
    pub name: [u8; MODULE_NAME_LEN],
}

impl ModuleKey {
    /// `None` when the name is empty, longer than [`MODULE_NAME_LEN`], or not a dotted
    /// Python module name of ASCII identifiers (`asyncio`, `idlelib.idle`).
    pub fn new(name: &[u8]) -> Option<ModuleKey> {
        if name.is_empty() || name.len() > MODULE_NAME_LEN {
            return None;
        }
        let mut key = ModuleKey::default();
        let mut component_start = true;
        for (i, &b) in name.iter().enumerate() {
            let ok = match b {
                b'.' => !component_start,
                b'0'..=b'9' => !component_start,
                b'a'..=b'z' | b'A'..=b'Z' | b'_' => true,
                _ => false,
            };
            if !ok {
                return None;
            }
            component_start = b == b'.';
            key.name[i] = b;
        }
        if component_start {
            return None;
        }
        Some(key)
    }
}

/// The interpreter modules a judge knows, by name: the kernel's map, or a list in user space.
pub trait ModuleSet {
    /// The `MODULE_*` bits of exactly this name (0 when not listed).
    fn kinds(&self, key: &ModuleKey) -> u32;
}

/// No interpreter module at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoModules;

impl ModuleSet for NoModules {
    #[inline(always)]
    fn kinds(&self, _key: &ModuleKey) -> u32 {
        0
    }
}

/// The `MODULE_*` bits of a `-m` operand: those of the operand itself and of each of its
/// dotted prefixes, so a listed `asyncio` also covers `asyncio.__main__` (the same code),
/// and a listed package every module in it; `pdbx` or `codec` are other names. `whole` is
/// false when the operand is only the prefix the kernel could read: its dotted prefixes
/// still count, the operand itself cannot be a listed name.
///
/// One byte loop with one map lookup per dot, written for the BPF verifier (bounded by
/// [`MODULE_NAME_LEN`], only `operand[i]` with `i < len` indexed).
#[inline(always)]
pub fn module_kinds<M: ModuleSet>(operand: &[u8], whole: bool, modules: &M) -> u32 {
    let mut key = ModuleKey::default();
    let mut kinds = 0;
    let mut i = 0;
    while i < operand.len() && i <= MODULE_NAME_LEN {
        let b = operand[i];
        if b == b'.' {
            // `key` holds operand[..i], NUL-padded.
            kinds |= modules.kinds(&key);
        }
        if i == MODULE_NAME_LEN {
            // Longer than any listed name: only its prefixes could match.
            return kinds;
        }
        key.name[i] = b;
        i += 1;
    }
    if whole && operand.len() <= MODULE_NAME_LEN {
        kinds |= modules.kinds(&key);
    }
    kinds
}

/// A refused environment variable, matched word-wise: `NAME=` padded with zeros, and the
/// mask of its bytes. Comparing four words keeps the kernel loop free of byte loops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnvPattern {
    pub words: [u64; 4],
    pub mask: [u64; 4],
}

impl EnvPattern {
    /// `None` when the name is empty, too long, or holds `=` or NUL.
    pub fn new(name: &[u8]) -> Option<EnvPattern> {
        if name.is_empty() || name.len() > MAX_ENV_NAME_LEN {
            return None;
        }
        let mut bytes = [0u8; 32];
        let mut mask = [0u8; 32];
        for (i, b) in name.iter().enumerate() {
            if *b == b'=' || *b == 0 {
                return None;
            }
            bytes[i] = *b;
            mask[i] = 0xff;
        }
        bytes[name.len()] = b'=';
        mask[name.len()] = 0xff;
        Some(EnvPattern {
            words: pack(&bytes),
            mask: pack(&mask),
        })
    }

    /// Whether an environment entry (`NAME=value`, first 32 bytes as read by the kernel,
    /// zero-padded) sets this variable.
    #[inline(always)]
    pub fn matches(&self, entry: &[u64; 4]) -> bool {
        (entry[0] & self.mask[0]) == self.words[0]
            && (entry[1] & self.mask[1]) == self.words[1]
            && (entry[2] & self.mask[2]) == self.words[2]
            && (entry[3] & self.mask[3]) == self.words[3]
    }

    /// Whether an environment entry sets this variable (user-space form of [`Self::matches`]).
    pub fn matches_entry(&self, entry: &[u8]) -> bool {
        self.matches(&env_entry_words(entry))
    }
}

/// The refused environment variables a judge knows: the gate's settings in the kernel, a
/// list in user space.
pub trait EnvNames {
    /// How many patterns are in use (at most [`MAX_ENV_NAMES`] are read).
    fn count(&self) -> u32;
    /// Pattern `k`, for `k` below [`Self::count`] and [`MAX_ENV_NAMES`].
    fn pattern(&self, k: usize) -> EnvPattern;
}

impl EnvNames for [EnvPattern] {
    fn count(&self) -> u32 {
        u32::try_from(self.len()).unwrap_or(u32::MAX)
    }
    fn pattern(&self, k: usize) -> EnvPattern {
        self[k]
    }
}

/// Whether one environment entry (its first 32 bytes as the kernel reads them,
/// zero-padded) sets a refused variable ([`Rule::NoCodeEnvironment`]). The kernel runs this
/// very loop on each entry; [`judge_env`] drives it over a whole environment.
#[inline(always)]
pub fn env_entry_refused<N: EnvNames + ?Sized>(names: &N, entry: &[u64; 4]) -> bool {
    let count = names.count();
    let mut k = 0;
    while k < MAX_ENV_NAMES {
        // Below MAX_ENV_NAMES.
        #[allow(clippy::cast_possible_truncation)]
        if k as u32 >= count {
            break;
        }
        if names.pattern(k).matches(entry) {
            return true;
        }
        k += 1;
    }
    false
}

/// The first 32 bytes of an environment entry as the kernel's string read leaves them: at
/// most 31 bytes, then NULs.
pub fn env_entry_words(entry: &[u8]) -> [u64; 4] {
    let mut bytes = [0u8; 32];
    let n = if entry.len() < 31 { entry.len() } else { 31 };
    bytes[..n].copy_from_slice(&entry[..n]);
    pack(&bytes)
}

/// Judges an interpreter's environment in user space, exactly as the kernel would, with
/// its limits: nothing to refuse without names; more than [`MAX_ENV`] entries are refused
/// unread ([`Rule::FactsUnavailable`]); an entry setting a refused variable is refused.
pub fn judge_env<'a, N, E>(names: &N, env: E) -> Step
where
    N: EnvNames + ?Sized,
    E: IntoIterator<Item = &'a [u8]>,
    E::IntoIter: ExactSizeIterator,
{
    if names.count() == 0 {
        return Step::Allow;
    }
    let env = env.into_iter();
    if env.len() > MAX_ENV as usize {
        return Step::Refuse(Rule::FactsUnavailable);
    }
    for entry in env {
        if env_entry_refused(names, &env_entry_words(entry)) {
            return Step::Refuse(Rule::NoCodeEnvironment);
        }
    }
    Step::Allow
}

fn pack(bytes: &[u8; 32]) -> [u64; 4] {
    let mut words = [0u64; 4];
    for (i, word) in words.iter_mut().enumerate() {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *word = u64::from_ne_bytes(chunk);
    }
    words
}

/// Everything the program needs besides the interpreter map: a read-only global set by the
/// loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateSettings {
    pub offsets: crate::lsm::LsmOffsets,
    /// `DENY_*` and `PERMISSIVE` bits.
    pub flags: u32,
    /// The native-code level (`crate::lsm::NATIVE_*`) host mode enforces for every task:
    /// each exec's program and ELF interpreter, each executable file mapping. 0 when the
    /// BPF LSM layer does it.
    pub native: u32,
    /// Who and what the native-code rule trusts.
    pub trust: crate::lsm::Trust,
    /// How many of `env` are in use.
    pub env_count: u32,
    pub pad: u32,
    pub env: [EnvPattern; MAX_ENV_NAMES],
    /// `LD_TRACE_LOADED_OBJECTS=`: a loader with it set runs nothing (what `ldd` does).
    pub loader_trace: EnvPattern,
}

/// One refusal, reported through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateEvent {
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// A [`Rule`] discriminant.
    pub rule: u32,
    /// 1 when the process was sent SIGKILL, 0 when only reported (permissive).
    pub killed: u32,
    /// The refused file's identity: the interpreter or loader launched, the program or
    /// library refused as native code.
    pub ino: u64,
    pub dev: u32,
    /// What refused: a `crate::lsm::HOOK_*` value (`HOOK_BPRM_CREDS_FOR_EXEC` for a
    /// launch, `HOOK_BPRM_CHECK_SECURITY`, `HOOK_MMAP_FILE` or `HOOK_FILE_MPROTECT` for
    /// native code).
    pub hook: u32,
    /// The task's name (`comm`) when it was refused: it is gone before the agent can ask.
    pub comm: [u8; 16],
}

/// What the judge concluded so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Needs the next word.
    More,
    /// The command line is acceptable.
    Allow,
    /// The command line is refused by this rule.
    Refuse(Rule),
}

/// Judges an interpreter's argv (without `argv[0]`) one word at a time, as the kernel reads
/// it, with the interpreter's [`Grammar`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgvJudge<G> {
    reader: G,
    flags: u32,
    /// The first bytes of the `-m` operand: enough for every dotted prefix a listed name
    /// could be (see [`module_kinds`]).
    module: [u8; MODULE_NAME_LEN + 1],
    module_len: u32,
    /// The operand was read to its end.
    module_whole: bool,
    /// Words fed so far.
    words: u32,
    /// Which word (counted from 0, the one after `argv[0]`) is the script operand, plus
    /// one; 0 when there is none.
    script_word: u32,
}

/// Bytes of the script operand [`ArgvJudge::judge_after_words`] judges by spelling: its
/// first `SCRIPT_PREFIX - 1`, NUL-padded, as the kernel's string read leaves them.
pub const SCRIPT_PREFIX: usize = 64;

impl<G: Grammar> ArgvJudge<G> {
    #[inline(always)]
    pub fn new(flags: u32) -> Self {
        ArgvJudge {
            reader: G::with_cluster_limit(MAX_CLUSTER),
            flags,
            module: [0; MODULE_NAME_LEN + 1],
            module_len: 0,
            module_whole: false,
            words: 0,
            script_word: 0,
        }
    }

    /// Reads one word. `whole` is false when the reader saw only a prefix of it (the word is
    /// longer than the kernel's buffer): a judgement that depends on the unseen rest refuses.
    /// The `-m` and script operands are kept for [`Self::judge_after_words`].
    pub fn feed(&mut self, word: &[u8], whole: bool) -> Step {
        let mut padded = [0u8; ARG_BUFFER];
        let n = word.len().min(ARG_BUFFER - 1);
        padded[..n].copy_from_slice(&word[..n]);
        self.feed_padded(word, &padded, whole)
    }

    /// [`Self::feed`], with the word also in `padded` as the kernel's buffer holds it: its
    /// first `ARG_BUFFER - 1` bytes, then zeros ([`Grammar::feed_padded`]).
    #[inline(always)]
    pub fn feed_padded(&mut self, word: &[u8], padded: &[u8; ARG_BUFFER], whole: bool) -> Step {
        self.words = self.words.wrapping_add(1);
        let read = if self.flags & DENY_NO_SITE != 0 {
            self.reader.feed_padded::<true>(word, padded)
        } else {
            self.reader.feed_padded::<false>(word, padded)
        };
        match read {
            // `-S` among the options: the interpreter starts without site, whatever else
            // the command line asks.
            Word::NoSite => return Step::Refuse(Rule::AuditHookRequired),
            Word::InlineCode if self.flags & DENY_INLINE_CODE != 0 => {
                return Step::Refuse(Rule::NoInlineCode);
            }
            // Options or environment read from a file the command line names: what the
            // profile refuses in the environment could come from there.
            Word::CodeEnvironment if self.flags & DENY_INLINE_CODE != 0 => {
                return Step::Refuse(Rule::NoCodeEnvironment);
            }
            Word::Module(Some(name)) => {
                // A plain copy: the lookups happen once, after the word loop, where the
                // verifier walks them once rather than for every state of the walk.
                let mut i = 0;
                while i < name.len() && i < self.module.len() {
                    self.module[i] = name[i];
                    i += 1;
                }
                // At most the module buffer's length.
                #[allow(clippy::cast_possible_truncation)]
                let len = i as u32;
                self.module_len = len;
                self.module_whole = whole;
            }
            Word::Options if !whole => return Step::Refuse(Rule::FactsUnavailable),
            Word::Unread => return Step::Refuse(Rule::FactsUnavailable),
            // A module loaded before the program, named by the command line: read as a
            // script would be, so a descriptor or a device is no more a module than a
            // script (`node -r /dev/stdin`). The reader judged its spelling, in the word
            // loop: there may be several.
            Word::Preload {
                descriptor: true, ..
            } if self.flags & DENY_DESCRIPTOR_SCRIPT != 0 => {
                return Step::Refuse(Rule::ScriptIsFile);
            }
            Word::Script(script) => {
                if script.len() == 1 && script[0] == b'-' && self.flags & DENY_STDIN_CODE != 0 {
                    return Step::Refuse(Rule::NoStdinCode);
                }
                if self.flags & DENY_DESCRIPTOR_SCRIPT != 0
                    && (is_descriptor_link(script) || (!whole && is_proc_path(script)))
                {
                    return Step::Refuse(Rule::ScriptIsFile);
                }
                // Judged by spelling after the word loop, from a fresh read of this word
                // into a fixed buffer: a copy here would make the verifier track its length
                // in every state of the walk.
                self.script_word = self.words;
            }
            _ => {}
        }
        if self.reader.done() {
            return self.finish();
        }
        Step::More
    }

    /// After the words allowed the command line: a script operand spelled as a device
    /// (`/dev/tty`: a terminal read as a script is an interactive console) is refused, and
    /// `-m NAME` of an interpreter module is the `-c` or the stdin code it amounts to,
    /// refused as such. `modules` are the interpreter modules.
    ///
    /// `script` holds the first bytes of the script operand ([`Self::script_index`]) as the
    /// kernel's string read leaves them: NUL-terminated and NUL-padded; `whole` when the
    /// operand fit.
    #[inline(always)]
    pub fn judge_after_words<M: ModuleSet>(
        &self,
        modules: &M,
        script: &[u8; SCRIPT_PREFIX],
        whole: bool,
    ) -> Step {
        if self.flags & DENY_DESCRIPTOR_SCRIPT != 0 && self.script_word != 0 {
            let device = device_path_with(script, has_dot_dot_component(script));
            if device.device || (!whole && device.open) {
                return Step::Refuse(Rule::ScriptIsFile);
            }
        }
        self.judge_module(modules)
    }

    /// Which word after `argv[0]` (from 0) is the script operand, if the words named one.
    #[inline(always)]
    pub fn script_index(&self) -> Option<u32> {
        self.script_word.checked_sub(1)
    }

    /// `-m NAME` of an interpreter module.
    #[inline(always)]
    fn judge_module<M: ModuleSet>(&self, modules: &M) -> Step {
        let len = self.module_len as usize;
        let Some(operand) = self.module.get(..len) else {
            return Step::Refuse(Rule::FactsUnavailable);
        };
        // Only the kept prefix was compared: a longer operand is not whole.
        let whole = self.module_whole && len <= MODULE_NAME_LEN;
        let kinds = module_kinds(operand, whole, modules);
        if kinds & MODULE_INLINE_CODE != 0 && self.flags & DENY_INLINE_CODE != 0 {
            return Step::Refuse(Rule::NoInlineCode);
        }
        if kinds & MODULE_STDIN_CODE != 0 && self.flags & DENY_STDIN_CODE != 0 {
            return Step::Refuse(Rule::NoStdinCode);
        }
        Step::Allow
    }

    /// The end of the command line (or the program was found).
    #[inline(always)]
    pub fn finish(&self) -> Step {
        if self.reader.interactive() && self.flags & DENY_INTERACTIVE != 0 {
            return Step::Refuse(Rule::NoInteractive);
        }
        if self.reader.reads_stdin_without_script() && self.flags & DENY_STDIN_CODE != 0 {
            return Step::Refuse(Rule::NoStdinCode);
        }
        Step::Allow
    }

    /// Judges a whole argv (without `argv[0]`) in user space, exactly as the kernel would,
    /// with the kernel's limits.
    pub fn judge_words<'a, I, M>(flags: u32, modules: &M, args: I) -> Step
    where
        I: IntoIterator<Item = &'a [u8]>,
        M: ModuleSet,
    {
        let mut judge = ArgvJudge::<G>::new(flags);
        let mut args = args.into_iter();
        let mut script: &[u8] = &[];
        // The kernel's bpf_loop: MAX_ARGS steps, each reads one word or finds the end.
        for _ in 0..MAX_ARGS {
            let step = match args.next() {
                None => judge.finish(),
                Some(arg) => {
                    let whole = arg.len() < ARG_BUFFER - 1;
                    let seen = if whole { arg } else { &arg[..ARG_BUFFER - 1] };
                    // As the kernel's buffer holds the word: what it read, then zeros.
                    let mut padded = [0u8; ARG_BUFFER];
                    padded[..seen.len()].copy_from_slice(seen);
                    let step = judge.feed_padded(seen, &padded, whole);
                    if judge.script_index() == Some(judge.words - 1) {
                        script = arg;
                    }
                    step
                }
            };
            match step {
                Step::More => {}
                // As the kernel: the operand read again, and the module lookups, after the
                // word loop.
                Step::Allow => {
                    let mut prefix = [0u8; SCRIPT_PREFIX];
                    let kept = script.len().min(SCRIPT_PREFIX - 1);
                    prefix[..kept].copy_from_slice(&script[..kept]);
                    let whole = script.len() < SCRIPT_PREFIX - 1;
                    return judge.judge_after_words(modules, &prefix, whole);
                }
                verdict => return verdict,
            }
        }
        Step::Refuse(Rule::FactsUnavailable)
    }
}

/// Judges an interpreter's whole argv (without `argv[0]`) in user space with its dialect's
/// grammar, exactly as the kernel would, with the kernel's limits.
pub fn judge_argv<'a, I, M>(dialect: Dialect, flags: u32, modules: &M, args: I) -> Step
where
    I: IntoIterator<Item = &'a [u8]>,
    M: ModuleSet,
{
    match dialect {
        Dialect::Python => {
            ArgvJudge::<crate::python_argv::Reader>::judge_words(flags, modules, args)
        }
        Dialect::Perl => ArgvJudge::<crate::perl_argv::Reader>::judge_words(flags, modules, args),
        Dialect::Ruby => ArgvJudge::<crate::ruby_argv::Reader>::judge_words(flags, modules, args),
        Dialect::Node => ArgvJudge::<crate::node_argv::Reader>::judge_words(flags, modules, args),
    }
}

/// Judges the argv (without `argv[0]`) of a dynamic loader exec'd directly, one word at a
/// time as the kernel reads it: a program operand is refused unless an earlier option put
/// the loader in a mode that runs nothing. A refusal still yields to the loader's trace
/// variable in the environment (see [`LoaderJudge::judge`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderJudge {
    reader: LoaderReader,
}

impl LoaderJudge {
    pub const fn new() -> Self {
        LoaderJudge {
            reader: LoaderReader::new(),
        }
    }

    /// Reads one word. A word longer than the kernel's buffer needs no special care: no
    /// option is that long, so its prefix is an unknown option or a program, both refused.
    #[inline(always)]
    pub fn feed(&mut self, word: &[u8]) -> Step {
        match self.reader.feed(word) {
            LoaderWord::RunsNothing => Step::Allow,
            LoaderWord::Program => Step::Refuse(Rule::NoLoaderLaunch),
            // glibc would print its usage, or a newer glibc gave the option an argument
            // this reader does not expect: refuse rather than guess.
            LoaderWord::Unknown => Step::Refuse(Rule::FactsUnavailable),
            LoaderWord::Option | LoaderWord::Argument => Step::More,
        }
    }

    /// The end of the command line without a program: the loader prints its usage.
    #[inline(always)]
    pub fn finish(&self) -> Step {
        Step::Allow
    }

    /// Judges a whole loader invocation in user space, exactly as the kernel would, with
    /// the kernel's limits: the argv, then (for a refusal) whether one of the first
    /// [`MAX_ENV`] environment entries sets the trace variable.
    pub fn judge<'a, I, E>(args: I, env: E) -> Step
    where
        I: IntoIterator<Item = &'a [u8]>,
        E: IntoIterator<Item = &'a [u8]>,
    {
        let mut judge = LoaderJudge::new();
        let mut args = args.into_iter();
        let mut verdict = Step::Refuse(Rule::FactsUnavailable);
        for _ in 0..MAX_ARGS {
            let Some(arg) = args.next() else {
                verdict = judge.finish();
                break;
            };
            let seen = if arg.len() < ARG_BUFFER - 1 {
                arg
            } else {
                &arg[..ARG_BUFFER - 1]
            };
            match judge.feed(seen) {
                Step::More => {}
                step => {
                    verdict = step;
                    break;
                }
            }
        }
        if let Step::Refuse(_) = verdict {
            let trace = EnvPattern::new(crate::loader_argv::TRACE_VARIABLE);
            let traced = env
                .into_iter()
                .take(MAX_ENV as usize)
                .any(|entry| trace.is_some_and(|p| p.matches_entry(entry)));
            if traced {
                return Step::Allow;
            }
        }
        verdict
    }
}

fn is_proc_path(path: &[u8]) -> bool {
    path.len() >= 6
        && path[0] == b'/'
        && path[1] == b'p'
        && path[2] == b'r'
        && path[3] == b'o'
        && path[4] == b'c'
        && path[5] == b'/'
}

// aya reads these from maps and ring buffers as plain bytes.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod pod {
    // SAFETY: all four are `repr(C)`, made only of integers with explicit padding fields, so
    // every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::InterpreterKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GateSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GateEvent {}
    // SAFETY: as above (a byte array).
    unsafe impl aya::Pod for super::ModuleKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::format;

    const ALL: u32 = DENY_INLINE_CODE | DENY_STDIN_CODE | DENY_INTERACTIVE | DENY_DESCRIPTOR_SCRIPT;

    /// `aya::Pod` is claimed for the settings: no implicit padding anywhere.
    #[test]
    fn settings_have_no_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<crate::lsm::LsmOffsets>() % 8, 0);
        assert_eq!(
            size_of::<GateSettings>(),
            size_of::<crate::lsm::LsmOffsets>()
                + 4 * 4
                + size_of::<crate::lsm::Trust>()
                + size_of::<EnvPattern>() * (MAX_ENV_NAMES + 1)
        );
        assert_eq!(size_of::<GateEvent>(), 56);
    }

    fn judge(args: &[&str]) -> Step {
        judge_argv(
            Dialect::Python,
            ALL,
            &NoModules,
            args.iter().map(|a| a.as_bytes()),
        )
    }

    /// A module list as user space keeps it.
    struct Listed(&'static [(&'static str, u32)]);

    impl ModuleSet for Listed {
        fn kinds(&self, key: &ModuleKey) -> u32 {
            self.0
                .iter()
                .filter(|(name, _)| ModuleKey::new(name.as_bytes()).as_ref() == Some(key))
                .fold(0, |kinds, (_, k)| kinds | k)
        }
    }

    const MODULES: Listed = Listed(&[
        ("timeit", MODULE_INLINE_CODE),
        ("pdb", MODULE_INLINE_CODE | MODULE_STDIN_CODE),
        ("code", MODULE_STDIN_CODE),
        ("asyncio", MODULE_STDIN_CODE),
        ("idlelib", MODULE_INLINE_CODE | MODULE_STDIN_CODE),
        ("a234567890123456789012345678901b", MODULE_INLINE_CODE),
    ]);

    fn judge_modules(flags: u32, args: &[&str]) -> Step {
        judge_argv(
            Dialect::Python,
            flags,
            &MODULES,
            args.iter().map(|a| a.as_bytes()),
        )
    }

    #[test]
    fn a_start_up_without_site_is_refused_only_where_the_hook_is_required() {
        let hooked = ALL | DENY_NO_SITE;
        for args in [
            &["-S", "s.py"][..],
            &["-ES", "s.py"],
            &["-IS", "s.py"],
            &["-sSE", "s.py"],
            &["-E", "-S", "-m", "json.tool"],
            &["-S", "-W", "x", "s.py"],
        ] {
            assert_eq!(
                judge_modules(hooked, args),
                Step::Refuse(Rule::AuditHookRequired),
                "{args:?}"
            );
            assert_eq!(judge_modules(ALL, args), Step::Allow, "{args:?}");
        }
        // An `S` that is a program's argument, or an option's value, is no `-S`.
        for args in [
            &["s.py", "-S"][..],
            &["-X", "S", "s.py"],
            &["-XS", "s.py"],
            &["-W", "S", "s.py"],
            &["-WS", "s.py"],
            &["-m", "json.tool", "-S"],
        ] {
            assert_eq!(judge_modules(hooked, args), Step::Allow, "{args:?}");
        }
    }

    #[test]
    fn module_keys_are_dotted_identifiers() {
        for good in [
            "code",
            "idlelib.idle",
            "_x",
            "a1.b_2",
            "a234567890123456789012345678901b",
        ] {
            let key = ModuleKey::new(good.as_bytes()).unwrap();
            assert_eq!(&key.name[..good.len()], good.as_bytes());
            assert!(key.name[good.len()..].iter().all(|b| *b == 0));
        }
        for bad in [
            "",
            ".code",
            "code.",
            "a..b",
            "1code",
            "a.1b",
            "co de",
            "co-de",
            "code\0",
            "a234567890123456789012345678901bc",
            "caf\u{e9}",
        ] {
            assert_eq!(ModuleKey::new(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn module_operands_match_names_and_their_submodules() {
        let kinds = |operand: &str| module_kinds(operand.as_bytes(), true, &MODULES);
        assert_eq!(kinds("timeit"), MODULE_INLINE_CODE);
        assert_eq!(kinds("code"), MODULE_STDIN_CODE);
        assert_eq!(kinds("asyncio.__main__"), MODULE_STDIN_CODE);
        assert_eq!(
            kinds("idlelib.idle"),
            MODULE_INLINE_CODE | MODULE_STDIN_CODE
        );
        assert_eq!(kinds("pdb.x.y"), MODULE_INLINE_CODE | MODULE_STDIN_CODE);
        for other in [
            "codec",
            "codeop",
            "xcode",
            "json.tool",
            "timeitx",
            "",
            ".",
            ".code",
            "x.code",
            "Code",
            "code ",
            "this",
        ] {
            assert_eq!(kinds(other), 0, "{other:?}");
        }
        // A name of the full key size, alone and as a package.
        assert_eq!(
            kinds("a234567890123456789012345678901b"),
            MODULE_INLINE_CODE
        );
        assert_eq!(
            kinds("a234567890123456789012345678901b.m"),
            MODULE_INLINE_CODE
        );
        assert_eq!(kinds("a234567890123456789012345678901bc"), 0);
        // A long operand: its dotted prefixes are still seen, past the key size nothing.
        let long = format!("code.{}", "x".repeat(200));
        assert_eq!(kinds(&long), MODULE_STDIN_CODE);
        assert_eq!(
            module_kinds(long.as_bytes(), false, &MODULES),
            MODULE_STDIN_CODE
        );
        assert_eq!(kinds(&format!("{}.code", "x".repeat(40))), 0);
        // The operand the kernel read only in part is never itself a listed name.
        assert_eq!(module_kinds(b"timeit", false, &MODULES), 0);
    }

    #[test]
    fn interpreter_modules_are_refused_in_every_spelling() {
        let refused = |args: &[&str], rule| {
            assert_eq!(judge_modules(ALL, args), Step::Refuse(rule), "{args:?}");
        };
        refused(
            &["-m", "timeit", "-n", "1", "-s", "x", "pass"],
            Rule::NoInlineCode,
        );
        refused(&["-mtimeit", "-s", "x"], Rule::NoInlineCode);
        refused(&["-m", "pdb", "-c", "x", "ok.py"], Rule::NoInlineCode);
        refused(&["-m", "code"], Rule::NoStdinCode);
        refused(&["-mcode"], Rule::NoStdinCode);
        refused(&["-I", "-m", "code"], Rule::NoStdinCode);
        refused(&["-Im", "code"], Rule::NoStdinCode);
        refused(&["-IEmcode"], Rule::NoStdinCode);
        refused(&["-E", "-X", "dev", "-m", "code"], Rule::NoStdinCode);
        refused(&["-W", "ignore", "-m", "asyncio"], Rule::NoStdinCode);
        refused(&["-m", "asyncio.__main__"], Rule::NoStdinCode);
        refused(&["-m", "idlelib.idle"], Rule::NoInlineCode);
        // Each kind only where its rule is on.
        assert_eq!(
            judge_modules(ALL & !DENY_STDIN_CODE, &["-m", "code"]),
            Step::Allow
        );
        assert_eq!(
            judge_modules(ALL & !DENY_INLINE_CODE, &["-m", "timeit"]),
            Step::Allow
        );
        assert_eq!(
            judge_modules(ALL & !DENY_INLINE_CODE, &["-m", "pdb", "s.py"]),
            Step::Refuse(Rule::NoStdinCode)
        );
        let allowed = |args: &[&str]| assert_eq!(judge_modules(ALL, args), Step::Allow, "{args:?}");
        allowed(&["-m", "json.tool", "f"]);
        allowed(&["-m", "this"]);
        allowed(&["-m", "codec"]);
        allowed(&["-X", "code", "s.py"]);
        allowed(&["-W", "code", "s.py"]);
        // After the program, `-m code` belongs to it.
        allowed(&["s.py", "-m", "code"]);
        allowed(&["-m", "json.tool", "-m", "code"]);
        allowed(&["--", "code"]);
        // Without a module list nothing changes.
        assert_eq!(judge(&["-m", "code"]), Step::Allow);
    }

    #[test]
    fn refusals() {
        let refused = |args: &[&str], rule| assert_eq!(judge(args), Step::Refuse(rule), "{args:?}");
        refused(&["-c", "print(1)"], Rule::NoInlineCode);
        refused(&["-Ic", "x"], Rule::NoInlineCode);
        refused(&["-E", "-X", "dev", "-c", "x"], Rule::NoInlineCode);
        refused(&["-c"], Rule::NoInlineCode);
        refused(&[], Rule::NoStdinCode);
        refused(&["-"], Rule::NoStdinCode);
        refused(&["-I"], Rule::NoStdinCode);
        refused(&["-i", "s.py"], Rule::NoInteractive);
        refused(&["-i"], Rule::NoInteractive);
        refused(&["/dev/fd/63"], Rule::ScriptIsFile);
        refused(&["/dev/stdin"], Rule::ScriptIsFile);
        refused(&["/proc/self/fd/0", "a"], Rule::ScriptIsFile);
        refused(&["--", "/dev/fd/3"], Rule::ScriptIsFile);
        // getopt's long options inside a cluster: "-E-" is "-E --", "-E-NAME" is
        // "-E --NAME", whose argument is the next word.
        refused(&["-E-", "/dev/fd/3"], Rule::ScriptIsFile);
        refused(
            &["-E-check-hash-based-pycs", "always", "/dev/fd/3"],
            Rule::ScriptIsFile,
        );
        refused(&["-i-", "-c", "x"], Rule::NoInteractive);
        let padded: [&str; 40] = core::array::from_fn(|i| if i == 39 { "-c" } else { "-E" });
        refused(&padded, Rule::FactsUnavailable);
        let long_cluster = "-EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEc";
        refused(&[long_cluster, "x"], Rule::FactsUnavailable);
        // MAX_CLUSTER letters are read, one more is not.
        refused(&["-EEEEEEEEEEEEEEc", "x"], Rule::NoInlineCode);
        refused(&["-EEEEEEEEEEEEEEEc", "x"], Rule::FactsUnavailable);
        refused(&["-EEEEEEEEEEEEEEEs", "x.py"], Rule::FactsUnavailable);
        allowed_at_limit();
        let long_proc = "/proc/self/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/../fd/0";
        refused(&[long_proc], Rule::ScriptIsFile);
        // A device spelled past the kernel's buffer: what the cut prefix leaves open refuses.
        let long_dev = format!("/{}dev/tty", "./".repeat(100));
        refused(&[&long_dev], Rule::ScriptIsFile);
        let long_dev = format!("/dev/{}tty", "./".repeat(100));
        refused(&[&long_dev], Rule::ScriptIsFile);
        // A long path elsewhere is a path.
        let long_file = format!("/usr/{}/x.py", "a".repeat(200));
        assert_eq!(judge(&[&long_file]), Step::Allow);
    }

    fn allowed_at_limit() {
        // 32 words are read: a script as the 32nd is judged, a 33rd word is not reached.
        let mut words = ["-E"; 32];
        words[31] = "s.py";
        assert_eq!(judge(&words), Step::Allow);
        let mut words = ["-E"; 33];
        words[32] = "s.py";
        assert_eq!(judge(&words), Step::Refuse(Rule::FactsUnavailable));
    }

    #[test]
    fn allowed() {
        let allowed = |args: &[&str]| assert_eq!(judge(args), Step::Allow, "{args:?}");
        allowed(&["script.py", "arg1", "-c", "x"]);
        allowed(&["-m", "json.tool", "file"]);
        allowed(&["-mjson.tool"]);
        allowed(&["-W", "c", "s.py"]);
        allowed(&["-Wc", "s.py"]);
        allowed(&["-X", "-c", "s.py"]);
        allowed(&["--check-hash-based-pycs", "always", "s.py"]);
        allowed(&["-E-check-hash-based-pycs", "always", "s.py"]);
        allowed(&["-E-", "-c", "x"]);
        allowed(&["-I", "-E", "s.py", "-i"]);
        allowed(&["/proc/self/cwd/s.py"]);
        assert_eq!(
            judge_argv(Dialect::Python, 0, &NoModules, ["-c".as_bytes(), b"x"]),
            Step::Allow
        );
        assert_eq!(
            judge_argv(Dialect::Python, 0, &NoModules, [b"-".as_slice()]),
            Step::Allow
        );
    }

    fn judge_node(flags: u32, args: &[&str]) -> Step {
        judge_argv(
            Dialect::Node,
            flags,
            &NoModules,
            args.iter().map(|a| a.as_bytes()),
        )
    }

    #[test]
    fn node_command_lines() {
        let refused = |args: &[&str], rule| {
            assert_eq!(judge_node(ALL, args), Step::Refuse(rule), "{args:?}");
        };
        refused(&["-e", "x"], Rule::NoInlineCode);
        refused(&["--eval=x", "s.js"], Rule::NoInlineCode);
        refused(&["-p", "s.js"], Rule::NoInlineCode);
        refused(&["-pe", "x"], Rule::NoInlineCode);
        refused(
            &["--import", "data:text/javascript,x", "s.js"],
            Rule::NoInlineCode,
        );
        refused(
            &["--import= DATA:text/javascript,x", "s.js"],
            Rule::NoInlineCode,
        );
        refused(&[], Rule::NoStdinCode);
        refused(&["-"], Rule::NoStdinCode);
        refused(&[""], Rule::NoStdinCode);
        refused(&["--", ""], Rule::NoStdinCode);
        refused(&["-p", ""], Rule::NoStdinCode);
        refused(&["-r", "./pre.js"], Rule::NoStdinCode);
        refused(&["-i"], Rule::NoInteractive);
        refused(&["-i", "-"], Rule::NoStdinCode);
        refused(&["--inspect", "s.js"], Rule::NoInteractive);
        refused(&["--inspect-brk=0", "s.js"], Rule::NoInteractive);
        refused(&["inspect", "s.js"], Rule::NoInteractive);
        refused(&["--", "inspect"], Rule::NoInteractive);
        refused(&["/dev/stdin"], Rule::ScriptIsFile);
        refused(&["--", "/proc/self/fd/0"], Rule::ScriptIsFile);
        refused(&["/dev/tty"], Rule::ScriptIsFile);
        // A module loaded first is read as the operand is.
        refused(&["-r", "/dev/stdin", "s.js"], Rule::ScriptIsFile);
        refused(&["--require=/proc/self/fd/0", "s.js"], Rule::ScriptIsFile);
        refused(&["--import", "/dev/fd/3", "s.js"], Rule::ScriptIsFile);
        refused(&["--loader=/dev/./tty", "s.js"], Rule::ScriptIsFile);
        refused(
            &["-r", &format!("/proc/{}", "x".repeat(200)), "s.js"],
            Rule::ScriptIsFile,
        );
        refused(
            &["--import", "/%64ev/stdin", "s.js"],
            Rule::FactsUnavailable,
        );
        refused(
            &["--import=file:///dev/stdin", "s.js"],
            Rule::FactsUnavailable,
        );
        refused(&["--env-file=.env", "s.js"], Rule::NoCodeEnvironment);
        refused(&["--env-file", ".env", "s.js"], Rule::FactsUnavailable);
        refused(&["--snapshot-blob", "b", "s.js"], Rule::FactsUnavailable);
        refused(&["--disable-warning", "X", "s.js"], Rule::FactsUnavailable);
        let padded: [&str; 40] =
            core::array::from_fn(|i| if i == 39 { "s.js" } else { "--expose-gc" });
        refused(&padded, Rule::FactsUnavailable);
        // A long option word the kernel saw only part of.
        refused(
            &[&format!("--{}", "x".repeat(200)), "s.js"],
            Rule::FactsUnavailable,
        );
        let allowed = |args: &[&str]| assert_eq!(judge_node(ALL, args), Step::Allow, "{args:?}");
        allowed(&["s.js"]);
        allowed(&["s.js", "-e", "x", "-i"]);
        allowed(&["-i", "s.js"]);
        allowed(&["--", "-e"]);
        allowed(&["--conditions", "-x", "s.js"]);
        allowed(&["--conditions", "t", "s.js"]);
        // node writes a title over the command line the agent reads.
        refused(&["--title", "t", "s.js"], Rule::FactsUnavailable);
        refused(&["--title=t", "s.js"], Rule::FactsUnavailable);
        allowed(&[
            "-r",
            "./pre.txt",
            "--import",
            "./pre.mjs",
            "--import=node:fs",
            "s.js",
        ]);
        allowed(&["-r", "dotenv/config", "s.js"]);
        allowed(&["--max-old-space-size=4096", "--expose-gc", "s.js"]);
        allowed(&["--inspect-port", "0", "s.js"]);
        allowed(&["--version"]);
        allowed(&["-v"]);
        allowed(&["--help"]);
        allowed(&["-c", "s.js"]);
        allowed(&["--check"]);
        allowed(&["--test"]);
        allowed(&["--test", "a.test.js", "b.test.js"]);
        allowed(&["--build-snapshot", "--snapshot-blob", "b", "entry.js"]);
        allowed(&["--disable-warning=ExperimentalWarning", "s.js"]);
        allowed(&[&format!("--conditions={}", "x".repeat(200)), "s.js"]);
        allowed(&[&format!("/opt/{}/s.js", "x".repeat(200))]);
        // Each kind only where its rule is on.
        assert_eq!(
            judge_node(ALL & !DENY_INLINE_CODE, &["-e", "x"]),
            Step::Allow
        );
        assert_eq!(
            judge_node(ALL & !DENY_INLINE_CODE, &["--env-file=.env", "s.js"]),
            Step::Allow
        );
        assert_eq!(
            judge_node(ALL & !DENY_DESCRIPTOR_SCRIPT, &["-r", "/dev/stdin", "s.js"]),
            Step::Allow
        );
        assert_eq!(
            judge_node(ALL & !DENY_INTERACTIVE, &["--inspect", "s.js"]),
            Step::Allow
        );
        assert_eq!(judge_node(ALL & !DENY_STDIN_CODE, &[]), Step::Allow);
        assert_eq!(judge_node(0, &["-i"]), Step::Allow);
    }

    #[test]
    fn judge_agrees_with_parse() {
        use crate::python_argv::parse;
        let cases: &[&[&str]] = &[
            &["-c", "x"],
            &["-Ic", "x"],
            &["-"],
            &[],
            &["-i", "s.py"],
            &["s.py", "-c"],
            &["-m", "m"],
            &["-W", "c", "s.py"],
            &["/dev/fd/3"],
            &["--", "-c"],
            &["/dev/tty"],
            &["-I", "//dev/./pts/0", "x"],
            &["/dev/shm/x.py"],
        ];
        for case in cases {
            let inv = parse(case.iter().map(|a| a.as_bytes()));
            let expected = if inv.inline_code {
                Step::Refuse(Rule::NoInlineCode)
            } else if inv.script_is_descriptor_link() || inv.script_is_device() {
                Step::Refuse(Rule::ScriptIsFile)
            } else if inv.inspect {
                Step::Refuse(Rule::NoInteractive)
            } else if inv.reads_stdin() {
                Step::Refuse(Rule::NoStdinCode)
            } else {
                Step::Allow
            };
            assert_eq!(judge(case), expected, "{case:?}");
        }
    }

    fn loader(args: &[&str], env: &[&str]) -> Step {
        LoaderJudge::judge(
            args.iter().map(|a| a.as_bytes()),
            env.iter().map(|e| e.as_bytes()),
        )
    }

    #[test]
    fn loader_launches() {
        let refused = |args: &[&str], rule| {
            assert_eq!(loader(args, &["PATH=/bin"]), Step::Refuse(rule), "{args:?}");
        };
        refused(&["/usr/bin/python3", "-c", "x"], Rule::NoLoaderLaunch);
        refused(&["python3", "s.py"], Rule::NoLoaderLaunch);
        refused(&["/bin/true"], Rule::NoLoaderLaunch);
        refused(
            &["--library-path", "/x", "python3", "-c", "x"],
            Rule::NoLoaderLaunch,
        );
        refused(
            &["--inhibit-cache", "--argv0", "python3", "./py", "-c", "x"],
            Rule::NoLoaderLaunch,
        );
        // An option's argument is not a mode, and the program's own options are its own.
        refused(&["--argv0", "--verify", "python3"], Rule::NoLoaderLaunch);
        refused(&["python3", "--verify"], Rule::NoLoaderLaunch);
        refused(&["-c", "x"], Rule::NoLoaderLaunch);
        refused(&["--frobnicate", "python3"], Rule::FactsUnavailable);
        refused(&["--", "python3"], Rule::FactsUnavailable);
        let padded: [&str; 40] =
            core::array::from_fn(|i| if i == 39 { "p" } else { "--inhibit-cache" });
        refused(&padded, Rule::FactsUnavailable);
        // A prefix of an over-long word is never an option.
        let long = "--verify".repeat(20);
        refused(&[&long, "python3"], Rule::FactsUnavailable);
        // The trace variable must be set (any value), not merely named.
        assert_eq!(
            loader(
                &["python3"],
                &["LD_TRACE_LOADED_OBJECTSX=1", "LD_TRACE_LOADED_OBJECTS"]
            ),
            Step::Refuse(Rule::NoLoaderLaunch)
        );
        // Beyond the entries the kernel reads, the trace variable is not seen.
        let mut env = ["A=1"; 300];
        env[299] = "LD_TRACE_LOADED_OBJECTS=1";
        assert_eq!(
            loader(&["python3"], &env),
            Step::Refuse(Rule::NoLoaderLaunch)
        );
    }

    #[test]
    fn loader_modes_that_run_nothing() {
        let allowed = |args: &[&str], env: &[&str]| {
            assert_eq!(loader(args, env), Step::Allow, "{args:?} {env:?}");
        };
        // What Debian's ldd runs.
        allowed(&["--version"], &[]);
        allowed(&["--verify", "/usr/bin/python3"], &[]);
        allowed(
            &["/usr/bin/python3"],
            &["LD_WARN=", "LD_TRACE_LOADED_OBJECTS=1", "LD_BIND_NOW="],
        );
        allowed(&["python3", "-c", "x"], &["LD_TRACE_LOADED_OBJECTS="]);
        allowed(&["--list", "python3"], &[]);
        allowed(
            &["--library-path", "/x", "--list", "python3", "-c", "x"],
            &[],
        );
        allowed(&["--help"], &[]);
        allowed(&["--list-tunables"], &[]);
        allowed(&["--list-diagnostics"], &[]);
        allowed(&[], &[]);
        allowed(&["--library-path"], &[]);
    }

    #[test]
    fn environments() {
        let names = [
            EnvPattern::new(b"PYTHONSTARTUP").unwrap(),
            EnvPattern::new(b"PYTHONINSPECT").unwrap(),
        ];
        let judge = |env: &[&str]| judge_env(&names[..], env.iter().map(|e| e.as_bytes()));
        assert_eq!(judge(&["HOME=/", "PATH=/bin"]), Step::Allow);
        assert_eq!(judge(&[]), Step::Allow);
        assert_eq!(
            judge(&["HOME=/", "PYTHONINSPECT="]),
            Step::Refuse(Rule::NoCodeEnvironment)
        );
        assert_eq!(judge(&["PYTHONINSPECTX=1"]), Step::Allow);
        // Past the entries the kernel reads, refused unread, whatever they hold.
        let mut long = ["A=1"; MAX_ENV as usize + 1];
        assert_eq!(judge(&long), Step::Refuse(Rule::FactsUnavailable));
        long[0] = "PYTHONSTARTUP=x";
        assert_eq!(judge(&long), Step::Refuse(Rule::FactsUnavailable));
        assert_eq!(judge(&long[1..]), Step::Allow);
        // No names, nothing refused (and nothing read).
        let none: [EnvPattern; 0] = [];
        assert_eq!(
            judge_env(&none[..], long.iter().map(|e| e.as_bytes())),
            Step::Allow
        );
        assert!(env_entry_refused(
            &names[..],
            &env_entry_words(b"PYTHONSTARTUP=/x")
        ));
    }

    #[test]
    fn env_patterns() {
        let p = EnvPattern::new(b"PYTHONSTARTUP").unwrap();
        assert!(p.matches_entry(b"PYTHONSTARTUP=x"));
        assert!(p.matches_entry(b"PYTHONSTARTUP="));
        assert!(!p.matches_entry(b"PYTHONSTARTUPX=x"));
        assert!(!p.matches_entry(b"PYTHONSTARTUP"));
        assert!(!p.matches_entry(b"XPYTHONSTARTUP=x"));
        let long = EnvPattern::new(b"A23456789012345678901234567890").unwrap();
        assert!(long.matches_entry(b"A23456789012345678901234567890=1"));
        assert!(!long.matches_entry(b"A23456789012345678901234567890"));
        assert!(EnvPattern::new(b"A234567890123456789012345678901").is_none());
        assert!(EnvPattern::new(b"A=B").is_none());
        assert!(EnvPattern::new(b"").is_none());
    }
}
