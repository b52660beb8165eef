//! Hostile inputs to the enrollment CLI and the text fields (issue 12, items 6 and 10):
//! document paths that never end or block (`/dev/zero`, a FIFO, a directory), CSV
//! document paths that leave the CSV's folder, bidirectional overrides in text fields,
//! and the modes of a fresh SQLite data directory. The real binary where it can be; the
//! store and the gateway in-process where a file must be watched while it is open.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use common::{
    db::{bare_cmd, expect, on_both_backends, stderr, stdout, DataDir, TestDb},
    http::fetch,
    node::Node,
};
use dialgate::store::{DatabaseUrl, OpenOptions, Store};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
const RLO: &str = "\u{202E}";

on_both_backends! {
    scenario_import_paths_stay_in_the_folder => import_paths_sqlite, import_paths_mysql;
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/images")
        .join(name)
}

/// `dialgate enroll` of `username` with `extra` arguments, killed after 20 s at most.
fn enroll(db: &TestDb, username: &str, name: &str, extra: &[&str]) -> Output {
    db.cmd()
        .args(["enroll", "--username", username, "--phone", "13800138000"])
        .args(["--name", name])
        .args(extra)
        .arg("--password-stdin")
        .write_stdin(format!("{PASSWORD}\n"))
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap()
}

#[track_caller]
fn refused(output: &Output, needle: &str) {
    expect(output, 1, needle);
    assert!(stderr(output).contains(needle), "{}", stderr(output));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------
// Document files: bounded reads of regular files only
// ---------------------------------------------------------------------------------------

#[test]
fn enroll_photo_from_dev_zero_is_refused_at_once() {
    let db = TestDb::sqlite();
    let started = Instant::now();
    let out = enroll(&db, "zero", "Zero", &["--photo", "/dev/zero"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    refused(&out, "the photo file /dev/zero is a character device");
    assert_eq!(stdout(&out), "");
}

#[test]
fn enroll_documents_from_a_fifo_or_a_directory_are_refused() {
    let db = TestDb::sqlite();
    let files = db.scratch_dir();
    let fifo = files.path().join("scan.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Opening a FIFO for reading waits for a writer: the old read hung here.
    let out = enroll(&db, "fifo", "Fifo", &["--id-scan", fifo.to_str().unwrap()]);
    refused(&out, "is a FIFO; give a regular file");
    let out = enroll(
        &db,
        "dir",
        "Dir",
        &["--photo", files.path().to_str().unwrap()],
    );
    refused(&out, "is a directory; give a regular file");
    // A sparse 64 MiB file: refused by its size, not read.
    let big = files.path().join("big.png");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = enroll(&db, "big", "Big", &["--photo", big.to_str().unwrap()]);
    refused(&out, "the limit is 8388608 bytes");
    // Nothing was enrolled; a regular photo still is.
    let photo = fixture("photo-1x1.png");
    let out = enroll(&db, "fine", "Fine", &["--photo", photo.to_str().unwrap()]);
    expect(&out, 0, "enrolled fine");
}

// ---------------------------------------------------------------------------------------
// CSV import: document paths stay in the CSV's folder unless allowed
// ---------------------------------------------------------------------------------------

fn scenario_import_paths_stay_in_the_folder(db: &TestDb) {
    let root = db.scratch_dir();
    let folder = root.path().join("batch");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(fixture("photo-1x1.png"), folder.join("photo.png")).unwrap();
    std::fs::copy(fixture("photo-1x1.png"), root.path().join("outside.png")).unwrap();
    std::os::unix::fs::symlink(root.path().join("outside.png"), folder.join("link.png")).unwrap();
    let absolute = root.path().join("outside.png");
    let csv = folder.join("users.csv");
    std::fs::write(
        &csv,
        format!(
            "username,name,phone,password,id_scan,photo\n\
             inside,Inside,13800138001,password-inside,,photo.png\n\
             parent,Parent,13800138002,password-parent,,../outside.png\n\
             absolute,Absolute,13800138003,password-absolute,,{}\n\
             passwd,Passwd,13800138004,password-passwd,/etc/passwd,\n\
             link,Link,13800138005,password-link,,link.png\n",
            absolute.display()
        ),
    )
    .unwrap();
    let import = |extra: &[&str]| {
        db.cmd()
            .arg("import")
            .args(extra)
            .arg(&csv)
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap()
    };
    let out = import(&[]);
    expect(&out, 1, "imported 1 of 5 rows");
    let text = stdout(&out);
    for (line, says) in [
        (
            "line 3 (parent):",
            "\"../outside.png\" leaves the folder by '..'",
        ),
        ("line 4 (absolute):", "is absolute"),
        ("line 5 (passwd):", "\"/etc/passwd\" is absolute"),
        (
            "line 6 (link):",
            "leads out of the folder by a symbolic link",
        ),
    ] {
        let found = text
            .lines()
            .find(|l| l.trim_start().starts_with(line))
            .unwrap_or_else(|| panic!("no {line:?} in the report:\n{text}"));
        assert!(found.contains(says), "{line} should say {says:?}: {found}");
        assert!(found.contains("--allow-outside-paths"), "{found}");
    }
    assert_eq!(db.count("accounts"), 1);

    // With the flag they are read; /etc/passwd is then refused for what it is.
    let out = import(&["--allow-outside-paths"]);
    expect(&out, 1, "imported 3 of 5 rows");
    let text = stdout(&out);
    assert!(
        text.contains("line 5 (passwd): the id_scan file is not a JPEG, PNG or PDF"),
        "{text}"
    );
    assert_eq!(db.count("accounts"), 4);
    assert_eq!(db.count("identity_documents"), 4);
}

// ---------------------------------------------------------------------------------------
// File modes of the SQLite data directory
// ---------------------------------------------------------------------------------------

#[test]
fn a_fresh_data_dir_is_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("new/data");
    let out = bare_cmd()
        .arg("--data-dir")
        .arg(&data)
        .args(["enroll", "--username", "alice", "--phone", "13800138000"])
        .args(["--name", "Alice", "--password-stdin"])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    expect(&out, 0, "enrolled alice");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&root.path().join("new")), 0o700);
    let db = data.join("dialgate.sqlite3");
    assert_eq!(mode(&db), 0o600);

    // An existing database readable by others is restricted when next opened.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bare_cmd()
        .arg("--data-dir")
        .arg(&data)
        .args(["accounts", "list"])
        .output()
        .unwrap();
    expect(&out, 0, "alice");
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn wal_and_shm_of_a_fresh_database_are_private() {
    // The umask a shell usually has: without care the files would be 0644.
    unsafe { libc::umask(0o022) };
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("fresh/db.sqlite3");
    let store = Store::open(&DatabaseUrl::Sqlite(path.clone()), &OpenOptions::default()).unwrap();
    // Migrations wrote; write once more through the writer, then look while it is open.
    let config = dialgate::config::Config::resolve(&dialgate::config::GlobalOptions {
        data_dir: Some(root.path().to_path_buf()),
        database_url: Some(format!("sqlite://{}", path.display())),
        ..Default::default()
    })
    .unwrap();
    let enrollment = dialgate::auth::accounts::Enrollment::prepare(
        "alice",
        PASSWORD,
        "Alice",
        "+8613800138000",
        vec![],
        &dialgate::cli::enroll::rules(&config),
    )
    .unwrap();
    dialgate::auth::accounts::enroll(&store, &enrollment).unwrap();
    assert_eq!(mode(&root.path().join("fresh")), 0o700);
    for file in [
        path.clone(),
        with_suffix(&path, "-wal"),
        with_suffix(&path, "-shm"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);
}

// ---------------------------------------------------------------------------------------
// Text fields: no control characters, no bidirectional overrides
// ---------------------------------------------------------------------------------------

#[test]
fn text_fields_refuse_bidi_overrides_on_the_cli() {
    let db = TestDb::sqlite();
    db.migrate();
    let out = enroll(&db, "eve", &format!("Eve{RLO}gpj.exe"), &[]);
    refused(
        &out,
        "invalid display name: it contains a bidirectional override (U+202E)",
    );
    let out = enroll(&db, "eve", "Eve\u{85}Smith", &[]);
    refused(
        &out,
        "invalid display name: it contains a control character (U+0085)",
    );
    assert_eq!(db.count("accounts"), 0);

    // Scripts that need joiners still pass.
    let out = enroll(&db, "ali", "علی\u{200C}رضا 李", &[]);
    expect(&out, 0, "enrolled ali");

    let out = db
        .cmd()
        .args(["balance", "top-up", "--username", "ali", "--amount", "1.00"])
        .args(["--note", &format!("receipt {RLO}1234")])
        .output()
        .unwrap();
    refused(&out, "the note must be at most 255 characters");
}

/// A gateway on a fresh SQLite data directory with `alice`.
async fn gateway_with_alice() -> (Node, DataDir) {
    let db = DataDir::open(&OpenOptions::default());
    db.enroll("alice", PASSWORD, "Alice", "+8613800138000");
    let node = Node::start(db.store.clone(), |c| c.temp_password_key = vec![9; 32]).await;
    (node, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_password_label_with_a_bidi_override_is_400() {
    let (node, _db) = gateway_with_alice().await;
    let url = node.url.clone();
    let issue = |label: String| {
        let url = url.clone();
        async move {
            let body = json!({ "username": "alice", "password": PASSWORD, "label": label });
            fetch(
                Method::POST,
                &format!("{url}/v1/temp-passwords"),
                &[("content-type", "application/json")],
                body.to_string(),
                Duration::from_secs(30),
            )
            .await
        }
    };
    let reply = issue(format!("cleaner{RLO}")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let body: Value = reply.json();
    assert_eq!(body["error"], "invalid_conditions", "{body}");
    assert!(
        body.to_string()
            .contains("the label contains a bidirectional override (U+202E)"),
        "{body}"
    );
    let reply = issue("cleaner".into()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}
