//! A command whose stdout is closed early (`dialgate accounts list | head -1`) ends
//! quietly: exit 0 or the SIGPIPE status a Unix filter dies with, never a panic.

mod common;

use std::{os::unix::process::ExitStatusExt, process::Stdio};

use common::db::TestDb;

/// Runs `args` with a stdout pipe whose reading end is already closed, so the first write
/// meets EPIPE however small the output is.
fn with_closed_stdout(db: &TestDb, args: &[&str]) {
    let data = db.scratch_dir();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    // std's Command: assert_cmd's cannot take a ready-made stdout.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dialgate"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--database-url")
        .arg(db.url())
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run dialgate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{args:?} panicked on a closed stdout: {stderr}"
    );
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{args:?} with a closed stdout: {:?}, stderr: {stderr}",
        out.status
    );
}

#[test]
fn printing_commands_end_quietly_on_a_closed_stdout() {
    let db = TestDb::sqlite();
    db.migrate();
    db.enroll("alice", "+8613800138000", "Alice", "correct horse battery");
    with_closed_stdout(&db, &["accounts", "list"]);
    with_closed_stdout(
        &db,
        &["balance", "top-up", "--username", "alice", "--amount", "1"],
    );
    with_closed_stdout(&db, &["--json", "balance", "show", "--username", "alice"]);
    // The top-up happened although its confirmation could not be printed.
    let shown = db
        .cmd()
        .args(["--json", "balance", "show", "--username", "alice"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["balance"], 100);
}
