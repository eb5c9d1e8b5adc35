//! How glibc's dynamic loader (`ld.so`), exec'd directly, reads its command line.
//!
//! `ld.so [OPTION]... PROGRAM [ARG]...` loads and runs PROGRAM inside the loader's own
//! process: the kernel exec'd ld.so, so every layer that recognises interpreters by the
//! identity of the exec'd file sees ld.so, never the interpreter it then runs. The exec
//! gate therefore judges a direct launch of the loader by its options alone (it cannot
//! resolve PROGRAM: the kernel program sees strings, and a name proves nothing).
//!
//! The grammar is glibc's `dl_main` option loop (2.33 to 2.41): options are read while the
//! word starts with `--`; the first other word is the program. `--verify`, `--list`,
//! `--help`, `--version`, `--list-tunables` and `--list-diagnostics` switch the loader into
//! a mode that never runs the program (and no option switches it back), an unknown `--`
//! option makes it print its usage and exit. An unknown option is still refused: a newer
//! glibc may have given it an argument, which this reader would then misread.
//!
//! Written with explicit indices and constant-length comparisons, like
//! [`crate::python_argv`]: the kernel exec gate runs this very code.

use crate::python_argv::bytes_eq;

/// Options after which the loader runs nothing, whatever follows.
const RUNS_NOTHING: [&[u8]; 6] = [
    b"--list",
    b"--verify",
    b"--help",
    b"--version",
    b"--list-tunables",
    b"--list-diagnostics",
];

/// Options without an argument that leave the loader's mode alone.
const FLAGS: [&[u8]; 1] = [b"--inhibit-cache"];

/// Options that take the next word as their argument.
const WITH_ARGUMENT: [&[u8]; 7] = [
    b"--library-path",
    b"--inhibit-rpath",
    b"--audit",
    b"--preload",
    b"--argv0",
    b"--glibc-hwcaps-prepend",
    b"--glibc-hwcaps-mask",
];

/// The environment variable that puts the loader in trace mode (what `ldd` sets): it
/// lists the program's libraries and exits without running it, whatever the value.
pub const TRACE_VARIABLE: &[u8] = b"LD_TRACE_LOADED_OBJECTS";

/// What one word of a loader's command line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderWord {
    /// An option that changes how, not whether, the program runs.
    Option,
    /// The argument of the previous option.
    Argument,
    /// An option after which the loader runs no program.
    RunsNothing,
    /// The program the loader would run.
    Program,
    /// A `--` option this reader does not know.
    Unknown,
}

/// Reads a loader argv (without `argv[0]`) one word at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderReader {
    expect_argument: bool,
}

impl LoaderReader {
    pub const fn new() -> Self {
        LoaderReader {
            expect_argument: false,
        }
    }

    pub fn feed(&mut self, word: &[u8]) -> LoaderWord {
        if self.expect_argument {
            self.expect_argument = false;
            return LoaderWord::Argument;
        }
        if word.len() < 2 || word[0] != b'-' || word[1] != b'-' {
            return LoaderWord::Program;
        }
        if any_eq(word, &RUNS_NOTHING) {
            return LoaderWord::RunsNothing;
        }
        if any_eq(word, &FLAGS) {
            return LoaderWord::Option;
        }
        if any_eq(word, &WITH_ARGUMENT) {
            self.expect_argument = true;
            return LoaderWord::Option;
        }
        LoaderWord::Unknown
    }
}

fn any_eq<const N: usize>(word: &[u8], table: &[&[u8]; N]) -> bool {
    let mut i = 0;
    while i < N {
        if bytes_eq(word, table[i]) {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &[&str]) -> [LoaderWord; 8] {
        let mut reader = LoaderReader::new();
        let mut out = [LoaderWord::Argument; 8];
        for (slot, arg) in out.iter_mut().zip(args) {
            *slot = reader.feed(arg.as_bytes());
        }
        out
    }

    #[test]
    fn options_and_program() {
        use LoaderWord::*;
        assert_eq!(words(&["python3", "-c"])[0], Program);
        assert_eq!(words(&["-c"])[0], Program);
        assert_eq!(words(&[""])[0], Program);
        let w = words(&["--library-path", "--verify", "python3"]);
        assert_eq!(&w[..3], &[Option, Argument, Program]);
        let w = words(&["--inhibit-cache", "--argv0", "x", "--verify"]);
        assert_eq!(&w[..4], &[Option, Option, Argument, RunsNothing]);
        assert_eq!(words(&["--list"])[0], RunsNothing);
        assert_eq!(words(&["--verifyx"])[0], Unknown);
        assert_eq!(words(&["--"])[0], Unknown);
        assert_eq!(words(&["--preload-all"])[0], Unknown);
    }
}
