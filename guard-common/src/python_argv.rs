//! How a CPython command line asks to be run, from its argv alone.
//!
//! Shared by the kernel exec gate and user space so both read a command line the same way.
//! Works on byte slices without allocation so it stays usable from `no_std` code.

/// What the interpreter will run, as far as its options say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invocation<'a> {
    /// `-c CMD` (also combined, as in `-Ic`): code on the command line.
    pub inline_code: bool,
    /// `-m MOD`: the module name.
    pub module: Option<&'a [u8]>,
    /// The script operand, if any (`-` means standard input).
    pub script: Option<&'a [u8]>,
    /// `-i`: interactive inspection after the script.
    pub inspect: bool,
    /// An option that needs an argument came last with none: CPython refuses to start.
    pub truncated: bool,
}

impl Invocation<'_> {
    /// True when the interpreter reads its program from standard input: `-` as the script,
    /// or no script, no `-c` and no `-m`.
    pub fn reads_stdin(&self) -> bool {
        match self.script {
            Some(script) => script == b"-",
            None => !self.inline_code && self.module.is_none(),
        }
    }

    /// True when the script operand names an inherited descriptor rather than a file:
    /// `/dev/fd/N`, `/dev/stdin`, `/proc/<anything>/fd/N`.
    pub fn script_is_descriptor_link(&self) -> bool {
        match self.script {
            Some(script) => is_descriptor_link(script),
            None => false,
        }
    }
}

/// `/dev/fd/*`, `/dev/std{in,out,err}`, `/proc/*/fd/*` (also `/proc/self/fd`, `/proc/thread-self/fd`).
pub fn is_descriptor_link(path: &[u8]) -> bool {
    if path.starts_with(b"/dev/fd/")
        || path == b"/dev/stdin"
        || path == b"/dev/stdout"
        || path == b"/dev/stderr"
    {
        return true;
    }
    if let Some(rest) = path.strip_prefix(b"/proc/") {
        // /proc/<pid|self|thread-self>/fd/<n>  or /proc/<pid>/task/<tid>/fd/<n>
        let mut saw_fd = false;
        for component in rest.split(|b| *b == b'/') {
            if saw_fd {
                return true;
            }
            if component == b"fd" {
                saw_fd = true;
            }
        }
    }
    false
}

/// CPython options that take an argument (attached, as in `-Wd`, or as the next word).
const SHORT_WITH_ARGUMENT: &[u8] = b"cmWX";
/// Long options that take an argument (`--opt VALUE` or `--opt=VALUE`).
const LONG_WITH_ARGUMENT: &[&[u8]] = &[b"--check-hash-based-pycs"];

/// Reads a CPython argv (without `argv[0]`). Everything after the script operand, `-c CMD`
/// or `-m MOD` belongs to the program and is not interpreted.
pub fn parse<'a, I>(args: I) -> Invocation<'a>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut invocation = Invocation::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == b"--" {
            invocation.script = args.next();
            return invocation;
        }
        if arg == b"-" || arg.first() != Some(&b'-') {
            invocation.script = Some(arg);
            return invocation;
        }
        if arg.starts_with(b"--") {
            let takes_argument = LONG_WITH_ARGUMENT.contains(&arg);
            if takes_argument && args.next().is_none() {
                invocation.truncated = true;
            }
            continue;
        }
        // A cluster of short options: "-Ic", "-Esc", "-Wdefault", "-mjson".
        let cluster = &arg[1..];
        for (i, option) in cluster.iter().enumerate() {
            if *option == b'i' {
                invocation.inspect = true;
            }
            if !SHORT_WITH_ARGUMENT.contains(option) {
                continue;
            }
            let attached = &cluster[i + 1..];
            let value = if attached.is_empty() {
                match args.next() {
                    Some(next) => Some(next),
                    None => {
                        invocation.truncated = true;
                        None
                    }
                }
            } else {
                Some(attached)
            };
            match option {
                b'c' => {
                    invocation.inline_code = true;
                    return invocation;
                }
                b'm' => {
                    invocation.module = value;
                    return invocation;
                }
                _ => break, // -W / -X: the rest of the cluster was their argument
            }
        }
    }
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Invocation<'static> {
        let owned: &'static [&'static [u8]] = Box::leak(
            args.iter()
                .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
                .collect::<Vec<&'static [u8]>>()
                .into_boxed_slice(),
        );
        parse(owned.iter().copied())
    }

    extern crate std;
    use std::boxed::Box;
    use std::vec::Vec;

    #[test]
    fn inline_code_in_every_spelling() {
        assert!(run(&["-c", "print(1)"]).inline_code);
        assert!(run(&["-Ic", "print(1)"]).inline_code);
        assert!(run(&["-E", "-X", "dev", "-c", "x"]).inline_code);
        assert!(run(&["-cprint(1)"]).inline_code);
        assert!(run(&["-IsEc", "x"]).inline_code);
        assert!(run(&["-c"]).inline_code);
    }

    #[test]
    fn option_arguments_are_not_options() {
        // "-W c" : 'c' is -W's argument, not -c
        let inv = run(&["-W", "c", "script.py"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"script.py"[..]));
        let inv = run(&["-Wc", "script.py"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"script.py"[..]));
        let inv = run(&["-X", "-c", "s.py"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"s.py"[..]));
        let inv = run(&["--check-hash-based-pycs", "always", "s.py"]);
        assert_eq!(inv.script, Some(&b"s.py"[..]));
    }

    #[test]
    fn arguments_after_the_script_belong_to_it() {
        let inv = run(&["signed.py", "arg1", "-c", "x"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.script, Some(&b"signed.py"[..]));
        let inv = run(&["-m", "mod", "-c", "x"]);
        assert!(!inv.inline_code);
        assert_eq!(inv.module, Some(&b"mod"[..]));
        let inv = run(&["-mjson.tool"]);
        assert_eq!(inv.module, Some(&b"json.tool"[..]));
    }

    #[test]
    fn stdin_forms() {
        assert!(run(&[]).reads_stdin());
        assert!(run(&["-"]).reads_stdin());
        assert!(run(&["-I", "-"]).reads_stdin());
        assert!(run(&["-i"]).reads_stdin());
        assert!(!run(&["s.py"]).reads_stdin());
        assert!(!run(&["-m", "x"]).reads_stdin());
        assert!(!run(&["-c", "x"]).reads_stdin());
        assert!(run(&["-i", "s.py"]).inspect);
        assert!(run(&["-Ei", "s.py"]).inspect);
        assert!(!run(&["s.py", "-i"]).inspect);
        assert_eq!(run(&["--", "-c"]).script, Some(&b"-c"[..]));
    }

    #[test]
    fn descriptor_links() {
        for link in [
            "/dev/fd/3",
            "/dev/stdin",
            "/proc/self/fd/0",
            "/proc/123/fd/4",
            "/proc/thread-self/fd/9",
            "/proc/1/task/1/fd/3",
        ] {
            assert!(is_descriptor_link(link.as_bytes()), "{link}");
        }
        for file in [
            "/dev/fdx",
            "/proc/self/fdinfo/3",
            "/proc/cpuinfo",
            "x.py",
            "/proc/self/fd",
        ] {
            assert!(!is_descriptor_link(file.as_bytes()), "{file}");
        }
        assert!(run(&["/dev/fd/63"]).script_is_descriptor_link());
    }
}
