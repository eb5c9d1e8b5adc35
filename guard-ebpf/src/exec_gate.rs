//! `tp_btf/sched_process_exec`: refuses interpreter invocations the policy forbids, each
//! interpreter's command line read by its own grammar ([`guard_common::argv`]).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use guard_common::argv::{Dialect, Grammar};
use guard_common::lsm::Hook;
use guard_common::{
    Rule,
    exec_gate::{
        ARG_BUFFER, ArgvJudge, EnvNames, EnvPattern, GateEvent, GateSettings, InterpreterKey,
        KIND_LOADER, LoaderJudge, MAX_ARGS, MAX_ENV, MAX_ENV_NAMES, ModuleKey, ModuleSet,
        PERMISSIVE, SCRIPT_PREFIX, Step, env_entry_refused,
    },
};
use guard_common::{node_argv, perl_argv, python_argv, ruby_argv};

use crate::kernel::{LoopBody, bounded_loop, kread, read_user_str, read_user_words};
use core::ops::ControlFlow;

const SIGKILL: u32 = 9;

/// Set by the loader (`EbpfLoader::set_global`); lives in `.rodata`, so the verifier treats
/// its contents as constants and prunes disabled checks.
#[unsafe(no_mangle)]
pub(crate) static GATE_SETTINGS: GateSettings = GateSettings {
    offsets: guard_common::lsm::LsmOffsets::ZERO,
    flags: 0,
    native: 0,
    trust: guard_common::lsm::Trust::EMPTY,
    env_count: 0,
    pad: 0,
    env: [EnvPattern {
        words: [0; 4],
        mask: [0; 4],
    }; MAX_ENV_NAMES],
    loader_trace: EnvPattern {
        words: [0; 4],
        mask: [0; 4],
    },
};

/// The judge's view of the gate's module map.
struct KernelModules;

impl ModuleSet for KernelModules {
    #[inline(always)]
    fn kinds(&self, key: &ModuleKey) -> u32 {
        crate::maps::gate_module_kinds(key)
    }
}

/// A field of the gate's settings (see [`crate::kernel::loader_set`]).
macro_rules! gate_setting {
    ($($field:tt)+) => {
        $crate::kernel::loader_set(&raw const $crate::exec_gate::GATE_SETTINGS.$($field)+)
    };
}
pub(crate) use gate_setting;

/// CPython's command lines and the dynamic loaders'. Each other interpreter's grammar is a
/// program of its own on the same tracepoint (below): each walk then has the verifier's
/// million instructions to itself, and only the dialects a policy profiles are loaded.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: *const u8 = ctx.arg(2);
    let _ = try_exec(bprm);
    0
}

/// perl's command lines ([`perl_argv`]).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn perl_exec(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    let _ = try_dialect::<perl_argv::Reader>(bprm, Dialect::Perl);
    0
}

/// Ruby's command lines ([`ruby_argv`]).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn ruby_exec(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    let _ = try_dialect::<ruby_argv::Reader>(bprm, Dialect::Ruby);
    0
}

/// Node.js's command lines ([`node_argv`]).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn node_exec(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    let _ = try_dialect::<node_argv::Reader>(bprm, Dialect::Node);
    0
}

/// The native-code rule at exec: a program of its own on the same tracepoint, so its
/// call chain and the command line's walk each have the verifier's 512 bytes of combined
/// stack to themselves.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn native_exec(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    if crate::native_gate::enabled() {
        crate::native_gate::judge_exec(bprm);
    }
    0
}

/// The executable an exec runs, and its entry in the gate's map (`None`: not watched).
#[inline(always)]
fn watched(bprm: *const u8) -> Result<Option<(InterpreterKey, u32)>, i32> {
    let file: *const u8 = kread(bprm, gate_setting!(offsets.bprm_file))?;
    let inode: *const u8 = kread(file, gate_setting!(offsets.file_inode))?;
    let ino: u64 = kread(inode, gate_setting!(offsets.inode_ino))?;
    let sb: *const u8 = kread(inode, gate_setting!(offsets.inode_sb))?;
    let dev: u32 = kread(sb, gate_setting!(offsets.sb_dev))?;
    let key = InterpreterKey { ino, dev, pad: 0 };
    Ok(crate::maps::gate_exec_kind(&key).map(|kind| (key, kind)))
}

/// An interpreter of `dialect` judged with its grammar `G`: its command line, then its
/// environment.
#[inline(always)]
fn try_dialect<G: Grammar>(bprm: *const u8, dialect: Dialect) -> Result<(), i32> {
    let Some((key, kind)) = watched(bprm)? else {
        return Ok(());
    };
    if kind != dialect as u32 {
        return Ok(());
    }
    let sp: u64 = kread(bprm, gate_setting!(offsets.bprm_p))?;
    let argc: i32 = kread(bprm, gate_setting!(offsets.bprm_argc))?;
    let envc: i32 = kread(bprm, gate_setting!(offsets.bprm_envc))?;
    let flags = gate_setting!(flags);
    let verdict = match judge_argv::<G>(sp, argc, flags) {
        Step::Refuse(rule) => Some(rule),
        _ => judge_env(sp, argc, envc),
    };
    if let Some(rule) = verdict {
        refuse(Hook::BprmCredsForExec as u32, rule, flags, key.ino, key.dev);
    }
    Ok(())
}

fn try_exec(bprm: *const u8) -> Result<(), i32> {
    let Some((key, kind)) = watched(bprm)? else {
        return Ok(());
    };

    // After create_elf_tables, bprm->p is the new user stack pointer: argc, then argv[],
    // NULL, envp[], NULL. Reading pointers from there needs no scan of the string area.
    let sp: u64 = kread(bprm, gate_setting!(offsets.bprm_p))?;
    let argc: i32 = kread(bprm, gate_setting!(offsets.bprm_argc))?;
    let envc: i32 = kread(bprm, gate_setting!(offsets.bprm_envc))?;
    let flags = gate_setting!(flags);

    if kind == KIND_LOADER {
        if let Some(rule) = judge_loader(sp, argc, envc) {
            refuse(Hook::BprmCredsForExec as u32, rule, flags, key.ino, key.dev);
        }
        return Ok(());
    }
    // The other dialects are their own programs' (the agent loads one for each dialect
    // its policy profiles, before it registers any executable of that dialect).
    let argv = match Dialect::from_u32(kind) {
        Some(Dialect::Python) => judge_argv::<python_argv::Reader>(sp, argc, flags),
        Some(_) => return Ok(()),
        // An executable registered under a kind no program knows: nothing says how its
        // command line reads.
        None => Step::Refuse(Rule::FactsUnavailable),
    };
    let verdict = match argv {
        Step::Refuse(rule) => Some(rule),
        _ => judge_env(sp, argc, envc),
    };
    if let Some(rule) = verdict {
        refuse(Hook::BprmCredsForExec as u32, rule, flags, key.ino, key.dev);
    }
    Ok(())
}

/// A judge of an exec's command line, fed one word after `argv[0]` at a time: `word` as
/// read, `padded` the buffer it lies in (zeros after it).
trait WordJudge {
    fn word(&mut self, word: &[u8], padded: &[u8; ARG_BUFFER], whole: bool) -> Step;
    fn end(&mut self) -> Step;
}

impl<G: Grammar> WordJudge for ArgvJudge<G> {
    #[inline(always)]
    fn word(&mut self, word: &[u8], padded: &[u8; ARG_BUFFER], whole: bool) -> Step {
        self.feed_padded(word, padded, whole)
    }
    #[inline(always)]
    fn end(&mut self) -> Step {
        self.finish()
    }
}

impl WordJudge for LoaderJudge {
    #[inline(always)]
    fn word(&mut self, word: &[u8], _padded: &[u8; ARG_BUFFER], _whole: bool) -> Step {
        self.feed(word)
    }
    #[inline(always)]
    fn end(&mut self) -> Step {
        self.finish()
    }
}

/// State of a walk over an exec's words, on the program's stack and handed to each
/// `bpf_loop` step.
struct WordWalk<J> {
    sp: u64,
    argc: i32,
    judge: J,
    verdict: Step,
    buf: [u8; ARG_BUFFER],
}

/// Word `index + 1` (argv[0] is the name the program was started under, not an option).
impl<J: WordJudge> LoopBody for WordWalk<J> {
    fn step(&mut self, index: u64) -> ControlFlow<()> {
        let i = index + 1;
        if i >= self.argc as u64 {
            self.verdict = self.judge.end();
            return ControlFlow::Break(());
        }
        // Zeros after the word, not the bytes of a longer one before it: a grammar reads the
        // buffer as the word padded ([`Grammar::feed_padded`]).
        self.buf = [0; ARG_BUFFER];
        let Ok(word) = read_user_str(self.sp + 8 * (1 + i), &mut self.buf) else {
            self.verdict = Step::Refuse(Rule::FactsUnavailable);
            return ControlFlow::Break(());
        };
        let read = word.len();
        let Some(word) = self.buf.get(..read) else {
            self.verdict = Step::Refuse(Rule::FactsUnavailable);
            return ControlFlow::Break(());
        };
        // A word that filled the buffer may go on beyond it.
        let whole = word.len() < ARG_BUFFER - 1;
        match self.judge.word(word, &self.buf, whole) {
            Step::More => ControlFlow::Continue(()),
            verdict => {
                self.verdict = verdict;
                ControlFlow::Break(())
            }
        }
    }
}

/// What `bpf_loop` is handed: its context must be on the stack, the walk is not.
struct InScratch<'a, J>(&'a mut WordWalk<J>);

impl<J: WordJudge> LoopBody for InScratch<'_, J> {
    #[inline(always)]
    fn step(&mut self, index: u64) -> ControlFlow<()> {
        self.0.step(index)
    }
}

/// A walk over an exec's words in this CPU's scratch slot (see
/// [`crate::maps::gate_scratch`]); `None` when the slot cannot be had.
#[inline(always)]
fn scratch_walk<J: WordJudge>(sp: u64, argc: i32, judge: J) -> Option<&'static mut WordWalk<J>> {
    let walk = crate::maps::gate_scratch::<WordWalk<J>>()?;
    // SAFETY: `walk` points to this CPU's slot, large and aligned enough for a WordWalk
    // (checked at compile time). Every field is written before the reference is made, the
    // buffer's bytes are plain `u8`s (whatever a previous walk left there is a valid value),
    // and no other program uses the slot while this one runs to its end on this CPU.
    unsafe {
        core::ptr::addr_of_mut!((*walk).sp).write(sp);
        core::ptr::addr_of_mut!((*walk).argc).write(argc);
        core::ptr::addr_of_mut!((*walk).judge).write(judge);
        core::ptr::addr_of_mut!((*walk).verdict).write(Step::More);
        Some(&mut *walk)
    }
}

// The verifier would walk an open-coded loop over words, each with a loop over its bytes,
// once per word and combination of judge states: over its million-instruction budget.
// A `bpf_loop` callback is verified once, whatever the number of words.
fn judge_argv<G: Grammar>(sp: u64, argc: i32, flags: u32) -> Step {
    let Some(walk) = scratch_walk(sp, argc, ArgvJudge::<G>::new(flags)) else {
        return Step::Refuse(Rule::FactsUnavailable);
    };
    bounded_loop(MAX_ARGS, &mut InScratch(&mut *walk));
    match walk.verdict {
        // Words left that the walk did not reach: padding must not hide `-c`.
        Step::More => Step::Refuse(Rule::FactsUnavailable),
        // Out of the callback, so the verifier walks the operand's spelling and the module
        // lookups once.
        Step::Allow => {
            // The operand goes into the walk's own buffer, which is done with: a buffer of
            // its own would push this frame and the walk's step past the verifier's
            // 512 bytes of combined stack.
            let (script, _) = walk.buf.split_at_mut(SCRIPT_PREFIX);
            script.fill(0);
            let mut whole = true;
            if let Some(index) = walk.judge.script_index() {
                // argv[1 + index]: the words after argv[0] are counted from 0.
                match read_user_str(sp + 8 * (2 + index as u64), script) {
                    Ok(word) => whole = word.len() < SCRIPT_PREFIX - 1,
                    Err(_) => return Step::Refuse(Rule::FactsUnavailable),
                }
            }
            let Ok(script) = <&[u8; SCRIPT_PREFIX]>::try_from(&*script) else {
                return Step::Refuse(Rule::FactsUnavailable);
            };
            walk.judge.judge_after_words(&KernelModules, script, whole)
        }
        verdict => verdict,
    }
}

/// A dynamic loader exec'd directly: refused when it would run a program, unless the
/// environment puts it in trace mode (`ldd`).
fn judge_loader(sp: u64, argc: i32, envc: i32) -> Option<Rule> {
    let Some(walk) = scratch_walk(sp, argc, LoaderJudge::new()) else {
        return Some(Rule::FactsUnavailable);
    };
    bounded_loop(MAX_ARGS, &mut InScratch(&mut *walk));
    let rule = match walk.verdict {
        Step::Allow => return None,
        Step::Refuse(rule) => rule,
        Step::More => Rule::FactsUnavailable,
    };
    if loader_traced(sp, argc, envc) {
        return None;
    }
    Some(rule)
}

/// State of the search for the loader's trace variable.
struct TraceWalk {
    envp: u64,
    envc: u32,
    found: bool,
}

/// Whether one of the first `MAX_ENV` environment entries sets `LD_TRACE_LOADED_OBJECTS`.
/// An unreadable entry ends the search unfound: the refusal stands.
fn loader_traced(sp: u64, argc: i32, envc: i32) -> bool {
    if envc <= 0 || argc < 0 {
        return false;
    }
    // An all-zero pattern would match every entry: a loader that forgot to set it must
    // not turn every refusal into an allow.
    if gate_setting!(loader_trace.mask[0]) == 0 {
        return false;
    }
    let mut walk = TraceWalk {
        envp: sp + 8 * (1 + argc as u64 + 1),
        envc: envc as u32,
        found: false,
    };
    bounded_loop(MAX_ENV, &mut walk);
    walk.found
}

/// Environment entry `index` of a loader's exec.
impl LoopBody for TraceWalk {
    fn step(&mut self, index: u64) -> ControlFlow<()> {
        if index >= self.envc as u64 {
            return ControlFlow::Break(());
        }
        let Ok(entry) = read_user_words(self.envp + 8 * index) else {
            return ControlFlow::Break(());
        };
        if gate_setting!(loader_trace).matches(&entry) {
            self.found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

fn judge_env(sp: u64, argc: i32, envc: i32) -> Option<Rule> {
    let count = gate_setting!(env_count);
    if count == 0 {
        return None;
    }
    if envc < 0 || envc as u32 > MAX_ENV {
        return Some(Rule::FactsUnavailable);
    }
    let mut walk = EnvWalk {
        envp: sp + 8 * (1 + argc as u64 + 1),
        envc: envc as u32,
        count,
        verdict: None,
    };
    // A bpf_loop: the callback is verified once, whatever the number of entries and names
    // (an open-coded loop is walked once per entry and name).
    bounded_loop(MAX_ENV, &mut walk);
    walk.verdict
}

/// State of the search for a refused environment variable.
struct EnvWalk {
    envp: u64,
    envc: u32,
    count: u32,
    verdict: Option<Rule>,
}

/// Environment entry `index` of an interpreter's exec.
impl LoopBody for EnvWalk {
    fn step(&mut self, index: u64) -> ControlFlow<()> {
        if index >= self.envc as u64 {
            return ControlFlow::Break(());
        }
        let Ok(entry) = read_user_words(self.envp + 8 * index) else {
            self.verdict = Some(Rule::FactsUnavailable);
            return ControlFlow::Break(());
        };
        if env_entry_refused(&KernelEnv { count: self.count }, &entry) {
            self.verdict = Some(Rule::NoCodeEnvironment);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// The judge's view of the gate's refused environment variables.
struct KernelEnv {
    count: u32,
}

impl EnvNames for KernelEnv {
    #[inline(always)]
    fn count(&self) -> u32 {
        self.count
    }
    #[inline(always)]
    fn pattern(&self, k: usize) -> EnvPattern {
        gate_setting!(env[k])
    }
}

/// Kills the current task (unless permissive) and reports why: `hook` refused `rule` for the
/// file `dev`/`ino`.
pub(crate) fn refuse(hook: u32, rule: Rule, flags: u32, ino: u64, dev: u32) {
    let killed = flags & PERMISSIVE == 0;
    if killed {
        // SAFETY: signals the current task, which is the one that exec'd the interpreter.
        unsafe { generated::bpf_send_signal(SIGKILL) };
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let event = GateEvent {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        rule: rule as u32,
        killed: killed as u32,
        ino,
        dev,
        hook,
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // A full ring buffer loses the report, never the kill.
    crate::maps::gate_report(&event);
}
