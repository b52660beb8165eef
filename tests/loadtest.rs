//! `dialgate loadtest agi` against the real `serve` binary: every call completes with
//! `pong` and the JSON report parses. No timing assertions (measurements live in
//! BENCHMARKS.md).

mod common;

use common::{db::TestDb, ServeProcess};
use serde_json::Value;

/// `dialgate <global> --json loadtest <args>`: its JSON report (panics unless it succeeds).
fn loadtest(global: &[&str], args: &[&str]) -> Value {
    let mut all = global.to_vec();
    all.extend_from_slice(&["--json", "loadtest"]);
    all.extend_from_slice(args);
    serde_json::from_slice(&dialgate_ok(&all, None).stdout).unwrap()
}

#[test]
fn ping_calls_all_pong_and_json_parses() {
    let server = ServeProcess::start(&[], None);
    let target = server.addr.to_string();
    let report = loadtest(
        &[],
        &[
            "agi",
            "--target",
            &target,
            "--script",
            "ping",
            "--calls",
            "200",
            "--concurrency",
            "20",
        ],
    );
    assert_eq!(report["completed"], 200, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["results"]["pong"], 200, "{report}");
    assert!(report["calls_per_s"].as_f64().unwrap() > 0.0);
    let latency = &report["latency"];
    assert!(latency["p50_us"].as_u64().unwrap() <= latency["p99_9_us"].as_u64().unwrap());
}

#[test]
fn held_calls_are_counted() {
    let server = ServeProcess::start(&[], None);
    let target = server.addr.to_string();
    let report = loadtest(
        &[],
        &[
            "agi",
            "--target",
            &target,
            "--calls",
            "30",
            "--concurrency",
            "30",
            "--hold",
            "0.5",
        ],
    );
    assert_eq!(report["results"]["pong"], 30, "{report}");
    assert!(report["peak_held"].as_u64().unwrap() > 0, "{report}");
}

const CALLERS: &str = "+8613900000000-+8613900000019";

#[test]
fn prepared_challenges_are_verified_by_calls() {
    let db = TestDb::sqlite();
    let url = db.url();
    let prepare = |count: &str| {
        loadtest(
            &["--database-url", &url],
            &[
                "prepare-challenges",
                "--count",
                count,
                "--caller-range",
                CALLERS,
                "--to",
                "+861055550100",
            ],
        )
    };
    let prepared = prepare("20");
    assert_eq!(prepared["challenges_created"], 20);
    // Real enrollments: every account has its audit row.
    assert_eq!(prepared["accounts_created"], 20, "{prepared}");
    assert_eq!(db.audit_count("enrollment"), 20);
    let server = ServeProcess::start(
        &["--database-url", &url, "--dialin-number", "+861055550100"],
        None,
    );
    // One call at a time: SQLite write contention is not what this test is about.
    let target = server.addr.to_string();
    let report = loadtest(
        &[],
        &[
            "agi",
            "--target",
            &target,
            "--script",
            "verify",
            "--calls",
            "20",
            "--concurrency",
            "1",
            "--caller-range",
            CALLERS,
            "--to",
            "+861055550100",
        ],
    );
    assert_eq!(report["results"]["verified"], 20, "{report}");
    // A second run reuses the accounts.
    let again = prepare("5");
    assert_eq!(again["accounts_created"], 0, "{again}");
    assert_eq!(again["challenges_created"], 5, "{again}");
    assert_eq!(db.audit_count("enrollment"), 20);
}

#[test]
fn baseline_server_answers_pong() {
    let addr = common::free_port();
    let mut baseline = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["loadtest", "baseline-server", "--listen", &addr.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "baseline never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let target = addr.to_string();
    let report = std::panic::catch_unwind(|| {
        loadtest(
            &[],
            &[
                "agi",
                "--target",
                &target,
                "--calls",
                "100",
                "--concurrency",
                "10",
            ],
        )
    });
    let _ = baseline.kill();
    let _ = baseline.wait();
    let report = report.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_eq!(report["results"]["pong"], 100, "{report}");
}

/// `dialgate` with `args`, `stdin` as its first input line; panics unless it succeeds.
fn dialgate_ok(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(args)
        .env_remove("DIALGATE_CONFIG")
        .env_remove("DIALGATE_DATABASE_URL")
        .env_remove("DIALGATE_DATA_DIR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(line) = stdin {
        writeln!(input, "{line}").unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "dialgate {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn login_flows_all_succeed() {
    let db = TestDb::sqlite();
    let db_arg = db.url();
    // Create the schema first (the accounts are written before the server starts).
    db.migrate();
    let server = ServeProcess::start(
        &[
            "--database-url",
            &db_arg,
            "--dialin-number",
            "+861055550100",
            "--insecure-cookies",
        ],
        None,
    );
    let http = server.http_addr().to_string();
    let agi = server.addr.to_string();
    let report = loadtest(
        &["--database-url", &db_arg],
        &[
            "login",
            "--prepare",
            "--target-http",
            &http,
            "--target-agi",
            &agi,
            "--users",
            "6",
            "--concurrency",
            "3",
            "--caller-range",
            "+8613900000000-+8613900000099",
        ],
    );
    assert_eq!(report["accounts_prepared"], 6, "{report}");
    assert_eq!(db.audit_count("enrollment"), 6);
    assert_eq!(report["completed"], 6, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    for step in ["login", "sse_open", "call", "verified_event", "session"] {
        assert!(
            report["steps"][step]["max_us"].as_u64().unwrap() > 0,
            "{report}"
        );
    }
}

#[test]
fn payments_on_a_temporary_password() {
    const KEY: &str = "00112233445566778899aabbccddeeff";
    const PASSWORD: &str = "loadtest correct horse 42";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pay.sqlite3");
    let db_arg = db.to_string_lossy().into_owned();
    let data = dir.path().join("data");
    let data_arg = data.to_string_lossy().into_owned();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--database-url", &db_arg, "--data-dir", &data_arg];
        all.extend_from_slice(args);
        dialgate_ok(&all, stdin)
    };
    cli(
        &[
            "enroll",
            "--username",
            "payer",
            "--phone",
            "+8613800138000",
            "--name",
            "Payer",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    // 10.00 of balance, 1.00 a payment: ten approved, then insufficient funds.
    cli(
        &[
            "balance",
            "top-up",
            "--username",
            "payer",
            "--amount",
            "10.00",
        ],
        None,
    );
    let issued = cli(
        &[
            "--json",
            "temp-password",
            "issue",
            "--username",
            "payer",
            "--valid-for",
            "1h",
            "--temp-password-key",
            KEY,
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    let issued: Value = serde_json::from_slice(&issued.stdout).unwrap();
    let temp = issued["password"].as_str().unwrap().to_string();
    let server = ServeProcess::start(
        &[
            "--database-url",
            &db_arg,
            "--dialin-number",
            "+861055550100",
            "--insecure-cookies",
            "--temp-password-key",
            KEY,
        ],
        None,
    );
    let http = server.http_addr().to_string();
    let report = loadtest(
        &[],
        &[
            "payments",
            "--target-http",
            &http,
            "--username",
            "payer",
            "--temp-password",
            &temp,
            "--payments",
            "14",
            "--concurrency",
            "4",
            "--amount",
            "100",
        ],
    );
    assert_eq!(report["approved"], 10, "{report}");
    let declined: u64 = report["declined"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(declined, 4, "{report}");
    assert!(report["errors"].as_object().unwrap().is_empty(), "{report}");
}
