//! An interpreter's launch: what its command line and environment ask for, judged by the
//! exec gate's own judges ([`judge_argv`], [`judge_env`]), the very code the kernel runs.
//!
//! Nothing here derives a launch rule: [`judge_at_exec`] is the kernel's verdict itself, and
//! [`decide_launch`] asks the same judge once per rule (that rule's `DENY_*` bit alone) and
//! only words its answers, one [`Check`] each, for `guard explain`. What the kernel cannot
//! see at exec, user space adds on top: whether standard input is a terminal (a bare
//! interpreter or a REPL module there is an interactive console, not code on stdin), and
//! `PYTHONINSPECT` as interactive use.

use guard_common::Rule;
use guard_common::exec_gate::{
    ARG_BUFFER, DENY_DESCRIPTOR_SCRIPT, DENY_INLINE_CODE, DENY_INTERACTIVE, DENY_NO_SITE,
    DENY_STDIN_CODE, EnvPattern, MAX_ARGS, MAX_CLUSTER, MAX_ENV, MODULE_INLINE_CODE,
    MODULE_STDIN_CODE, ModuleKey, ModuleSet, Step, env_entry_refused, env_entry_words, judge_argv,
    judge_env,
};

use crate::engine::{Verdict, check};
use crate::policy::{Permission, Policy, Profile};

/// What an interpreter's launch looks like, for the launch rules.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    /// The interpreter's arguments, without `argv[0]`.
    pub args: Vec<&'a [u8]>,
    /// Names of the environment variables set.
    pub env_names: Vec<String>,
    /// Whether standard input is a terminal; `None` when unknown (the kernel exec gate).
    pub stdin_is_terminal: Option<bool>,
}

/// A profile's interpreter modules, as the exec gate's module map holds them: the engine
/// and the kernel match `-m` operands with the same [`guard_common::exec_gate::module_kinds`].
pub struct ProfileModules<'a>(pub &'a Profile);

impl ModuleSet for ProfileModules<'_> {
    fn kinds(&self, key: &ModuleKey) -> u32 {
        let listed = |names: &[String]| {
            names
                .iter()
                .any(|n| ModuleKey::new(n.as_bytes()).as_ref() == Some(key))
        };
        let mut kinds = 0;
        if listed(&self.0.inline_code_modules) {
            kinds |= MODULE_INLINE_CODE;
        }
        if listed(&self.0.stdin_code_modules) {
            kinds |= MODULE_STDIN_CODE;
        }
        kinds
    }
}

/// The exec gate's `DENY_*` flags for this profile alone (the agent's gate serves every
/// profile with their union: `agent::exec_gate::gate_config`).
pub fn gate_flags(profile: &Profile) -> u32 {
    let mut flags = DENY_DESCRIPTOR_SCRIPT;
    for (permission, bit) in [
        (profile.inline_code, DENY_INLINE_CODE),
        (profile.stdin, DENY_STDIN_CODE),
        (profile.interactive, DENY_INTERACTIVE),
    ] {
        if permission == Permission::Deny {
            flags |= bit;
        }
    }
    if profile.require_audit_hook {
        flags |= DENY_NO_SITE;
    }
    flags
}

/// The profile's refused environment variables, as the gate's settings hold them (a name
/// the gate cannot match is a policy error, `Policy::parse`).
fn env_patterns(profile: &Profile) -> Vec<EnvPattern> {
    profile
        .deny_env
        .iter()
        .filter_map(|name| EnvPattern::new(name.as_bytes()))
        .collect()
}

/// What the kernel exec gate decides for this profile's command line (without `argv[0]`),
/// with the kernel's own judge and limits: the rule it kills with, or `None`.
pub fn judge_at_exec<'a, I>(profile: &Profile, args: I) -> Option<Rule>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    match judge_argv(
        profile.argv.dialect(),
        gate_flags(profile),
        &ProfileModules(profile),
        args,
    ) {
        Step::Refuse(rule) => Some(rule),
        Step::Allow | Step::More => None,
    }
}

/// How each interpreter spells what a launch rule refuses, for the reasons.
struct Spelling {
    inline_code: &'static str,
    interactive: &'static str,
    /// The options the grammar refuses unread, and why.
    unread: &'static str,
}

impl Spelling {
    fn of(dialect: guard_common::argv::Dialect) -> Spelling {
        use guard_common::argv::Dialect;
        let (inline_code, interactive, unread) = match dialect {
            Dialect::Python => ("-c", "-i", "an option guard does not read"),
            Dialect::Perl => (
                "-e, -E, or code in -M, -d:, -F",
                "the debugger, -d",
                "-S NAME (perl runs the NAME it finds on PATH, which a descriptor may be)",
            ),
            Dialect::Ruby => (
                "-e",
                "the debug gem's console, -r debug/…",
                "an option whose value or effect guard does not read",
            ),
            Dialect::Node => (
                "-e, -p, --import data:",
                "-i, the inspector",
                "an option guard does not read: --title (node writes it over the command line \
                 the agent reads), a snapshot blob, a configuration naming a script, an ES \
                 module specifier the URL parser rewrites, an option of another node version",
            ),
        };
        Spelling {
            inline_code,
            interactive,
            unread,
        }
    }
}

/// Decides an interpreter launch: `-c`, stdin, interactive use, environment, script operand,
/// and `-m` of a module that is an interpreter itself (the profile's `inline_code_modules`
/// count as `-c`, its `stdin_code_modules` as a bare interpreter reading stdin), each by the
/// exec gate's judge with that rule alone; a command line past what the gate reads is
/// refused unread, as the gate refuses it.
pub fn decide_launch(policy: &Policy, profile: &Profile, launch: &Launch<'_>) -> Verdict {
    let modules = ProfileModules(profile);
    let judge = |flags: u32| {
        judge_argv(
            profile.argv.dialect(),
            flags,
            &modules,
            launch.args.iter().copied(),
        )
    };
    // Whether the command line asks for what `rule` refuses: the judge refuses it with
    // that rule's bit alone.
    let asks = |bit: u32, rule: Rule| judge(bit) == Step::Refuse(rule);
    // What the command line is, for the reasons only (the judge reads it with the same
    // dialect's grammar).
    let invocation = guard_common::argv::parse(profile.argv.dialect(), launch.args.iter().copied());
    let module = String::from_utf8_lossy(invocation.module.unwrap_or_default());
    let spelling = Spelling::of(profile.argv.dialect());
    let mut checks = Vec::with_capacity(5);

    // Where the gate stops reading is the same whatever it refuses: then nothing else is
    // judged.
    if judge(gate_flags(profile)) == Step::Refuse(Rule::FactsUnavailable) {
        let why = if invocation.unread {
            format!("{}: refused unread", spelling.unread)
        } else {
            format!(
                "the exec gate reads {MAX_ARGS} words after argv[0], {MAX_CLUSTER} letters of \
                 an option cluster and {} bytes of an option word: this command line goes past \
                 that and is refused unread",
                ARG_BUFFER - 1
            )
        };
        checks.push(check(Rule::FactsUnavailable, false, why));
        return Verdict::from_checks(policy, checks, Rule::NotCode);
    }

    if profile.inline_code == Permission::Deny {
        checks.push(if !asks(DENY_INLINE_CODE, Rule::NoInlineCode) {
            check(Rule::NoInlineCode, true, "no inline code")
        } else if invocation.inline_code {
            check(
                Rule::NoInlineCode,
                false,
                format!("inline code ({}) is refused", spelling.inline_code),
            )
        } else {
            check(
                Rule::NoInlineCode,
                false,
                format!(
                    "-m {module} runs Python from its command line or a file it reads as data \
                     (inline_code_modules): refused like -c"
                ),
            )
        });
    }

    let reads_stdin = asks(DENY_STDIN_CODE, Rule::NoStdinCode);
    // With `-m` the program is the module: what reads stdin is its `__main__`.
    let module_stdin = reads_stdin && invocation.module.is_some();
    let terminal = launch.stdin_is_terminal;
    if profile.stdin == Permission::Deny {
        // Unknown terminal-ness counts as code on stdin unless interactive use is allowed.
        let stdin_code = reads_stdin
            && match terminal {
                Some(tty) => !tty,
                None => profile.interactive == Permission::Deny || invocation.script.is_some(),
            };
        checks.push(if stdin_code && module_stdin {
            check(
                Rule::NoStdinCode,
                false,
                format!(
                    "-m {module} reads Python from standard input (stdin_code_modules): \
                     refused like code on stdin"
                ),
            )
        } else if stdin_code {
            check(
                Rule::NoStdinCode,
                false,
                "code from standard input is refused",
            )
        } else {
            check(Rule::NoStdinCode, true, "no code from standard input")
        });
    }

    if profile.interactive == Permission::Deny {
        let inspect_env = launch.env_names.iter().any(|n| n == "PYTHONINSPECT");
        let console = reads_stdin && invocation.script.is_none() && terminal != Some(false);
        let reason = if asks(DENY_INTERACTIVE, Rule::NoInteractive) {
            Some(format!(
                "interactive use ({}) is refused",
                spelling.interactive
            ))
        } else if inspect_env {
            Some("interactive inspection (PYTHONINSPECT) is refused".to_string())
        } else if console && module_stdin {
            Some(format!(
                "-m {module} is an interactive console (stdin_code_modules): refused"
            ))
        } else if console {
            Some("an interactive console is refused".to_string())
        } else {
            None
        };
        checks.push(match reason {
            Some(reason) => check(Rule::NoInteractive, false, reason),
            None => check(Rule::NoInteractive, true, "not interactive"),
        });
    }

    if profile.require_audit_hook {
        checks.push(if asks(DENY_NO_SITE, Rule::AuditHookRequired) {
            check(
                Rule::AuditHookRequired,
                false,
                "-S starts without site, so without the audit hook this profile requires (dynamic_code = \"deny\" or require_audit_hook): refused",
            )
        } else {
            check(
                Rule::AuditHookRequired,
                true,
                "starts with site, which loads the audit hook",
            )
        });
    }

    // The environment as the kernel reads it: `NAME=` entries (the values do not matter).
    let patterns = env_patterns(profile);
    let entries: Vec<Vec<u8>> = launch
        .env_names
        .iter()
        .map(|name| format!("{name}=").into_bytes())
        .collect();
    checks.push(
        match judge_env(&patterns[..], entries.iter().map(Vec::as_slice)) {
            Step::Refuse(Rule::FactsUnavailable) => check(
                Rule::FactsUnavailable,
                false,
                format!(
                    "more than {MAX_ENV} environment variables: the exec gate refuses them unread"
                ),
            ),
            Step::Refuse(rule) => {
                let refused: Vec<&str> = launch
                    .env_names
                    .iter()
                    .zip(&entries)
                    .filter(|(_, entry)| env_entry_refused(&patterns[..], &env_entry_words(entry)))
                    .map(|(name, _)| name.as_str())
                    .collect();
                check(
                    rule,
                    false,
                    format!("refused environment variable(s): {}", refused.join(", ")),
                )
            }
            Step::Allow | Step::More => check(
                Rule::NoCodeEnvironment,
                true,
                "no refused environment variable",
            ),
        },
    );

    let script = invocation.script.unwrap_or_default();
    let operand = String::from_utf8_lossy(script);
    checks.push(if !asks(DENY_DESCRIPTOR_SCRIPT, Rule::ScriptIsFile) {
        check(Rule::ScriptIsFile, true, "the script operand is a path")
    } else if invocation.script_is_descriptor_link() {
        check(
            Rule::ScriptIsFile,
            false,
            format!("the script operand {operand:?} names a file descriptor, not a file"),
        )
    } else if invocation.script_is_device() {
        check(
            Rule::ScriptIsFile,
            false,
            format!(
                "the script operand {operand:?} names a device (a terminal reads what is typed: \
                 an interactive console in all but name), not a file"
            ),
        )
    } else {
        check(
            Rule::ScriptIsFile,
            false,
            format!(
                "the script operand {operand:?} goes past what the exec gate reads of it, \
                 and what it read could name a file descriptor or a device"
            ),
        )
    });
    Verdict::from_checks(policy, checks, Rule::NotCode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::{default_policy, policy};

    fn launch(args: &'static [&'static str], env: &[&str], tty: Option<bool>) -> Verdict {
        let policy = default_policy();
        let launch = Launch {
            args: args.iter().map(|a| a.as_bytes()).collect(),
            env_names: env.iter().map(|s| s.to_string()).collect(),
            stdin_is_terminal: tty,
        };
        decide_launch(&policy, &policy.interpreters[0], &launch)
    }

    #[test]
    fn launches() {
        assert!(launch(&["s.py", "-c", "x"], &[], Some(false)).allow);
        assert!(launch(&["-m", "json.tool"], &[], None).allow);
        let v = launch(&["-Ic", "x"], &[], None);
        assert_eq!((v.allow, v.rule), (false, Rule::NoInlineCode));
        let v = launch(&[], &[], Some(false));
        assert_eq!((v.allow, v.rule), (false, Rule::NoStdinCode));
        let v = launch(&["-"], &[], None);
        assert_eq!((v.allow, v.rule), (false, Rule::NoStdinCode));
        let v = launch(&[], &[], Some(true));
        assert_eq!((v.allow, v.rule), (false, Rule::NoInteractive));
        let v = launch(&["-i", "s.py"], &[], Some(true));
        assert_eq!((v.allow, v.rule), (false, Rule::NoInteractive));
        let v = launch(&["s.py"], &["PYTHONINSPECT"], Some(true));
        assert!(!v.allow);
        let v = launch(&["s.py"], &["PYTHONSTARTUP", "HOME"], Some(true));
        assert_eq!((v.allow, v.rule), (false, Rule::NoCodeEnvironment));
        assert!(v.reason().contains("PYTHONSTARTUP"));
        let v = launch(&["/dev/fd/63"], &[], None);
        assert_eq!((v.allow, v.rule), (false, Rule::ScriptIsFile));
    }

    #[test]
    fn interpreter_modules_are_refused_as_what_they_amount_to() {
        for args in [
            &["-m", "timeit", "-n", "1", "-s", "CODE", "pass"][..],
            &["-mtimeit", "-s", "CODE"],
            &["-m", "pdb", "-c", "CODE", "ok.py"],
            &["-m", "doctest", "notes.txt"],
            &["-m", "pickle", "data.pkl"],
            &["-m", "pydoc", "./x.txt"],
            &["-m", "cProfile", "x.txt"],
            &["-I", "-m", "runpy", "code"],
            &["-m", "idlelib.idle"],
        ] {
            let v = launch(args, &[], None);
            assert_eq!((v.allow, v.rule), (false, Rule::NoInlineCode), "{args:?}");
            assert!(v.reason().contains("refused like -c"), "{}", v.reason());
        }
        for args in [
            &["-m", "code"][..],
            &["-mcode"],
            &["-E", "-X", "dev", "-m", "code"],
            &["-m", "asyncio"],
            &["-m", "asyncio.__main__"],
        ] {
            let v = launch(args, &[], None);
            assert_eq!((v.allow, v.rule), (false, Rule::NoStdinCode), "{args:?}");
            assert!(v.reason().contains("stdin_code_modules"), "{}", v.reason());
            let v = launch(args, &[], Some(false));
            assert_eq!((v.allow, v.rule), (false, Rule::NoStdinCode), "{args:?}");
            // On a terminal, a REPL is an interactive console.
            let v = launch(args, &[], Some(true));
            assert_eq!((v.allow, v.rule), (false, Rule::NoInteractive), "{args:?}");
            assert!(v.reason().contains("interactive console"), "{}", v.reason());
        }
        for args in [
            &["-m", "json.tool", "f.json"][..],
            &["-m", "this"],
            &["-m", "codecs"],
            &["-m", "unittest"],
            &["ok.py", "-m", "code"],
        ] {
            assert!(launch(args, &[], None).allow, "{args:?}");
        }
    }

    #[test]
    fn module_lists_follow_the_policy() {
        let text = "[[interpreter]]\nname = \"p\"\nexecutables = []\n";
        // Absent lists are the defaults; empty lists allow; a listed name refuses.
        let absent = policy(text);
        let cleared = policy(&format!(
            "{text}inline_code_modules = []\nstdin_code_modules = []\n"
        ));
        let own = policy(&format!(
            "{text}inline_code_modules = [\"json.tool\"]\nstdin_code_modules = []\n"
        ));
        let allowed = policy(&format!("{text}inline_code = \"allow\"\n"));
        let decide = |policy: &Policy, args: &'static [&'static str]| {
            let launch = Launch {
                args: args.iter().map(|a| a.as_bytes()).collect(),
                env_names: vec![],
                stdin_is_terminal: None,
            };
            let verdict = decide_launch(policy, &policy.interpreters[0], &launch);
            let gate = judge_at_exec(&policy.interpreters[0], args.iter().map(|a| a.as_bytes()));
            (!verdict.allow, gate)
        };
        assert_eq!(
            decide(&absent, &["-m", "timeit"]),
            (true, Some(Rule::NoInlineCode))
        );
        assert_eq!(decide(&cleared, &["-m", "timeit"]), (false, None));
        assert_eq!(decide(&cleared, &["-m", "code"]), (false, None));
        assert_eq!(
            decide(&own, &["-m", "json.tool"]),
            (true, Some(Rule::NoInlineCode))
        );
        assert_eq!(decide(&own, &["-m", "json"]), (false, None));
        assert_eq!(decide(&allowed, &["-m", "timeit"]), (false, None));
        assert_eq!(
            decide(&allowed, &["-m", "code"]),
            (true, Some(Rule::NoStdinCode))
        );
        assert_eq!(
            absent.interpreters[0].inline_code_modules,
            crate::policy::DEFAULT_INLINE_CODE_MODULES
        );
    }

    /// `guard explain` (the engine, stdin unknown, no environment) and the kernel's judge
    /// refuse the same command lines, for the same rule where one thing is wrong.
    #[test]
    fn the_engine_and_the_exec_gate_agree() {
        let policy = Policy::embedded_default().unwrap();
        let profile = &policy.interpreters[0];
        let cases: &[&[&str]] = &[
            &["-m", "timeit", "-s", "x", "pass"],
            &["-mtimeit"],
            &["-m", "pdb", "-c", "x", "ok.py"],
            &["-m", "code"],
            &["-I", "-m", "code"],
            &["-Im", "code"],
            &["-E", "-X", "dev", "-m", "code"],
            &["-m", "asyncio.__main__"],
            &["-m", "idlelib"],
            &["-m", "idlelib.idle"],
            &["-m", "runpy", "code"],
            &["-m", "profile", "x.txt"],
            &["-m", "cProfile", "-m", "code"],
            &["-m", "trace", "--trace", "x.txt"],
            &["-m", "doctest", "x.txt"],
            &["-m", "pickle", "x.pkl"],
            &["-m", "pydoc", "./x.txt"],
            &["-m", "json.tool"],
            &["-m", "this"],
            &["-m", "codeop"],
            &["-m", "pdbx"],
            &["-m", "unittest"],
            &["-m", "sqlite3"],
            &["-X", "code", "ok.py"],
            &["ok.py", "-m", "code"],
            &["-c", "x"],
            &["-"],
            &["/dev/fd/3"],
            &["ok.py"],
        ];
        for args in cases {
            let launch = Launch {
                args: args.iter().map(|a| a.as_bytes()).collect(),
                env_names: vec![],
                stdin_is_terminal: None,
            };
            let verdict = decide_launch(&policy, profile, &launch);
            let gate = judge_at_exec(profile, args.iter().map(|a| a.as_bytes()));
            let engine = (!verdict.allow).then_some(verdict.rule);
            assert_eq!(engine, gate, "{args:?}: {}", verdict.reason());
        }
    }

    /// What the gate cannot read it refuses unread; so does the engine, with the gate's
    /// rule and nothing else judged.
    #[test]
    fn past_what_the_gate_reads_is_refused_unread() {
        let mut padded = vec!["-E"; 40];
        padded.push("s.py");
        let long_cluster = format!("-{}c", "E".repeat(20));
        let long_option = format!("-{}", "E".repeat(200));
        let cases: [Vec<&str>; 3] = [
            padded,
            vec![long_cluster.as_str(), "x"],
            vec![long_option.as_str(), "s.py"],
        ];
        let policy = default_policy();
        let profile = &policy.interpreters[0];
        for args in &cases {
            let launch = Launch {
                args: args.iter().map(|a| a.as_bytes()).collect(),
                env_names: vec![],
                stdin_is_terminal: Some(false),
            };
            let verdict = decide_launch(&policy, profile, &launch);
            assert_eq!(
                (verdict.allow, verdict.rule, verdict.checks.len()),
                (false, Rule::FactsUnavailable, 1),
                "{args:?}"
            );
            assert_eq!(
                judge_at_exec(profile, args.iter().map(|a| a.as_bytes())),
                Some(Rule::FactsUnavailable)
            );
        }
        // At the limit, still read.
        let mut words = vec!["-E"; MAX_ARGS as usize - 1];
        words.push("s.py");
        let launch = Launch {
            args: words.iter().map(|a| a.as_bytes()).collect(),
            env_names: vec![],
            stdin_is_terminal: Some(false),
        };
        assert!(decide_launch(&policy, profile, &launch).allow);
    }

    /// The environment as the gate judges it: every refused name listed, a longer
    /// environment than the gate reads refused unread.
    #[test]
    fn environments_are_judged_as_the_gate_does() {
        let policy = default_policy();
        let profile = &policy.interpreters[0];
        let decide = |env: Vec<String>| {
            decide_launch(
                &policy,
                profile,
                &Launch {
                    args: vec![b"s.py".as_slice()],
                    env_names: env,
                    stdin_is_terminal: Some(false),
                },
            )
        };
        let v = decide(
            ["PYTHONSTARTUP", "HOME", "PYTHONINSPECT", "PYTHONSTARTUPX"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(v.rule, Rule::NoInteractive);
        let env = v
            .checks
            .iter()
            .find(|c| c.rule == Rule::NoCodeEnvironment)
            .unwrap();
        assert!(!env.passed);
        assert_eq!(
            env.reason,
            "refused environment variable(s): PYTHONSTARTUP, PYTHONINSPECT"
        );
        let many: Vec<String> = (0..=MAX_ENV).map(|i| format!("V{i}")).collect();
        let v = decide(many.clone());
        assert_eq!((v.allow, v.rule), (false, Rule::FactsUnavailable));
        assert!(decide(many[1..].to_vec()).allow);
    }

    /// With what the kernel sees at exec (stdin not a terminal, no environment), the
    /// engine refuses exactly what the gate kills, for every profile's permissions: both are
    /// the same judge.
    #[test]
    fn the_engine_refuses_what_the_gate_kills() {
        let words = [
            "-c",
            "x",
            "-",
            "-i",
            "-I",
            "-m",
            "code",
            "timeit",
            "json.tool",
            "s.py",
            "/dev/fd/3",
            "/dev/tty",
            "/dev/shm/x.py",
            "--",
            "-E-",
            "-W",
            "-Ic",
            "-i-",
        ];
        let mut argvs: Vec<Vec<&str>> = vec![vec![]];
        for a in words {
            argvs.push(vec![a]);
            for b in words {
                argvs.push(vec![a, b]);
                for c in words {
                    argvs.push(vec![a, b, c]);
                }
            }
        }
        let permission = |deny: bool| if deny { "deny" } else { "allow" };
        for bits in 0..8 {
            let policy = policy(&format!(
                "[[interpreter]]\nname = \"p\"\nexecutables = []\ninline_code = \"{}\"\n\
                 stdin = \"{}\"\ninteractive = \"{}\"\n",
                permission(bits & 1 != 0),
                permission(bits & 2 != 0),
                permission(bits & 4 != 0),
            ));
            let profile = &policy.interpreters[0];
            for args in &argvs {
                let launch = Launch {
                    args: args.iter().map(|a| a.as_bytes()).collect(),
                    env_names: vec![],
                    stdin_is_terminal: Some(false),
                };
                let verdict = decide_launch(&policy, profile, &launch);
                let gate = judge_at_exec(profile, launch.args.iter().copied());
                assert_eq!(
                    verdict.allow,
                    gate.is_none(),
                    "{bits:03b} {args:?}: {gate:?} {}",
                    verdict.reason()
                );
            }
        }
    }
}
