//! `guard status` as metrics, read by a real parser: prometheus_client's (Debian's
//! python3-prometheus-client, installed by `cargo xtask setup`), the OpenMetrics parser a
//! scraper uses and the Prometheus text parser, on the file the agent writes for
//! node_exporter's textfile collector.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guard_tests::*;

/// Parses `text` with prometheus_client's `parser` (`openmetrics` or `prometheus`) and
/// returns `name{label=value,...} value` lines, sorted labels, one per sample.
fn parse(metrics: &str, parser: &str) -> Vec<String> {
    let module = match parser {
        "openmetrics" => "prometheus_client.openmetrics.parser",
        _ => "prometheus_client.parser",
    };
    let script = format!(
        "import sys\n\
         from {module} import text_string_to_metric_families\n\
         for family in text_string_to_metric_families(sys.stdin.read()):\n\
         \x20   for s in family.samples:\n\
         \x20       labels = ','.join(f'{{k}}={{v}}' for k, v in sorted(s.labels.items()))\n\
         \x20       print(f'{{family.type}} {{s.name}}{{{{{{labels}}}}}} {{s.value}}')\n"
    );
    let mut child = Command::new(PYTHON)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let out = wait_with_timeout(child, Duration::from_secs(30)).expect("parser finished");
    assert!(
        out.status.success(),
        "prometheus_client's {parser} parser refused it: {}\n{metrics}",
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(str::to_string).collect()
}

fn value_of(samples: &[String], prefix: &str) -> f64 {
    let line = samples
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}:\n{}", samples.join("\n")));
    line.rsplit(' ').next().unwrap().parse().expect("value")
}

fn exercise(fs: &Tmpfs) {
    let app = fs.path().join("app");
    assert!(python(&app, &["main.py"]).status.success());
    assert!(!python(&app, &["bad.py"]).status.success());
}

#[test]
fn openmetrics_status_is_read_by_a_real_parser() {
    let fs = Tmpfs::new();
    fs.signed("app/main.py", "print('main ran')\n");
    fs.write("app/bad.py", "print('bad ran')\n");
    let agent = Agent::start(fs.path(), &[]);
    exercise(&fs);
    agent.wait_for_status("denies", 1);

    let out = guard(&[
        &"status",
        &"--format",
        &"openmetrics",
        &"--socket",
        &agent.socket,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let samples = parse(&stdout(&out), "openmetrics");
    let deny = value_of(
        &samples,
        "counter guard_decisions_total{decision=deny,mode=enforce,rule=valid-signature}",
    );
    assert!(deny >= 1.0, "{}", samples.join("\n"));
    let allow = value_of(
        &samples,
        "counter guard_decisions_total{decision=allow,mode=enforce,rule=valid-signature}",
    );
    assert!(allow >= 1.0, "{}", samples.join("\n"));
    // Every answer is in the histogram, and its +Inf bucket is its count.
    let count = value_of(
        &samples,
        "histogram guard_answer_latency_seconds_count{answers=all}",
    );
    let inf = value_of(
        &samples,
        "histogram guard_answer_latency_seconds_bucket{answers=all,le=+Inf}",
    );
    assert!(count >= 2.0 && count == inf, "{}", samples.join("\n"));
    assert_eq!(
        value_of(&samples, "gauge guard_layer_up{layer=fanotify}"),
        1.0
    );
    assert_eq!(value_of(&samples, "gauge guard_audit_writable{}"), 1.0);
    assert!(
        value_of(
            &samples,
            "counter guard_audit_records_total{outcome=written}"
        ) >= 2.0
    );
    assert!(
        value_of(
            &samples,
            "info guard_agent_info{backend=fanotify,mode=enforce"
        ) == 1.0
    );
}

#[test]
fn the_agent_writes_a_textfile_node_exporter_reads() {
    let fs = Tmpfs::new();
    fs.signed("app/main.py", "print('main ran')\n");
    fs.write("app/bad.py", "print('bad ran')\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("guard.prom");
    let agent = Agent::start(
        fs.path(),
        &[
            "--metrics-file",
            file.to_str().unwrap(),
            "--metrics-interval",
            "1",
        ],
    );
    exercise(&fs);
    agent.wait_for_status("denies", 1);
    // Written atomically: whenever it is read, it parses, and it catches up within an
    // interval or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.is_empty() {
            let samples = parse(&text, "prometheus");
            let denies = samples.iter().find(|l| {
                l.starts_with(
                    "counter guard_decisions_total{decision=deny,mode=enforce,rule=valid-signature}",
                )
            });
            if denies.is_some() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no deny in {}:\n{text}\n{}",
            file.display(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
