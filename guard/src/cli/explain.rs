//! `guard explain PATH`: the engine's reasoning on a real file, check by check.
//! `guard explain -- ARG...`: the same for an interpreter's command line.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use guard::engine::{CodeKind, Runner};
use guard::facts;
use guard::launch::Launch;

use super::PolicyArgs;

#[derive(Args)]
#[command(
    override_usage = "guard explain [OPTIONS] <PATH>\n       guard explain [OPTIONS] -- <ARG>..."
)]
pub(crate) struct ExplainArgs {
    /// The file to explain, as the interpreter's main script (code whatever its name).
    #[arg(required_unless_present = "argv", conflicts_with = "argv")]
    pub path: Option<PathBuf>,
    /// Explain a launch instead: the interpreter's arguments (without argv[0]) after `--`,
    /// judged from the command line alone (no environment, standard input not a terminal
    /// nor known to be one), with the kernel exec gate's verdict beside the engine's.
    #[arg(last = true, value_name = "ARG")]
    pub argv: Vec<OsString>,
    /// Judge as this user would run it (name or uid); the caller by default.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Judge for this interpreter executable; the policy's first interpreter by default.
    #[arg(long, value_name = "EXE")]
    pub interpreter: Option<PathBuf>,
    /// Explain what the audit hook's agent decides for this CPython audit event (`compile`,
    /// `exec`, `marshal.loads`, `ctypes.dlopen`, …) made by code in the file PATH (named
    /// as CPython names the calling frame's file; it need not exist).
    #[arg(long, value_name = "EVENT", conflicts_with = "argv")]
    pub dynamic_code: Option<String>,
    /// With --dynamic-code: the qualified name of the function in PATH that made it
    /// (`namedtuple`, `Template.render`).
    #[arg(
        long,
        value_name = "NAME",
        requires = "dynamic_code",
        default_value = ""
    )]
    pub function: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub(super) fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.load()?;
    let (uid, gids) = match &args.user {
        Some(user) => facts::user_credentials(user).map_err(anyhow::Error::msg)?,
        None => {
            let uid = nix::unistd::geteuid().as_raw();
            let mut gids: Vec<u32> = nix::unistd::getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default();
            gids.push(nix::unistd::getegid().as_raw());
            (uid, gids)
        }
    };

    let profile = match &args.interpreter {
        Some(exe) => {
            let meta = std::fs::metadata(exe).with_context(|| format!("{}", exe.display()))?;
            use std::os::unix::fs::MetadataExt;
            let id = guard::engine::FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            let interpreters = facts::resolve_interpreters(&policy);
            match facts::profile_of_executable(&interpreters, id) {
                Some(index) => index,
                // A copy of an interpreter, any other program: no interpreter rule applies
                // to its command line, only the native-code rule to the program.
                None if args.path.is_none() => return explain_program(&policy, exe),
                None => bail!(
                    "{}: not an interpreter any profile of the policy names",
                    exe.display()
                ),
            }
        }
        None => {
            if policy.interpreters.is_empty() {
                bail!("{}: the policy has no interpreter profile", policy.origin);
            }
            0
        }
    };
    let runner = Runner { uid, gids };

    if let Some(event) = &args.dynamic_code {
        let caller = args.path.as_deref().unwrap_or(std::path::Path::new(""));
        return explain_dynamic_code(&policy, profile, event, caller, &args.function);
    }

    let Some(path) = &args.path else {
        let program = match &args.interpreter {
            Some(exe) => Some(exe.clone()),
            None => policy.interpreters[profile]
                .executables
                .iter()
                .filter_map(|pattern| glob::glob(pattern).ok())
                .flatten()
                .flatten()
                .next(),
        };
        return explain_launch(&policy, profile, &runner, &args.argv, program.as_deref());
    };
    let file = facts::open_for_inspection(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    // As the main script: the file of an interpreter module is that module.
    let modules = guard::modules::ModuleFiles::resolve(&policy);
    let main_module = {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .with_context(|| format!("{}: cannot read its facts", path.display()))?;
        let id = guard::engine::FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        // A package directory runs its `__main__`.
        let package_main = || {
            let inner = std::fs::metadata(path.join("__main__.py")).ok()?;
            let inner = guard::engine::FileId {
                dev: inner.dev(),
                ino: inner.ino(),
            };
            modules.main_module(inner, Some(id))
        };
        match modules.main_module(id, Some(id)) {
            Some(module) => Some(module),
            None if meta.is_dir() => package_main(),
            None => None,
        }
    };
    let mut object = facts::object_of(&file, CodeKind::MainScript)
        .with_context(|| format!("{}: cannot read its facts", path.display()))?;
    object.module_file = main_module.is_some();
    object.main_module = main_module.map(str::to_string);
    let (verdict, _) = facts::decide_file(
        &policy,
        profile,
        &file,
        &object,
        || Ok(runner.clone()),
        None,
    );

    println!("file:        {}", path.display());
    println!("identity:    {} ({})", object.id, object.kind.describe());
    println!(
        "owner:       uid {} gid {}, mode {:04o}, {} bytes",
        object.uid,
        object.gid,
        object.mode & 0o7777,
        object.size
    );
    println!(
        "runner:      uid {} as {}",
        runner.uid, policy.interpreters[profile].name
    );
    if let Some(module) = &object.main_module {
        println!("module:      {module} (the file of an interpreter module)");
    }
    println!("policy:      {} ({})", policy.origin, policy.mode);
    // Not part of the verdict (that is the file as a script): what the kernel layer would
    // say to it run or mapped as native code, by any process.
    println!("native:      {}", native_verdict(&policy, &object));
    print_verdict(&verdict)
}

/// A command line whose program no profile names: the native-code rule alone decides.
fn explain_program(
    policy: &guard::policy::Policy,
    program: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let object = program_facts(program)?;
    println!(
        "program:     {}: not an interpreter any profile names",
        program.display()
    );
    println!("identity:    {} ({})", object.id, object.kind.describe());
    println!(
        "owner:       uid {} gid {}, mode {:04o}",
        object.uid,
        object.gid,
        object.mode & 0o7777
    );
    println!("policy:      {} ({})", policy.origin, policy.mode);
    println!("native:      {}", native_verdict(policy, &object));
    let refused = guard::engine::decide_native(policy, &object).is_some();
    println!(
        "verdict:     {}",
        if refused {
            "DENY: the program does not run"
        } else {
            "ALLOW: only the native-code rule applies to it"
        }
    );
    Ok(if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A program's facts, from its descriptor, as the native-code rule reads them.
fn program_facts(program: &std::path::Path) -> anyhow::Result<guard::engine::Object> {
    let file = facts::open_for_inspection(program)
        .with_context(|| format!("{}: cannot open", program.display()))?;
    facts::object_of(&file, CodeKind::NotCode)
        .with_context(|| format!("{}: cannot read its facts", program.display()))
}

/// `[native] code` for `object` as a program or library, by the kernel's own judge.
fn native_verdict(policy: &guard::policy::Policy, object: &guard::engine::Object) -> String {
    match (
        policy.native.code,
        guard::engine::decide_native(policy, object),
    ) {
        (guard::policy::NativeCode::Any, _) => {
            "[native] code = \"any\": not judged as a program or library".into()
        }
        (code, None) => format!("[native] code = \"{code}\": may run as a program or library"),
        (code, Some(rule)) => format!(
            "[native] code = \"{code}\": refused as a program or library by rule {}",
            rule.id()
        ),
    }
}

/// A launch, by the engine and by the exec gate's own judge; `program` is the interpreter
/// executable, judged as native code too.
fn explain_launch(
    policy: &guard::policy::Policy,
    profile: usize,
    runner: &Runner,
    argv: &[OsString],
    program: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let words: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
    let launch = Launch {
        args: words.clone(),
        env_names: Vec::new(),
        stdin_is_terminal: None,
    };
    let profile = &policy.interpreters[profile];
    let verdict = guard::launch::decide_launch(policy, profile, &launch);
    let gate = guard::launch::judge_at_exec(profile, words.iter().copied());
    let shown: Vec<String> = argv
        .iter()
        .map(|a| format!("{:?}", a.to_string_lossy()))
        .collect();
    println!(
        "launch:      <{} interpreter> {}",
        profile.name,
        shown.join(" ")
    );
    println!("runner:      uid {} as {}", runner.uid, profile.name);
    println!("policy:      {} ({})", policy.origin, policy.mode);
    match gate {
        Some(rule) => println!("exec gate:   kill by rule {}", rule.id()),
        None => println!("exec gate:   allow"),
    }
    // The program itself, as the native-code rule sees it at exec.
    match program {
        Some(program) => {
            let object = program_facts(program)?;
            println!(
                "program:     {}: {}",
                program.display(),
                native_verdict(policy, &object)
            );
        }
        None => println!("program:     none of the profile's executables exists"),
    }
    print_verdict(&verdict)
}

fn explain_dynamic_code(
    policy: &guard::policy::Policy,
    profile: usize,
    event: &str,
    caller: &std::path::Path,
    function: &str,
) -> anyhow::Result<ExitCode> {
    use guard::dynamic_code::{HOOKED_EVENTS, HookEvent, decide};
    let Some(hooked) = HookEvent::from_name(event.as_bytes()) else {
        let names: Vec<&str> = HOOKED_EVENTS.iter().map(|(name, _)| *name).collect();
        bail!(
            "{event:?} is not an audit event guard's hook reports; it reports {}",
            names.join(", ")
        );
    };
    let profile = &policy.interpreters[profile];
    let file = caller.to_string_lossy();
    let maker = guard::dynamic_code::Maker {
        file: &file,
        function,
    };
    let decision = decide(policy, profile, hooked, maker);
    println!("event:       {event} made by code in {maker}");
    println!(
        "profile:     {} (dynamic_code = \"{}\", the hook {})",
        profile.name,
        profile.dynamic_code,
        if profile.require_audit_hook {
            "required at start-up"
        } else {
            "not required"
        }
    );
    println!("policy:      {} ({})", policy.origin, policy.mode);
    println!(
        "trail:       {}",
        if decision.record {
            "recorded one by one (within the budgets)"
        } else {
            "counted in guard status, not recorded one by one"
        }
    );
    print_verdict(&decision.verdict)
}

fn print_verdict(verdict: &guard::engine::Verdict) -> anyhow::Result<ExitCode> {
    for check in &verdict.checks {
        let mark = if check.passed { "pass" } else { "FAIL" };
        println!("  [{mark}] {:<24} {}", check.rule.id(), check.reason);
    }
    let decision = if verdict.policy_allows {
        "ALLOW"
    } else {
        "DENY"
    };
    let enforced = if verdict.enforced {
        ""
    } else {
        " (permissive: not enforced)"
    };
    let reason = match verdict.reason() {
        "" => "every check passed",
        reason => reason,
    };
    println!(
        "verdict:     {decision} by rule {}: {reason}{enforced}",
        verdict.rule.id(),
    );
    Ok(if verdict.policy_allows {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
