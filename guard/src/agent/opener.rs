//! What the opener asked for: the path a thread blocked in a fanotify permission event
//! passed to its `open`, read from the thread itself.
//!
//! CPython decides what is code by the name it looks up (`evil.py` for `import evil`), not
//! by what the file behind that name is called: a code-named symlink to a data-named file
//! is code to the interpreter. The event's descriptor only tells the target's name. While
//! the kernel waits for the agent's answer, the thread sits in its syscall, so the call and
//! its arguments are in `/proc/TID/syscall` and the path string is still in its memory.
//!
//! Limits, which make the name unknown (and so the open judged as code): a syscall this
//! module does not read a path from (`open_by_handle_at`, io_uring's opens, which run in a
//! kernel worker), a path that is not readable from the thread's memory, or one without its
//! NUL within `PATH_MAX`. A tracer of the thread could rewrite the string after the kernel
//! copied it; a tracer can as well make the interpreter run anything, so ptrace of an
//! interpreter is native code execution, outside what this module can see.

use std::fmt;
use std::io::IoSliceMut;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

/// The kernel's limit on a path argument, terminating NUL included.
const PATH_MAX: usize = libc::PATH_MAX as usize;
const PAGE: usize = 4096;

/// Why the asked path could not be read: a fact missing, never a harmless answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown(pub String);

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The path argument of the syscall thread `tid` is blocked in: `Ok(None)` when it opened
/// by descriptor alone (`execveat(fd, "", AT_EMPTY_PATH)`, `fexecve`).
pub fn asked_path(tid: i32) -> Result<Option<Vec<u8>>, Unknown> {
    let syscall = blocked_syscall(tid)?;
    let (number, args) = parse_syscall(&syscall).ok_or_else(|| {
        Unknown(format!(
            "the opener is in no syscall guard reads ({syscall:?})"
        ))
    })?;
    let pointer = path_argument(number, &args).ok_or_else(|| {
        Unknown(format!(
            "the opener is in syscall {number}, which guard reads no path from"
        ))
    })?;
    let path = read_string(tid, pointer)?;
    Ok((!path.is_empty()).then_some(path))
}

/// How long a thread that queued a permission event may take to go to sleep waiting for it.
const SETTLE_TRIES: u32 = 200;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_micros(100);

/// `/proc/TID/syscall` of a thread blocked in its syscall. The kernel queues the event (and
/// wakes the agent) before the opener sleeps on the answer, and reads `running` for a
/// thread still on a CPU: a slow CPU (an emulated one) lets the agent look in between. The
/// opener cannot go on without the answer, so it settles within moments; one that does not
/// within 20 ms leaves the name unknown.
fn blocked_syscall(tid: i32) -> Result<String, Unknown> {
    let mut tries = 0;
    loop {
        let text = std::fs::read_to_string(format!("/proc/{tid}/syscall"))
            .map_err(|e| Unknown(format!("cannot read /proc/{tid}/syscall: {e}")))?;
        if !text.starts_with("running") || tries == SETTLE_TRIES {
            return Ok(text);
        }
        tries += 1;
        std::thread::sleep(SETTLE_PAUSE);
    }
}

/// The last component of a path: the name that was looked up last. Empty for a path ending
/// in `/` (a directory, never a file's open).
pub fn last_component(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(slash) => &path[slash + 1..],
        None => path,
    }
}

/// Whether `asked` is the path CPython opens its main script by, for `operand`: the operand
/// itself when absolute; made absolute from the cwd when relative (`/cwd/./x` for `./x`), or
/// as given when the cwd is too long to name. A relative operand is matched as a suffix
/// after a `/`: the agent does not know the cwd as the process names it (a chroot, a
/// container), and a second look at it could fail, so this errs towards the main script.
pub fn opens_operand(asked: &[u8], operand: &[u8]) -> bool {
    if operand.is_empty() {
        return false;
    }
    if asked == operand {
        return true;
    }
    if operand.starts_with(b"/") {
        return false;
    }
    asked.len() > operand.len()
        && asked.ends_with(operand)
        && asked[asked.len() - operand.len() - 1] == b'/'
}

/// Whether `asked`, a path the interpreter opened, is the file of module `module` (a dotted
/// name, as `-m` takes it) as the import system finds it: the name's parts as directories,
/// then `LAST.py`, `LAST.pyc`, `__pycache__/LAST.TAG.pyc`, or for a package
/// `LAST/__main__` in those forms. The import system builds the path from a search-path
/// entry and the parts, so a link in the entry (`s -> /usr/lib/python3.11` for `-m
/// s.timeit`) shows in the parts, not in the file's own path.
pub fn opens_module(asked: &[u8], module: &[u8]) -> bool {
    let parts: Vec<&[u8]> = module.split(|&b| b == b'.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return false;
    }
    let mut components: Vec<&[u8]> = asked
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let Some(last) = components.pop() else {
        return false;
    };
    let stem = if let Some(pyc) = last.strip_suffix(b".pyc") {
        if components.last() == Some(&&b"__pycache__"[..]) {
            components.pop();
            // `NAME.TAG.pyc`: the module's name is before the first dot.
            let dot = pyc.iter().position(|&b| b == b'.').unwrap_or(pyc.len());
            &pyc[..dot]
        } else {
            pyc
        }
    } else if let Some(source) = last.strip_suffix(b".py") {
        source
    } else {
        return false;
    };
    components.push(stem);
    let ends_with = |path: &[&[u8]]| path.len() >= parts.len() && path.ends_with(&parts);
    ends_with(&components)
        || (stem == b"__main__" && ends_with(&components[..components.len() - 1]))
}

/// The component before the last: the directory the last name was looked up in
/// (`/usr/lib/python3.11/asyncio/__main__.py` gives `asyncio`), repeated `/` skipped.
pub fn parent_component(path: &[u8]) -> &[u8] {
    let mut end = path.len() - last_component(path).len();
    while end > 0 && path[end - 1] == b'/' {
        end -= 1;
    }
    last_component(&path[..end])
}

/// The directory a module file was looked up for: the parent component, or for bytecode in
/// `__pycache__` the one before it (`pkg/__pycache__/__main__.cpython-311.pyc` gives `pkg`).
pub fn module_dir_component(path: &[u8]) -> &[u8] {
    let parent = parent_component(path);
    if parent != b"__pycache__" {
        return parent;
    }
    let mut end = path.len() - last_component(path).len();
    while end > 0 && path[end - 1] == b'/' {
        end -= 1;
    }
    parent_component(&path[..end])
}

/// The last component of a path, trailing `/` ignored: what an operand names (`dir/`
/// names `dir`).
pub fn named_component(path: &[u8]) -> &[u8] {
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    last_component(&path[..end])
}

/// `/proc/TID/syscall`: the number in decimal, then six arguments, the stack and program
/// counters in hex; `running` or `-1 …` when the thread is in no syscall.
fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut fields = text.split_whitespace();
    let number: i64 = fields.next()?.parse().ok()?;
    if number < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = u64::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
    }
    Some((number, args))
}

/// Where the path is among a syscall's arguments, for the calls that open a file by path.
fn path_argument(number: i64, args: &[u64; 6]) -> Option<u64> {
    let index = match number {
        libc::SYS_openat | libc::SYS_openat2 | libc::SYS_execveat => 1,
        libc::SYS_execve => 0,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open | libc::SYS_creat | libc::SYS_uselib => 0,
        _ => return None,
    };
    Some(args[index])
}

/// The NUL-terminated string at `address` in thread `tid`'s memory, page by page: a read
/// across into an unmapped page would fail as a whole.
fn read_string(tid: i32, address: u64) -> Result<Vec<u8>, Unknown> {
    let mut path = Vec::with_capacity(256);
    let mut at = usize::try_from(address)
        .map_err(|_| Unknown(format!("address {address:#x} out of range")))?;
    while path.len() < PATH_MAX {
        let chunk = (PAGE - at % PAGE).min(PATH_MAX - path.len());
        let mut buf = [0u8; PAGE];
        let remote = [RemoteIoVec {
            base: at,
            len: chunk,
        }];
        let read = process_vm_readv(
            Pid::from_raw(tid),
            &mut [IoSliceMut::new(&mut buf[..chunk])],
            &remote,
        )
        .map_err(|e| Unknown(format!("cannot read the opener's path argument: {e}")))?;
        if read == 0 {
            return Err(Unknown("the opener's path argument is unreadable".into()));
        }
        if let Some(nul) = buf[..read].iter().position(|b| *b == 0) {
            path.extend_from_slice(&buf[..nul]);
            return Ok(path);
        }
        path.extend_from_slice(&buf[..read]);
        at += read;
    }
    Err(Unknown(format!(
        "the opener's path argument has no end within {PATH_MAX} bytes"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_module_is_found_by_its_dotted_path() {
        let yes: &[(&str, &str)] = &[
            ("/tmp/u/s/timeit.py", "s.timeit"),
            ("/tmp/u/s/__pycache__/timeit.cpython-311.pyc", "s.timeit"),
            (
                "/tmp/u/s/__pycache__/timeit.cpython-311.opt-1.pyc",
                "s.timeit",
            ),
            ("/tmp/u/t.py", "t"),
            ("/tmp/u/t.pyc", "t"),
            ("/tmp/u/x/__main__.py", "x"),
            ("/tmp/u/x/__main__.py", "x.__main__"),
            ("/tmp/u/x/__pycache__/__main__.cpython-311.pyc", "x"),
            (
                "/usr/lib/python3/dist-packages/pygments/__main__.py",
                "dist-packages.pygments",
            ),
            ("//tmp//u//s//timeit.py", "s.timeit"),
        ];
        for (asked, module) in yes {
            assert!(
                opens_module(asked.as_bytes(), module.as_bytes()),
                "{asked} {module}"
            );
        }
        let no: &[(&str, &str)] = &[
            // An import by the main module, or of another name.
            ("/usr/lib/python3.11/timeit.py", "myapp"),
            ("/usr/lib/python3.11/timeit.py", "s.timeit"),
            ("/tmp/u/s/timeit.py", "timeit.s"),
            ("/tmp/u/xs/timeit.py", "s.timeit"),
            ("/tmp/u/x/__init__.py", "x"),
            ("/tmp/u/x/events.py", "x"),
            ("/tmp/u/x/__main__.txt", "x"),
            ("/tmp/u/s/timeit.py", "s..timeit"),
            ("", "t"),
        ];
        for (asked, module) in no {
            assert!(
                !opens_module(asked.as_bytes(), module.as_bytes()),
                "{asked} {module}"
            );
        }
    }

    #[test]
    fn syscall_lines() {
        let line = "257 0xffffff9c 0x7ffc1d2a 0x80000 0x0 0x0 0x0 0x7ffc1000 0x7f00aa\n";
        let (number, args) = parse_syscall(line).unwrap();
        assert_eq!(number, libc::SYS_openat);
        assert_eq!(args[1], 0x7ffc1d2a);
        assert_eq!(path_argument(number, &args), Some(0x7ffc1d2a));
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffc1000 0x7f00aa\n"), None);
        // A syscall without a path: unknown, not "no name".
        assert_eq!(path_argument(libc::SYS_read, &args), None);
    }

    #[test]
    fn last_components() {
        assert_eq!(last_component(b"/tmp/x/./evil.py"), b"evil.py");
        assert_eq!(last_component(b"evil.py"), b"evil.py");
        assert_eq!(last_component(b"/a/"), b"");
        assert_eq!(
            parent_component(b"/usr/lib/asyncio/__main__.py"),
            b"asyncio"
        );
        assert_eq!(parent_component(b"/x/link//__main__.py"), b"link");
        assert_eq!(parent_component(b"/x/./__main__.py"), b".");
        assert_eq!(parent_component(b"__main__.py"), b"");
        assert_eq!(
            module_dir_component(b"/x/pk/__pycache__/__main__.cpython-311.pyc"),
            b"pk"
        );
        assert_eq!(module_dir_component(b"/x/pk/__main__.py"), b"pk");
        assert_eq!(named_component(b"asyncio/"), b"asyncio");
        assert_eq!(named_component(b"/usr/lib/asyncio"), b"asyncio");
        assert_eq!(named_component(b"."), b".");
        assert!(opens_operand(b"/tmp/cx/./p", b"./p"));
        assert!(opens_operand(b"p", b"p"));
        assert!(opens_operand(b"/tmp/cx//./p", b"/tmp/cx//./p"));
        assert!(opens_operand(b"/tmp/cx/../cx/p", b"../cx/p"));
        assert!(!opens_operand(b"/etc/default/ufw", b"/usr/sbin/ufw"));
        assert!(!opens_operand(b"/tmp/cx/xp", b"p"));
        assert!(!opens_operand(b"/tmp/cx/p", b""));
    }

    /// A real thread blocked in a real openat, read the way the agent reads it: a FIFO's
    /// open blocks until a writer comes.
    #[test]
    fn reads_the_path_of_a_blocked_open() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        // Longer than a page, so the string spans pages: the read goes page by page.
        let mut deep = dir.path().to_path_buf();
        while deep.as_os_str().len() < 3000 {
            deep.push("a".repeat(200));
        }
        std::fs::create_dir_all(&deep).unwrap();
        let fifo = deep.join("code-named.py");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let opener_path = fifo.clone();
        let opener = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            std::fs::File::open(&opener_path).unwrap();
        });
        let tid = rx.recv().unwrap();
        let mut asked = Err(Unknown(String::new()));
        for _ in 0..200 {
            asked = asked_path(tid);
            if asked.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        opener.join().unwrap();
        let asked = asked.unwrap().unwrap();
        assert_eq!(asked, fifo.as_os_str().as_bytes());
        assert_eq!(last_component(&asked), b"code-named.py");
    }
}
