//! P1, P1h and P1e in instructions executed (callgrind): the audit hook's cost (#20) read
//! without the host's noise, which on a busy 2-core machine is wider than the 2 % target.
//!
//! The same storm, run by the host's own python3 over its own standard library, with
//! guard's hook installed as `guard python-hook install` writes it, talking to a stand-in
//! for the agent that answers as the bench policy does (`dynamic_code = "audit"`, the
//! default expected makers): the agent's own work is not the interpreter's, and under
//! callgrind the agent would not know the process for a python (its executable is
//! valgrind's tool).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::util::must;

/// Instructions the interpreter executed for each storm.
#[derive(Clone, Copy, Debug)]
pub(super) struct Counts {
    pub p1: u64,
    pub p1h: u64,
    pub p1e: u64,
}

/// The stand-in: a SOCK_SEQPACKET server that answers each hook's hello with `answer` and
/// reads (and drops) what it reports.
const STAND_IN: &str = r#"
import os, selectors, socket, sys
path, answer = sys.argv[1], sys.argv[2].encode()
server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
server.bind(path)
server.listen(16)
print("listening", flush=True)
selector = selectors.DefaultSelector()
selector.register(server, selectors.EVENT_READ)
while True:
    for key, _ in selector.select():
        if key.fileobj is server:
            selector.register(server.accept()[0], selectors.EVENT_READ)
            continue
        message = key.fileobj.recv(1 << 17)
        if not message:
            selector.unregister(key.fileobj)
            key.fileobj.close()
        elif message == b"hello":
            key.fileobj.send(answer)
"#;

struct StandIn(Child);

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Counts the three storms (`storm` is the storm's source). `makers`: the expected makers
/// of dynamic code, as (file under the standard library, function).
pub(super) fn measure(
    work: &Path,
    guard: &Path,
    storm: &str,
    makers: &[(&str, &str)],
) -> Result<Counts> {
    let which = Command::new("valgrind").arg("--version").output();
    if !which.is_ok_and(|out| out.status.success()) {
        bail!("valgrind is not installed (cargo xtask setup installs it)");
    }
    let dir = work.join("instructions");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("hook.sock");
    let mut answer = String::from("audit");
    for (file, function) in makers {
        answer.push_str(&format!("\n/usr/lib/python3*/{file}\t{function}"));
    }
    std::fs::write(dir.join("stand_in.py"), STAND_IN)?;
    let mut child = Command::new("/usr/bin/python3")
        .arg(dir.join("stand_in.py"))
        .arg(&socket)
        .arg(&answer)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the agent's stand-in")?;
    let mut listening = String::new();
    if let Some(out) = child.stdout.as_mut() {
        use std::io::BufRead;
        std::io::BufReader::new(out).read_line(&mut listening)?;
    }
    let _stand_in = StandIn(child);
    if listening.trim() != "listening" {
        bail!("the agent's stand-in did not start");
    }
    must(
        Command::new(guard)
            .args(["python-hook", "install", "--site"])
            .arg(&dir)
            .arg("--socket")
            .arg(&socket),
        Duration::from_secs(60),
    )?;
    must(
        Command::new("/usr/bin/python3")
            .args(["-m", "py_compile"])
            .arg(dir.join("guard_audit_hook.py")),
        Duration::from_secs(60),
    )?;
    let scripts = [
        ("storm.py", storm.to_string()),
        (
            "storm_hooked.py",
            format!("import guard_audit_hook\n{storm}"),
        ),
        (
            "storm_empty_hook.py",
            format!("import sys\nsys.addaudithook(lambda event, args: None)\n{storm}"),
        ),
    ];
    let mut counts = [0u64; 3];
    for ((name, source), count) in scripts.iter().zip(&mut counts) {
        std::fs::write(dir.join(name), source)?;
        let ran = must(
            Command::new("valgrind")
                .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
                .args(["/usr/bin/python3", "-S"])
                .arg(dir.join(name))
                // The same string hashes each run: the count repeats to a few in 10,000.
                .env("PYTHONHASHSEED", "0")
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONWARNINGS", "ignore"),
            Duration::from_secs(600),
        )?;
        *count = collected(&ran.stderr())
            .with_context(|| format!("no instruction count for {name} from callgrind"))?;
    }
    Ok(Counts {
        p1: counts[0],
        p1h: counts[1],
        p1e: counts[2],
    })
}

/// Callgrind's total: `==PID== Collected : N`.
fn collected(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected : "))
        .and_then(|(_, count)| count.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_read_from_callgrinds_summary() {
        let stderr = "==7== Events    : Ir\n==7== Collected : 531960511\n==7== \n==7== I   refs:      531,960,511\n";
        assert_eq!(collected(stderr), Some(531_960_511));
        assert_eq!(collected("==7== no summary\n"), None);
    }
}
