//! Code made at run time, as guard's Python audit hook (PEP 578) reports it: which audit
//! events guard hears of, the rule each falls under, and the one decision for them.
//!
//! No file-based layer sees `exec(open("data.txt").read())`: the data file is opened as
//! data, and what runs is a string. CPython raises an audit event for it (`compile`, then
//! `exec`), and for the other ways a program turns data into behaviour (`marshal.loads`,
//! a code object built by hand, `ctypes`, `pickle`, starting a program). The hook
//! (`python_hook.py`, installed by `guard python-hook install`) forwards those events to
//! the agent, which decides here and writes the audit trail.

use guard_common::Rule;

use crate::engine::{Verdict, check};
use crate::policy::{DynamicCode, Policy, Profile};

/// An audit event the hook forwards, by what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookEvent {
    /// `compile`, `exec` or `eval` of source (a string, bytes or an AST).
    Compile,
    /// `exec` or `eval` of a code object.
    Exec,
    /// A code object built or rebuilt by hand (`types.CodeType(…)`, `code.replace`).
    CodeNew,
    /// Bytecode read from data (`marshal.loads` outside the import system).
    Unmarshal,
    /// A native library loaded or one of its symbols looked up through `ctypes`.
    NativeLoad,
    /// Memory read or wrapped at an address through `ctypes`.
    NativeMemory,
    /// A class `pickle` looks up while loading data.
    FindClass,
    /// Another audit hook added.
    AddAuditHook,
    /// A program started.
    ProcessLaunch,
}

/// The CPython audit events the hook listens to, with what each is. The hook's own list
/// is made from this one at install, so both sides always agree.
pub const HOOKED_EVENTS: &[(&str, HookEvent)] = &[
    ("compile", HookEvent::Compile),
    ("exec", HookEvent::Exec),
    ("code.__new__", HookEvent::CodeNew),
    ("marshal.loads", HookEvent::Unmarshal),
    ("marshal.load", HookEvent::Unmarshal),
    ("ctypes.dlopen", HookEvent::NativeLoad),
    ("ctypes.dlsym", HookEvent::NativeLoad),
    ("ctypes.dlsym/handle", HookEvent::NativeLoad),
    ("ctypes.string_at", HookEvent::NativeMemory),
    ("ctypes.wstring_at", HookEvent::NativeMemory),
    ("ctypes.cdata", HookEvent::NativeMemory),
    ("ctypes.cdata/buffer", HookEvent::NativeMemory),
    ("pickle.find_class", HookEvent::FindClass),
    ("sys.addaudithook", HookEvent::AddAuditHook),
    ("os.system", HookEvent::ProcessLaunch),
    ("os.exec", HookEvent::ProcessLaunch),
    ("os.posix_spawn", HookEvent::ProcessLaunch),
    ("os.spawn", HookEvent::ProcessLaunch),
    ("subprocess.Popen", HookEvent::ProcessLaunch),
];

impl HookEvent {
    /// The event the hook reported under a CPython event name; `None` for one it should
    /// not have sent.
    pub fn from_name(name: &[u8]) -> Option<HookEvent> {
        HOOKED_EVENTS
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, event)| *event)
    }

    pub fn rule(self) -> Rule {
        match self {
            HookEvent::Compile | HookEvent::Exec | HookEvent::CodeNew | HookEvent::Unmarshal => {
                Rule::DynamicCode
            }
            HookEvent::NativeLoad | HookEvent::NativeMemory => Rule::NativeCall,
            HookEvent::FindClass => Rule::Unpickle,
            HookEvent::AddAuditHook => Rule::AuditHookAdded,
            HookEvent::ProcessLaunch => Rule::ProcessLaunch,
        }
    }

    /// Whether the event makes new code from data: what `dynamic_code = "deny"` refuses.
    /// Running an existing code object (`Exec`) makes none: the code it runs was compiled,
    /// unmarshalled or built by one of the others, each judged when it happened.
    pub fn makes_code(self) -> bool {
        matches!(
            self,
            HookEvent::Compile | HookEvent::CodeNew | HookEvent::Unmarshal
        )
    }
}

/// What the agent does with one reported event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Whether the event gets its own record in the audit trail (a listed caller's dynamic
    /// code is counted, not recorded one by one).
    pub record: bool,
}

impl Decision {
    /// The same answer holds for every later event of this kind by this caller in this
    /// process: the hook need not ask again (it still reports each one it must record).
    pub fn answer(&self) -> u8 {
        if !self.verdict.allow {
            b'd'
        } else if self.record {
            b'r'
        } else {
            b'a'
        }
    }
}

/// Where code was made: the file of the frame that made it, as CPython names it, and the
/// qualified name of that frame's function (its code object's `co_qualname`).
#[derive(Clone, Copy, Debug)]
pub struct Maker<'a> {
    pub file: &'a str,
    pub function: &'a str,
}

impl std::fmt::Display for Maker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.function.is_empty() {
            f.write_str(self.file)
        } else {
            write!(f, "{} ({})", self.file, self.function)
        }
    }
}

/// Whether `maker` is one of the profile's expected dynamic-code callers. A `/` is matched
/// only by a `/`.
pub fn listed_caller(profile: &Profile, maker: Maker<'_>) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    profile.dynamic_code_callers.iter().any(|caller| {
        caller.file.matches_with(maker.file, options)
            && caller
                .function
                .as_deref()
                .is_none_or(|function| function == maker.function)
    })
}

/// Decides one event the hook of an interpreter of `profile` reported, made by code in
/// `caller`.
///
/// A caller's names can be trusted this far: a frame's file and function are its code
/// object's, and making a code object under other names takes a `compile` (or a code
/// object built by hand) by a caller that is not listed, which is refused under `deny`
/// and recorded under `audit`. A file mounted over a listed one's path (a user namespace)
/// keeps its own function names.
pub fn decide(policy: &Policy, profile: &Profile, event: HookEvent, caller: Maker<'_>) -> Decision {
    let rule = event.rule();
    if profile.dynamic_code == DynamicCode::Allow {
        return Decision {
            verdict: Verdict::from_checks(
                policy,
                vec![check(rule, true, "dynamic_code = \"allow\": not audited")],
                rule,
            ),
            record: false,
        };
    }
    if rule != Rule::DynamicCode {
        return Decision {
            verdict: Verdict::from_checks(
                policy,
                vec![check(rule, true, "audited, never refused")],
                rule,
            ),
            record: true,
        };
    }
    if listed_caller(profile, caller) {
        return Decision {
            verdict: Verdict::from_checks(
                policy,
                vec![check(
                    rule,
                    true,
                    format!("{caller} makes code from strings on its own (dynamic_code_callers)"),
                )],
                rule,
            ),
            record: false,
        };
    }
    let checked = if profile.dynamic_code == DynamicCode::Deny && event.makes_code() {
        check(
            rule,
            false,
            format!(
                "dynamic_code = \"deny\": code made at run time by {caller}, which is not one \
                 of the profile's dynamic_code_callers, is refused"
            ),
        )
    } else {
        check(rule, true, "dynamic code: audited")
    };
    Decision {
        verdict: Verdict::from_checks(policy, vec![checked], rule),
        record: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(profile_extra: &str) -> Policy {
        Policy::parse(
            &format!(
                "[[interpreter]]\nname = \"python\"\nexecutables = [\"/usr/bin/python3*\"]\n\
                 {profile_extra}"
            ),
            "test",
            std::path::Path::new("/"),
        )
        .unwrap()
    }

    fn at<'a>(file: &'a str, function: &'a str) -> Maker<'a> {
        Maker { file, function }
    }

    #[test]
    fn every_hooked_event_has_one_meaning() {
        for (name, event) in HOOKED_EVENTS {
            assert_eq!(HookEvent::from_name(name.as_bytes()), Some(*event));
        }
        assert_eq!(HookEvent::from_name(b"open"), None);
        assert_eq!(HookEvent::from_name(b""), None);
    }

    #[test]
    fn audit_records_and_allows_what_deny_refuses() {
        let audit = policy("");
        let p = &audit.interpreters[0];
        let d = decide(
            &audit,
            p,
            HookEvent::Compile,
            at("/srv/app/run.py", "<module>"),
        );
        assert!(d.verdict.allow && d.record);
        assert_eq!(d.verdict.rule, Rule::DynamicCode);

        let deny = policy("dynamic_code = \"deny\"\n");
        let p = &deny.interpreters[0];
        assert!(p.require_audit_hook);
        // What moves the prefix, and so the site directories the hook comes from, is held
        // to the rules: a virtual environment's configuration as code, PYTHONHOME refused.
        assert!(p.code_patterns.iter().any(|c| c.matches("pyvenv.cfg")));
        assert!(p.deny_env.iter().any(|n| n == "PYTHONHOME"));
        let audit_profile = &audit.interpreters[0];
        assert!(
            !audit_profile
                .code_patterns
                .iter()
                .any(|c| c.matches("pyvenv.cfg"))
        );
        assert!(!audit_profile.deny_env.iter().any(|n| n == "PYTHONHOME"));
        for event in [HookEvent::Compile, HookEvent::CodeNew, HookEvent::Unmarshal] {
            let d = decide(&deny, p, event, at("/srv/app/run.py", "main"));
            assert!(!d.verdict.allow && d.record, "{event:?}");
            assert_eq!(d.answer(), b'd');
        }
        // Running existing code, and what is only ever audited, is not refused.
        for event in [
            HookEvent::Exec,
            HookEvent::NativeLoad,
            HookEvent::FindClass,
            HookEvent::ProcessLaunch,
        ] {
            let d = decide(&deny, p, event, at("/srv/app/run.py", "main"));
            assert!(d.verdict.allow && d.record, "{event:?}");
        }
    }

    #[test]
    fn the_stdlib_makers_are_expected_and_not_recorded() {
        let deny = policy("dynamic_code = \"deny\"\n");
        let p = &deny.interpreters[0];
        for (file, function) in [
            ("/usr/lib/python3.11/collections/__init__.py", "namedtuple"),
            ("/usr/lib/python3.13/dataclasses.py", "_create_fn"),
            ("/usr/lib64/python3.9/types.py", "coroutine"),
            ("/usr/lib/python3.11/ast.py", "parse"),
        ] {
            let d = decide(&deny, p, HookEvent::Compile, at(file, function));
            assert!(d.verdict.allow && !d.record, "{file} {function}");
            assert_eq!(d.answer(), b'a');
        }
        for (file, function) in [
            // Another function of a listed file: `class C(Counter): update = exec`.
            (
                "/usr/lib/python3.11/collections/__init__.py",
                "Counter.__init__",
            ),
            // A `*` does not cross a `/`.
            (
                "/usr/lib/python3.11/x/collections/__init__.py",
                "namedtuple",
            ),
            // The stdlib's gadgets: typing evaluates any expression it is handed.
            ("/usr/lib/python3.11/typing.py", "ForwardRef._evaluate"),
            ("/usr/lib/python3.11/timeit.py", "Timer.__init__"),
            ("<string>", "<module>"),
            ("<no frame>", ""),
            ("", ""),
        ] {
            assert!(
                !decide(&deny, p, HookEvent::Compile, at(file, function))
                    .verdict
                    .allow,
                "{file} {function}"
            );
        }
        // A whole file, where the policy says so.
        let whole = policy(
            "dynamic_code = \"deny\"\ndynamic_code_callers = [\"/opt/app/*.py\", \
             { file = \"/opt/lib/t.py\", function = \"T.render\" }]\n",
        );
        let p = &whole.interpreters[0];
        let allowed = |file, function| {
            decide(&whole, p, HookEvent::Compile, at(file, function))
                .verdict
                .allow
        };
        assert!(allowed("/opt/app/x.py", "anything"));
        assert!(allowed("/opt/lib/t.py", "T.render"));
        assert!(!allowed("/opt/lib/t.py", "T.other"));
        assert!(!allowed(
            "/usr/lib/python3.11/collections/__init__.py",
            "namedtuple"
        ));
    }

    /// The embedded default policy spells out the same expected makers the code falls back
    /// to (and the hook refuses by when no agent answers).
    #[test]
    fn the_default_policy_lists_the_default_makers() {
        let policy = Policy::embedded_default().unwrap();
        let listed: Vec<(String, Option<String>)> = policy.interpreters[0]
            .dynamic_code_callers
            .iter()
            .map(|c| (c.file.as_str().to_string(), c.function.clone()))
            .collect();
        let defaults: Vec<(String, Option<String>)> = crate::policy::DEFAULT_DYNAMIC_CODE_CALLERS
            .iter()
            .map(|(file, function)| (file.to_string(), Some(function.to_string())))
            .collect();
        assert_eq!(listed, defaults);
    }

    #[test]
    fn permissive_mode_reports_what_it_would_refuse() {
        let deny = policy("dynamic_code = \"deny\"\n");
        let mut permissive = policy("dynamic_code = \"deny\"\n");
        permissive.mode = crate::policy::Mode::Permissive;
        let p = &deny.interpreters[0];
        let d = decide(&permissive, p, HookEvent::Compile, at("/x.py", "f"));
        assert!(d.verdict.allow && !d.verdict.policy_allows && d.record);
    }

    #[test]
    fn allow_neither_records_nor_requires_the_hook() {
        let allow = policy("dynamic_code = \"allow\"\n");
        let p = &allow.interpreters[0];
        assert!(!p.require_audit_hook);
        let d = decide(&allow, p, HookEvent::Compile, at("/x.py", "f"));
        assert!(d.verdict.allow && !d.record);
        let required = policy("dynamic_code = \"allow\"\nrequire_audit_hook = true\n");
        assert!(required.interpreters[0].require_audit_hook);
    }
}
