//! The help every operator reads: every subcommand's options and arguments have a
//! description, in the rendered `guard help <subcommand>` output itself.

use guard_tests::*;

/// Names listed in the "Commands:" section of a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    section(help, "Commands:")
        .iter()
        .filter_map(|(item, _)| item.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect()
}

/// Items of a help section: the item's own line and whether it carries a description (on the
/// same line after the column gap, or on the next, more indented line).
fn section(help: &str, title: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = help.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == title) else {
        return Vec::new();
    };
    let mut items = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if line.trim().is_empty() || !line.starts_with(' ') {
            // A blank line ends a section in short help; a new title ends it in any case.
            if !line.starts_with(' ') && !line.trim().is_empty() {
                break;
            }
            continue;
        }
        // Items start at column 2 (`  -x, --long`, `  <ARG>`, `  name` for commands) or 6
        // (`      --long` without a short form); deeper lines are descriptions.
        let indent = line.len() - line.trim_start().len();
        let item = line.trim();
        let is_item = if title == "Commands:" {
            indent == 2
        } else {
            indent <= 6 && item.starts_with(['-', '<', '['])
        };
        if !is_item {
            continue;
        }
        let inline = item.contains("  ");
        let next_line = lines.get(i + 1).is_some_and(|next| {
            next.len() - next.trim_start().len() > indent && !next.trim().is_empty()
        });
        items.push((item.to_string(), inline || next_line));
    }
    items
}

fn help_of(path: &[&str]) -> String {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"help"];
    for part in path {
        args.push(part);
    }
    let out = guard(&args);
    assert_no_panic(&out);
    assert!(
        out.status.success(),
        "guard help {path:?}: {}",
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn every_subcommand_option_and_argument_has_a_description() {
    let top = help_of(&[]);
    let mut commands: Vec<Vec<String>> = subcommands(&top).into_iter().map(|c| vec![c]).collect();
    for expected in [
        "explain", "policy", "run", "status", "reload", "sign", "verify", "keygen",
    ] {
        assert!(
            commands.iter().any(|c| c[0] == expected),
            "{expected} missing from guard help:\n{top}"
        );
    }
    assert!(
        !top.contains("generate-"),
        "hidden generators are listed in help:\n{top}"
    );
    let mut checked = 0;
    while let Some(path) = commands.pop() {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let help = help_of(&parts);
        // Nested subcommands (guard policy check...).
        for sub in subcommands(&help) {
            let mut nested = path.clone();
            nested.push(sub);
            commands.push(nested);
        }
        for title in ["Options:", "Arguments:"] {
            for (item, described) in section(&help, title) {
                assert!(
                    described,
                    "guard {}: {item:?} has no description:\n{help}",
                    parts.join(" ")
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} options seen: is the parser right?"
    );
}

#[test]
fn the_help_parser_sees_an_undocumented_option() {
    let help = "Usage: guard x\n\nOptions:\n      --documented <V>\n          Says what it does\n\n      --bare\n\n  -h, --help\n          Print help\n";
    let items = section(help, "Options:");
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items.iter().filter(|(_, described)| !described).count(), 1);
    assert!(items[1].0.contains("--bare") && !items[1].1);
}
