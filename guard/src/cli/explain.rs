//! `guard explain PATH`: the engine's reasoning on a real file, check by check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use guard::engine::{CodeKind, Subject};
use guard::facts;

use super::PolicyArgs;

#[derive(Args)]
pub struct ExplainArgs {
    /// The file to explain, as the interpreter's main script (code whatever its name).
    pub path: PathBuf,
    /// Judge as this user would run it (name or uid); the caller by default.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Judge for this interpreter executable; the policy's first interpreter by default.
    #[arg(long, value_name = "EXE")]
    pub interpreter: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
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
    let subject = Subject {
        uid,
        gids,
        profile: Some(profile),
    };

    let file = facts::open_for_inspection(&args.path)
        .with_context(|| format!("{}: cannot open", args.path.display()))?;
    let (object, verdict, _) =
        facts::decide_file(&policy, &subject, &file, CodeKind::MainScript, None, None)
            .with_context(|| format!("{}: cannot read its facts", args.path.display()))?;

    println!("file:        {}", args.path.display());
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
        subject.uid, policy.interpreters[profile].name
    );
    println!("policy:      {} ({})", policy.origin, policy.mode);
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
    println!(
        "verdict:     {decision} by rule {}: {}{enforced}",
        verdict.rule.id(),
        verdict.reason()
    );
    Ok(if verdict.policy_allows {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
