//! Perl, Ruby and Node.js under guard in host mode (fanotify and the exec gate), with the
//! real interpreters: each attack runs first without guard, where its payload must run
//! (otherwise the attack is broken and proves nothing), then under the agent, where it must
//! not, and the signed baseline (a signed program using a signed module) keeps running.
//!
//! Each interpreter is a private copy in the lab (the exec gate acts host-wide on the
//! identities a policy profiles: the host's own `perl -e` is left alone), profiled with its
//! own grammar (`argv = "perl"`…) and the code names and environment of the distribution
//! policies. Every run is as nobody, with a clean environment, bounded by a timeout.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use guard_tests::*;

/// One interpreter: where it is, how its profile reads, and how its code creates a file.
struct Language {
    name: &'static str,
    binary: &'static str,
    code_patterns: &'static [&'static str],
    deny_env: &'static [&'static str],
    /// Code that creates the file at the path it is given.
    payload: fn(&Path) -> String,
    /// Code that loads the module file `NAME` of the program's directory (the attacker's
    /// choice of name, or a signed module's).
    load: fn(&str) -> String,
    /// A module file's suffix.
    suffix: &'static str,
    /// Code that prints its argument.
    print: fn(&str) -> String,
    /// A console: code that runs what standard input says (the distribution's REPLs, `cpan`,
    /// `json_pp -f eval`, `irb`).
    console: &'static str,
}

const PERL: Language = Language {
    name: "perl",
    binary: "/usr/bin/perl",
    code_patterns: &["*.pl", "*.pm", "*.pmc", "*.al", "*.ix", "*.ph", "*.so"],
    deny_env: &["PERL5OPT", "PERL5DB", "PERLDB_OPTS"],
    payload: |m| {
        format!(
            "open(my $f, '>', '{}'); print $f 'ran'; close $f;\n",
            m.display()
        )
    },
    load: |name| format!("require './{name}';\n"),
    suffix: "pm",
    print: |text| format!("print \"{text}\\n\";\n"),
    console: "eval do { local $/; <STDIN> }; die $@ if $@;\n",
};

const RUBY: Language = Language {
    name: "ruby",
    binary: "/usr/bin/ruby",
    code_patterns: &["*.rb", "*.so", "*.gemspec"],
    deny_env: &["RUBYOPT"],
    payload: |m| format!("File.write('{}', 'ran')\n", m.display()),
    load: |name| format!("require_relative './{name}'\n"),
    suffix: "rb",
    print: |text| format!("puts '{text}'\n"),
    console: "eval($stdin.read)\n",
};

const NODE: Language = Language {
    name: "node",
    binary: "/usr/bin/node",
    code_patterns: &["*.js", "*.mjs", "*.cjs", "*.node", "*.wasm", "package.json"],
    deny_env: &["NODE_OPTIONS"],
    payload: |m| format!("require('fs').writeFileSync('{}', 'ran');\n", m.display()),
    load: |name| format!("require('./{name}');\n"),
    suffix: "js",
    print: |text| format!("console.log('{text}');\n"),
    console: "eval(require('fs').readFileSync(0, 'utf8'));\n",
};

/// The lab of one interpreter: a tmpfs the agent watches, with the interpreter's copy, the
/// signed baseline and the attacker's files.
struct Lab {
    fs: Tmpfs,
    language: &'static Language,
    interpreter: PathBuf,
    policy: PathBuf,
}

impl Lab {
    fn new(language: &'static Language) -> Lab {
        let fs = Tmpfs::with_size("512m");
        let real = std::fs::canonicalize(language.binary)
            .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask setup installs it)", language.binary));
        let interpreter = fs.path().join(format!("bin/{}", language.name));
        std::fs::create_dir_all(interpreter.parent().unwrap()).unwrap();
        // Copied by another process: a descriptor open for writing here would leak into a
        // child another test thread forks (ETXTBSY).
        let out = run("cp", &[&real, &interpreter]);
        assert!(out.status.success(), "cp: {}", text(&out.stderr));
        set_mode(&interpreter, 0o755);
        let list = |items: &[&str]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let policy = fs.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "mode = \"enforce\"\n[trust]\nfilesystems = [\"tmpfs\"]\n\
                 [[interpreter]]\nname = {name:?}\nexecutables = [{exe:?}]\nargv = {name:?}\n\
                 code_patterns = [{patterns}]\ndeny_env = [{env}]\n\
                 stdin_code_scripts = [{console:?}]\n",
                console = fs.path().join("lab/console.x").display().to_string(),
                name = language.name,
                exe = interpreter.display().to_string(),
                patterns = list(language.code_patterns),
                env = list(language.deny_env),
            ),
        )
        .unwrap();
        let dir = fs.path().join("lab");
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o1777);
        // The signed baseline: a program using a module, both signed.
        let module = format!("ok_module.{}", language.suffix);
        fs.signed(&format!("lab/{module}"), &(language.print)("signed module"));
        let main = format!(
            "{}{}",
            (language.load)(&module),
            (language.print)("signed main")
        );
        fs.signed("lab/ok_main.x", &main);
        // A console the distribution ships, signed like the rest of it, which the profile
        // lists as a script that reads code from standard input.
        fs.signed("lab/console.x", language.console);
        Lab {
            fs,
            language,
            interpreter,
            policy,
        }
    }

    fn dir(&self) -> PathBuf {
        self.fs.path().join("lab")
    }

    /// The interpreter run as nobody in the lab with `args`, extra environment and `stdin`.
    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut cmd = as_nobody(&self.interpreter);
        cmd.args(args)
            .current_dir(self.dir())
            .env("HOME", "/nonexistent")
            .env("LANG", "C.UTF-8")
            .envs(env.iter().copied());
        match stdin {
            None => {
                cmd.stdin(Stdio::null());
                run_with_timeout(&mut cmd, Duration::from_secs(30))
            }
            Some(input) => {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = cmd.spawn().expect("spawn");
                {
                    use std::io::Write;
                    let mut pipe = child.stdin.take().unwrap();
                    let _ = pipe.write_all(input.as_bytes());
                }
                wait_with_timeout(child, Duration::from_secs(30))
                    .unwrap_or_else(|| panic!("{} {args:?}: timed out", self.language.name))
            }
        }
    }

    /// [`Self::run`] of an attack: through the attacker's shell when it pipes the code in
    /// itself. Whether the interpreter was killed (by SIGKILL, or a shell saying so).
    fn attack(&self, a: &Attack) -> (Output, bool) {
        let Some(code) = &a.piped else {
            let out = self.run(&a.args(), &a.environment(), a.stdin.as_deref());
            let killed = out.status.signal() == Some(libc::SIGKILL);
            return (out, killed);
        };
        let mut cmd = as_nobody(Path::new("/bin/sh"));
        let script = match code.strip_prefix('<') {
            Some(file) => format!("\"$INTERPRETER\" \"$@\" <{file}"),
            None => "printf %s \"$CODE\" | \"$INTERPRETER\" \"$@\"".to_string(),
        };
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .args(&a.args)
            .current_dir(self.dir())
            .env("HOME", "/nonexistent")
            .env("CODE", code)
            .env("INTERPRETER", &self.interpreter)
            .envs(a.environment())
            .stdin(Stdio::null());
        let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
        let killed = out.status.code() == Some(128 + libc::SIGKILL);
        (out, killed)
    }

    fn baseline_runs(&self) {
        let out = self.run(&["ok_main.x"], &[], None);
        assert!(
            stdout(&out).contains("signed module") && stdout(&out).contains("signed main"),
            "{}: the signed baseline does not run: {}{}",
            self.language.name,
            stdout(&out),
            stderr(&out)
        );
    }
}

/// One attack: how the interpreter is started, and the rule the agent records for it.
struct Attack {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<String>,
    /// Piped by the attacker: `printf %s CODE | interpreter ARGS` in a shell of theirs.
    piped: Option<String>,
    /// Killed at exec by the gate (else refused when it opens the code).
    killed: bool,
    /// A known gap, with where it is described: the attack must work without guard, and
    /// is not held against guard.
    open: Option<&'static str>,
}

fn attack(name: &str, args: &[&str], killed: bool) -> Attack {
    Attack {
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        stdin: None,
        piped: None,
        killed,
        open: None,
    }
}

impl Attack {
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
    fn environment(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
    fn env(mut self, name: &str, value: &str) -> Attack {
        self.env.push((name.into(), value.into()));
        self
    }
    fn stdin(mut self, input: &str) -> Attack {
        self.stdin = Some(input.into());
        self
    }
    /// Standard input from the attacker's `file`, through their shell.
    fn redirected(mut self, file: &str) -> Attack {
        self.piped = Some(format!("<{file}"));
        self
    }
    fn piped(mut self, input: &str, language: &Language) -> Attack {
        self.piped = Some(if language.name == "node" {
            "<data.txt".into()
        } else {
            input.into()
        });
        self
    }
}

/// Perl's payload without whitespace: `-F` reads its pattern up to whitespace.
fn tight(code: &str) -> String {
    code.trim_end()
        .replace("my $f", "my$f")
        .replace(", ", ",")
        .replace("; ", ";")
        .replace("print $f ", "print{$f}")
        .replace("close $f", "close$f")
}

/// A directory `pkg` whose `package.json` names a data file holding `code` as its main:
/// `node pkg` runs it.
fn node_package(lab: &Lab, code: &str) -> String {
    lab.fs.write(
        "lab/pkg/package.json",
        r#"{"name": "pkg", "main": "notes.txt"}"#,
    );
    lab.fs.write("lab/pkg/notes.txt", code);
    "pkg".into()
}

/// A signed program requiring the package `planted`, which the attacker put in
/// `node_modules` beside it with a data file as its main.
fn loads_package(lab: &Lab, code: &str) -> String {
    lab.fs.write(
        "lab/node_modules/planted/package.json",
        r#"{"name": "planted", "main": "notes.txt"}"#,
    );
    lab.fs.write("lab/node_modules/planted/notes.txt", code);
    lab.fs
        .signed("lab/loads_planted.x", "require('planted');\n");
    "loads_planted.x".into()
}

/// The attacks on one interpreter: its payload `code` (creating the marker), the attacker's
/// unsigned module `evil` beside the signed code, a data file, and links named as code.
fn attacks(lab: &Lab, code: &str) -> Vec<Attack> {
    let language = lab.language;
    let suffix = language.suffix;
    let evil = format!("evil.{suffix}");
    lab.fs.write(&format!("lab/{evil}"), code);
    lab.fs.write("lab/data.txt", code);
    let link = format!("link.{suffix}");
    let _ = std::fs::remove_file(lab.dir().join(&link));
    std::os::unix::fs::symlink("data.txt", lab.dir().join(&link)).unwrap();
    // A signed program that loads what the attacker puts beside it under a name it loads.
    let loads = |module: &str| {
        let name = format!("loads_{}.x", module.replace('.', "_"));
        lab.fs
            .signed(&format!("lab/{name}"), &(language.load)(module));
        name
    };
    let loads_evil = loads(&evil);
    let loads_link = loads(&link);
    // The payload as an ES module in a `data:` URL (Node's --import, --loader).
    let esm = format!(
        "data:text/javascript,import {{ writeFileSync }} from \"node:fs\"; {}",
        code.replace("require('fs').", "")
    );
    let mut list = vec![
        attack("the program on stdin", &[], true).stdin(code),
        attack("`-` and the program on stdin", &["-"], true).stdin(code),
        // The attacker's own pipe (the test's would not open for nobody); Node resolves the
        // script's real path first, which a pipe has none of: its stdin is the data file.
        attack("/dev/stdin as the script", &["/dev/stdin"], true).piped(code, language),
        attack("/proc/self/fd/0 as the script", &["/proc/self/fd/0"], true).piped(code, language),
        attack("a data file as the script", &["data.txt"], false),
        attack(
            "a link named as code to a data file as the script",
            &[&link],
            false,
        ),
        attack(
            "an unsigned module beside signed code",
            &[&loads_evil],
            false,
        ),
        attack(
            "a link named as code, loaded by signed code",
            &[&loads_link],
            false,
        ),
        // A signed console of the distribution's, listed in `stdin_code_scripts`: refused as
        // the main script by the rule of what it runs (no-stdin-code), not for its signature.
        attack("a console script reading stdin", &["console.x"], false).stdin(code),
    ];
    match language.name {
        "perl" => list.extend([
            attack("-e", &["-e", code], true),
            attack("-E", &["-E", code], true),
            attack("-e in a cluster", &["-we", code], true),
            attack(
                "-e after a script-like option",
                &["-w", "-l", "-e", code],
                true,
            ),
            attack("-M with code", &[&format!("-Mstrict;{code}"), "-e1"], true),
            attack(
                "-M with code before a script",
                &[&format!("-Mstrict;{code}"), "ok_main.x"],
                true,
            ),
            attack(
                "-M of an unsigned module",
                &["-I.", "-Mevil", "ok_main.x"],
                false,
            ),
            attack(
                "-M of a link named as code",
                &["-I.", "-Mlink", "ok_main.x"],
                false,
            ),
            attack("PERL5OPT loading a module", &["ok_main.x"], true).env("PERL5OPT", "-I. -Mevil"),
            attack("the debugger reading stdin", &["-d", "ok_main.x"], true)
                .stdin(&format!("{}\nq\n", code.trim_end().trim_end_matches(';'))),
            // Where the grammar hides code (perl_argv): a cluster going on after a space, an
            // -e after another switch's digits, the empty word read as `-`, code after
            // -d:MOD, a quote broken by a trailing backslash (the next -M's arguments are
            // compiled), a delimited -F pattern pasted into the program.
            attack(
                "-e after a space in a cluster",
                &[&format!("-w -e{code}")],
                true,
            ),
            attack("-e after -0's digits", &[&format!("-0777e{code}")], true),
            attack("the empty word as the script", &[""], true).stdin(code),
            attack(
                "code after -d:MOD",
                &[&format!("-d:Peek;BEGIN{{{code}}}"), "ok_main.x"],
                true,
            ),
            attack(
                "-M arguments ending in a backslash",
                &[
                    "-Mlib=x\\",
                    &format!("-Mlib=);BEGIN{{{code}}};#"),
                    "ok_main.x",
                ],
                true,
            ),
            attack(
                "a delimited -F pattern",
                &[&format!("-F/x/);{};split(/x/", tight(code)), "ok_main.x"],
                true,
            )
            .stdin("x\n"),
        ]),
        "ruby" => list.extend([
            attack("-e", &["-e", code], true),
            attack("-e in a cluster", &["-we", code], true),
            attack("-e after other options", &["-w", "-W0", "-e", code], true),
            attack(
                "-r of an unsigned library",
                &["-r./evil", "ok_main.x"],
                false,
            ),
            attack(
                "-r of a link named as code",
                &["-r./link", "ok_main.x"],
                false,
            ),
            attack("RUBYOPT requiring a library", &["ok_main.x"], true).env("RUBYOPT", "-r./evil"),
        ]),
        "node" => list.extend([
            // Node compiles what its loader opens for a path whatever the file is called.
            attack(
                "-r of a data file (any name is compiled)",
                &["-r", "./data.txt", "ok_main.x"],
                false,
            ),
            attack(
                "a package directory whose main is a data file",
                &[&node_package(lab, code)],
                false,
            ),
            attack(
                "-r of a package directory whose main is a data file",
                &["-r", &format!("./{}", node_package(lab, code)), "ok_main.x"],
                false,
            ),
            // Found by name in a directory node searches (beside the program, or the user's
            // `~/.node_modules`): its package.json decides what runs, so it is code.
            attack(
                "a package found by name whose main is a data file, loaded by signed code",
                &[&loads_package(lab, code)],
                false,
            ),
            // Node writes a title over its argv before it loads a module: the agent would
            // read no operand in /proc/PID/cmdline.
            attack(
                "--title hiding the data file it runs",
                &["--title=x", "data.txt"],
                true,
            ),
            attack("-e", &["-e", code], true),
            attack("--eval=", &[&format!("--eval={code}")], true),
            attack("-p", &["-p", code], true),
            attack("-pe", &["-pe", code], true),
            attack(
                "-r of an unsigned module",
                &["-r", "./evil.js", "ok_main.x"],
                false,
            ),
            attack(
                "--require= of a link named as code",
                &["--require=./link.js", "ok_main.x"],
                false,
            ),
            attack(
                "--import of a data: URL",
                &["--import", &esm, "ok_main.x"],
                true,
            ),
            attack("the REPL reading stdin", &["-i"], true).stdin(code),
            // Where the grammar finds code (node_argv): `--print` takes the next word as
            // code whatever its `=`, a module read from standard input by a name the URL
            // parser rewrites.
            attack("--print= then code", &["--print=x", code], true),
            attack(
                "-r of standard input",
                &["-r", "/dev/stdin", "ok_main.x"],
                true,
            )
            .piped(code, language),
            // An ES module's format is its real path's extension: standard input is the
            // attacker's `.js` file.
            attack(
                "--import of standard input, percent-escaped",
                &["--import=/%64ev/stdin", "ok_main.x"],
                true,
            )
            .redirected("evil.js"),
            attack("NODE_OPTIONS requiring a module", &["ok_main.x"], true)
                .env("NODE_OPTIONS", "--require ./evil.js"),
        ]),
        other => panic!("no attacks for {other}"),
    }
    if language.name == "node" {
        // Node opens the real path behind a module's name: `link.js -> data.txt` opens
        // `data.txt`, a name that is no code (docs/threat-model.md, Node.js).
        for a in &mut list {
            if a.name == "a link named as code, loaded by signed code" {
                a.open = Some("node opens a link's target by its own name");
            }
        }
    }
    list
}

fn interpreter_under_guard(language: &'static Language) {
    let lab = Lab::new(language);
    let marker = lab.fs.marker(&format!("{}-ran", language.name));
    let code = (language.payload)(&marker);
    let attacks = attacks(&lab, &code);

    // Without guard: every payload runs, and the baseline.
    lab.baseline_runs();
    let mut broken = Vec::new();
    for a in &attacks {
        let _ = std::fs::remove_file(&marker);
        let (out, _) = lab.attack(a);
        if !marker.exists() {
            broken.push(format!(
                "{}: payload did not run without guard: {}{}",
                a.name,
                stdout(&out),
                stderr(&out)
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "{}: broken attacks:\n{}",
        language.name,
        broken.join("\n")
    );

    let agent =
        Agent::start_with_exec_gate(lab.fs.path(), &["--policy", lab.policy.to_str().unwrap()]);
    lab.baseline_runs();
    let mut ran = Vec::new();
    for a in &attacks {
        let _ = std::fs::remove_file(&marker);
        let (out, killed) = lab.attack(a);
        if let Some(why) = a.open {
            eprintln!(
                "{}: {}: open ({why}), the payload {}",
                language.name,
                a.name,
                if marker.exists() {
                    "ran"
                } else {
                    "did not run"
                }
            );
        } else if marker.exists() {
            ran.push(format!("{}: the payload ran under guard", a.name));
        } else if a.killed != killed {
            ran.push(format!(
                "{}: {} at exec ({:?}): {}",
                a.name,
                if a.killed { "not killed" } else { "killed" },
                out.status,
                stderr(&out)
            ));
        }
        lab.baseline_runs();
    }
    assert!(
        ran.is_empty(),
        "{}:\n{}\nagent:\n{}",
        language.name,
        ran.join("\n"),
        agent.log_text()
    );
    // The console is signed: it was refused for what it runs.
    let console = agent.denies_for("console.x");
    assert!(
        console
            .iter()
            .any(|r| r.contains("\"rule\":\"no-stdin-code\"")),
        "{}: the console's refusal: {console:?}",
        language.name
    );
}

#[test]
fn perl_runs_only_signed_code() {
    interpreter_under_guard(&PERL);
}

#[test]
fn ruby_runs_only_signed_code() {
    interpreter_under_guard(&RUBY);
}

#[test]
fn node_runs_only_signed_code() {
    interpreter_under_guard(&NODE);
}
