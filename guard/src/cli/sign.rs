//! `guard sign`: writes IMA v2 signatures, as `evmctl ima_sign` does.

use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use guard::digest::{HashAlgo, digest_reader};
use guard::ima::XATTR_NAME;
use guard::keys::Signer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use walkdir::WalkDir;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Private key: PEM PKCS#8, "RSA PRIVATE KEY" or "EC PRIVATE KEY".
    #[arg(long, value_name = "KEY", required_unless_present = "list")]
    key: Option<PathBuf>,
    /// Certificate whose Subject Key Identifier gives the key id (default: from the key).
    #[arg(long, value_name = "CERT")]
    cert: Option<PathBuf>,
    /// Digest the signature covers.
    #[arg(long, value_name = "ALGO", default_value = "sha256",
          value_parser = clap::builder::PossibleValuesParser::new(["sha256", "sha384", "sha512"]))]
    hash: String,
    /// Sign the regular files under directories. Symbolic links are never followed.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Sign everything this interpreter runs: every directory on its module path (stdlib,
    /// lib-dynload, site- and dist-packages, with their __pycache__) and every shared library
    /// it or its extension modules load (per ldd). Run it before enforcing.
    #[arg(long, value_name = "EXE")]
    python: Vec<PathBuf>,
    /// Sign everything this Perl runs: every directory of its @INC (with the XS objects
    /// under `auto/`) and the shared libraries they and the interpreter load.
    #[arg(long, value_name = "EXE")]
    perl: Vec<PathBuf>,
    /// Sign everything this Ruby runs: its $LOAD_PATH and gem directories (with their
    /// extension objects) and the shared libraries they and the interpreter load.
    #[arg(long, value_name = "EXE")]
    ruby: Vec<PathBuf>,
    /// Sign everything this Node.js runs from disk: its global module directories (the
    /// distribution's `/usr/share/nodejs`, `/usr/lib/nodejs`…, with their `.node` addons)
    /// and the shared libraries they and the interpreter load. Its own library is inside
    /// the binary.
    #[arg(long, value_name = "EXE")]
    node: Vec<PathBuf>,
    /// Print the files that would be signed, one per line, and sign nothing.
    #[arg(long)]
    list: bool,
    /// Files (or, with -r, directories) to sign.
    #[arg(required_unless_present_any = ["python", "perl", "ruby", "node"], value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// What to do with one path, decided before any signing so the progress bar knows the total.
enum Item {
    Sign(PathBuf),
    Skip(PathBuf, String),
    Fail(PathBuf, String),
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let algo = HashAlgo::from_name(&args.hash).context("unsupported hash algorithm")?;

    let mut items = Vec::new();
    for path in &args.paths {
        collect(path, args.recursive, &mut items);
    }
    let interpreters = (args.python.iter().map(|exe| (exe, Language::Python)))
        .chain(args.perl.iter().map(|exe| (exe, Language::Perl)))
        .chain(args.ruby.iter().map(|exe| (exe, Language::Ruby)))
        .chain(args.node.iter().map(|exe| (exe, Language::Node)));
    for (exe, language) in interpreters {
        let layout = interpreter_layout(exe, language)?;
        for dir in &layout.module_dirs {
            collect(dir, true, &mut items);
        }
        for library in layout.libraries {
            items.push(Item::Sign(library));
        }
    }
    if args.list {
        for item in &items {
            match item {
                Item::Sign(path) => println!("{}", path.display()),
                Item::Skip(path, reason) => {
                    eprintln!("guard: {}: skipped: {reason}", path.display())
                }
                Item::Fail(path, reason) => eprintln!("guard: {}: {reason}", path.display()),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let key = args.key.as_deref().context("--key is required to sign")?;
    let signer = Signer::from_files(key, args.cert.as_deref())?;
    let total = items.iter().filter(|i| matches!(i, Item::Sign(_))).count();
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total as u64), target);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    // `ProgressBar::println` is silent when the bar is hidden; suspend-and-print is not.
    let report = |line: String| bar.suspend(|| eprintln!("{line}"));

    let (mut skipped, mut failed) = (0usize, 0usize);
    let mut to_sign = Vec::with_capacity(total);
    for item in items {
        match item {
            Item::Sign(path) => to_sign.push(path),
            Item::Skip(path, reason) => {
                skipped += 1;
                report(format!("guard: {}: skipped: {reason}", path.display()));
            }
            Item::Fail(path, reason) => {
                failed += 1;
                report(format!("guard: {}: {reason}", path.display()));
            }
        }
    }
    // Each file is read and signed on its own: every core works (hashing runs at the
    // CPU's SHA speed, the signature is a private-key operation per file).
    let next = AtomicUsize::new(0);
    let (signed, sign_failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 16)
        .min(to_sign.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(path) = to_sign.get(next.fetch_add(1, Ordering::Relaxed)) {
                    bar.set_message(path.display().to_string());
                    match sign_file(path, &signer, algo) {
                        Ok(()) => signed.fetch_add(1, Ordering::Relaxed),
                        Err(reason) => {
                            report(format!("guard: {}: {reason}", path.display()));
                            sign_failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    bar.inc(1);
                }
            });
        }
    });
    let signed = signed.into_inner();
    let failed = failed + sign_failed.into_inner();
    bar.finish_and_clear();
    println!(
        "signed {signed} file{} (key id {:08x}, {}), skipped {skipped}, failed {failed}",
        if signed == 1 { "" } else { "s" },
        signer.key_id(),
        algo.name()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn collect(path: &Path, recursive: bool, items: &mut Vec<Item>) {
    let meta = match path.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) => return items.push(Item::Fail(path.into(), io_reason(&e))),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return items.push(Item::Sign(path.into()));
    }
    if !kind.is_dir() {
        // Named explicitly, a path that is not signable is an error, not a skip.
        return items.push(Item::Fail(path.into(), not_regular(&kind)));
    }
    if !recursive {
        return items.push(Item::Fail(path.into(), "is a directory (use -r)".into()));
    }
    // walkdir does not follow symbolic links unless asked, so the walk stays in the tree.
    for entry in WalkDir::new(path).follow_links(false).sort_by_file_name() {
        match entry {
            Ok(entry) => {
                let kind = entry.file_type();
                if kind.is_file() {
                    items.push(Item::Sign(entry.into_path()));
                } else if !kind.is_dir() {
                    items.push(Item::Skip(entry.into_path(), not_regular(&kind)));
                }
            }
            Err(e) => {
                let at = e.path().unwrap_or(path).to_path_buf();
                let reason = e.io_error().map(io_reason).unwrap_or_else(|| e.to_string());
                items.push(Item::Fail(at, reason));
            }
        }
    }
}

fn not_regular(kind: &std::fs::FileType) -> String {
    let what = if kind.is_symlink() {
        "symbolic link, not followed"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "unknown file type"
    };
    format!("not a regular file ({what})")
}

fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file".into(),
        Some(libc::EACCES) => "permission denied".into(),
        Some(libc::ELOOP) => "not a regular file (symbolic link, not followed)".into(),
        _ => e.to_string(),
    }
}

/// Hashes and labels one file through a single descriptor, so a file swapped between the
/// walk and the signing is either the one hashed and labelled, or refused.
fn sign_file(path: &Path, signer: &Signer, algo: HashAlgo) -> Result<(), String> {
    use xattr::FileExt;
    let file = File::options()
        .read(true)
        // O_NONBLOCK: a FIFO swapped in after the walk must not hang the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_reason(&e))?;
    let meta = file.metadata().map_err(|e| io_reason(&e))?;
    if !meta.is_file() {
        return Err(not_regular(&meta.file_type()));
    }
    let digest = digest_reader(&file, algo).map_err(|e| format!("cannot read: {e}"))?;
    let value = signer.sign_digest(&digest).map_err(|e| e.to_string())?;
    file.set_xattr(XATTR_NAME, &value)
        .map_err(|e| format!("cannot write {XATTR_NAME}: {e}"))
}

/// An interpreter `guard sign` can ask for its module path.
#[derive(Clone, Copy, Debug)]
enum Language {
    Python,
    Perl,
    Ruby,
    Node,
}

impl Language {
    /// The interpreter's own answer, one directory a line: its module path as it starts
    /// without the caller's environment (`-I` for CPython; the environment is cleared).
    fn module_path_query(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["-I", "-c", "import sys\nfor p in sys.path: print(p)"],
            Language::Perl => &["-e", "print \"$_\\n\" for grep { !ref } @INC"],
            Language::Ruby => &["-e", "puts $LOAD_PATH; puts Gem.path if defined?(Gem)"],
            Language::Node => &[
                "-e",
                "for (const p of require('module').globalPaths) console.log(p)",
            ],
        }
    }

    /// Whether a file under the module path is native code the interpreter maps.
    fn is_native(self, name: &str) -> bool {
        name.ends_with(".so")
            || name.contains(".so.")
            || matches!(self, Language::Node) && name.ends_with(".node")
    }
}

/// What an installed interpreter runs: its module path and the shared libraries it maps.
struct InterpreterLayout {
    module_dirs: Vec<PathBuf>,
    libraries: Vec<PathBuf>,
}

/// Asks the interpreter itself for its module path (no user site, no environment), then
/// follows ldd from the binary and every extension object under that path.
fn interpreter_layout(exe: &Path, language: Language) -> anyhow::Result<InterpreterLayout> {
    let out = std::process::Command::new(exe)
        .args(language.module_path_query())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .with_context(|| format!("{}: cannot run", exe.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{}: cannot read its module path: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut module_dirs: Vec<PathBuf> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // A directory of the module path may be a link (Debian's perl has
        // `/usr/share/perl/5.36 -> 5.36.0`): what the interpreter opens is under its target.
        let Ok(path) = std::fs::canonicalize(line) else {
            continue;
        };
        if path.is_dir() && !module_dirs.iter().any(|d| path.starts_with(d)) {
            module_dirs.retain(|d| !d.starts_with(&path));
            module_dirs.push(path);
        }
    }
    let mut objects = vec![exe.to_path_buf()];
    let mut libraries: Vec<PathBuf> = Vec::new();
    for dir in &module_dirs {
        for entry in WalkDir::new(dir).follow_links(false).into_iter().flatten() {
            let name = entry.file_name().to_string_lossy();
            let kind = entry.file_type();
            if kind.is_file() && language.is_native(&name) {
                objects.push(entry.into_path());
            } else if kind.is_symlink() {
                // The interpreter follows links in its own tree (Debian's sitecustomize.py
                // points into /etc): what it will open is the target, so sign that.
                if let Ok(real) = entry.path().canonicalize()
                    && real.is_file()
                    && !module_dirs.iter().any(|d| real.starts_with(d))
                    && !libraries.contains(&real)
                {
                    libraries.push(real);
                }
            }
        }
    }
    for object in &objects {
        for library in shared_libraries(object) {
            // Symlinks such as libc.so.6 -> libc-2.36.so name one file: sign that file.
            if let Ok(real) = library.canonicalize()
                && !libraries.contains(&real)
                && !module_dirs.iter().any(|d| real.starts_with(d))
            {
                libraries.push(real);
            }
        }
    }
    libraries.sort();
    Ok(InterpreterLayout {
        module_dirs,
        libraries,
    })
}

/// The libraries ld.so would load for `object`, per `ldd` (absolute paths only).
fn shared_libraries(object: &Path) -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldd").arg(object).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let candidate = line.split("=>").nth(1).unwrap_or(line).trim();
            let path = candidate.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}
