//! `dialgate loadtest agi` against the real `serve` binary: every call completes with
//! `pong` and the JSON report parses. No timing assertions (measurements live in
//! BENCHMARKS.md).

mod common;

use common::ServeProcess;

#[test]
fn ping_calls_all_pong_and_json_parses() {
    let server = ServeProcess::start(&[], None);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["--json", "loadtest", "agi", "--target"])
        .arg(server.addr.to_string())
        .args(["--script", "ping", "--calls", "200", "--concurrency", "20"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadtest failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
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
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["--json", "loadtest", "agi", "--target"])
        .arg(server.addr.to_string())
        .args(["--calls", "30", "--concurrency", "30", "--hold", "0.5"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["results"]["pong"], 30, "{report}");
    assert!(report["peak_held"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn prepared_challenges_are_verified_by_calls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lt.sqlite3");
    let prepare = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .arg("--database-url")
        .arg(&db)
        .args(["--json", "loadtest", "prepare-challenges", "--count", "20"])
        .args(["--caller-range", "+8613900000000-+8613900000019"])
        .args(["--to", "+861055550100"])
        .output()
        .unwrap();
    assert!(
        prepare.status.success(),
        "{}",
        String::from_utf8_lossy(&prepare.stderr)
    );
    let prepared: serde_json::Value = serde_json::from_slice(&prepare.stdout).unwrap();
    assert_eq!(prepared["challenges_created"], 20);
    let db_arg = db.to_string_lossy().into_owned();
    let server = ServeProcess::start(
        &[
            "--database-url",
            &db_arg,
            "--dialin-number",
            "+861055550100",
        ],
        None,
    );
    // One call at a time: SQLite write contention is not what this test is about.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["--json", "loadtest", "agi", "--target"])
        .arg(server.addr.to_string())
        .args(["--script", "verify", "--calls", "20", "--concurrency", "1"])
        .args(["--caller-range", "+8613900000000-+8613900000019"])
        .args(["--to", "+861055550100"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["results"]["verified"], 20, "{report}");
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
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .args(["--json", "loadtest", "agi", "--target", &addr.to_string()])
        .args(["--calls", "100", "--concurrency", "10"])
        .output()
        .unwrap();
    let _ = baseline.kill();
    let _ = baseline.wait();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["results"]["pong"], 100, "{report}");
}
