//! The account commands (`enroll`, `accounts`, `import`, `migrate`) as a user runs them:
//! the real binary against a real database, checked by exit code, what it prints
//! (text and `--json`) and which rows it left behind.
//!
//! Every scenario is written once and runs on SQLite and on MariaDB/MySQL. The MySQL
//! tests need the server from `DIALGATE_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`) and fail, never skip, without it.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Output, Stdio},
};

use common::db::{dialgate_command, expect, on_both_backends, stderr, stdout, TestDb};
use dialgate::store::schema::accounts;
use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

on_both_backends! {
    scenario_enroll_with_documents => enroll_with_documents_sqlite, enroll_with_documents_mysql;
    scenario_duplicate_username => duplicate_username_sqlite, duplicate_username_mysql;
    scenario_concurrent_enrollment => concurrent_enrollment_sqlite, concurrent_enrollment_mysql;
    scenario_invalid_enrollments => invalid_enrollments_sqlite, invalid_enrollments_mysql;
    scenario_manage_account => manage_account_sqlite, manage_account_mysql;
    scenario_import_csv => import_csv_sqlite, import_csv_mysql;
    scenario_migrate => migrate_sqlite, migrate_mysql;
    scenario_concurrent_first_start => concurrent_first_start_sqlite, concurrent_first_start_mysql;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const PASSWORD: &str = "correct horse battery";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/images")
        .join(name)
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A user error: exit 1 and `needle` on stderr, nothing on stdout.
#[track_caller]
fn expect_user_error(output: &Output, needle: &str) {
    expect(output, 1, needle);
    assert!(
        stderr(output).contains(needle),
        "the message belongs on stderr: {}",
        stderr(output)
    );
    assert_eq!(stdout(output), "", "nothing on stdout for a failed command");
}

/// `dialgate [global...] enroll --username U --phone P --name N [extra...] --password-stdin`.
fn enroll(
    db: &TestDb,
    global: &[&str],
    username: &str,
    phone: &str,
    extra: &[&str],
    password: &str,
) -> Output {
    db.cmd()
        .args(global)
        .args(["enroll", "--username", username, "--phone", phone])
        .args(["--name", &format!("{username} Example")])
        .args(extra)
        .arg("--password-stdin")
        .write_stdin(format!("{password}\n"))
        .output()
        .unwrap()
}

/// Enrolls `username` (phone 13800138000) with an ID scan and a photo.
fn enroll_with_documents(db: &TestDb, username: &str, id_scan: &Path, photo: &Path) -> Output {
    let documents = [
        "--id-scan",
        id_scan.to_str().unwrap(),
        "--photo",
        photo.to_str().unwrap(),
    ];
    enroll(db, &[], username, "13800138000", &documents, PASSWORD)
}

/// Enrolls a user with no documents and checks it worked.
fn enroll_ok(db: &TestDb, username: &str, phone: &str) {
    let out = enroll(db, &[], username, phone, &[], PASSWORD);
    expect(&out, 0, "enrolled");
}

fn run(db: &TestDb, args: &[&str]) -> Output {
    db.cmd().args(args).output().unwrap()
}

/// `--json <args>`, which must succeed, parsed.
fn json(db: &TestDb, args: &[&str]) -> Value {
    json_expect(db, args, 0, "")
}

/// `--json <args>`, which must exit with `code` and say `needle`, parsed.
fn json_expect(db: &TestDb, args: &[&str], code: i32, needle: &str) -> Value {
    let out = db.cmd().arg("--json").args(args).output().unwrap();
    expect(&out, code, needle);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json {args:?} printed invalid JSON ({e}):\n{}",
            stdout(&out)
        )
    })
}

/// Writes `contents` to `dir/name`; the path, for the command line.
fn write_file(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_string()
}

fn show_json(db: &TestDb, username: &str) -> Value {
    json(db, &["accounts", "show", username])
}

/// `{"kind", "media_type", "size_bytes", "sha256"}` as a document summary should read.
fn document(kind: &str, media_type: &str, path: &Path) -> Value {
    serde_json::json!({
        "kind": kind,
        "media_type": media_type,
        "size_bytes": std::fs::metadata(path).unwrap().len(),
        "sha256": sha256_of(path),
    })
}

/// An account (as `--json accounts list` or `show` prints it) has this one phone and
/// these document summaries.
#[track_caller]
fn assert_phone_and_documents(account: &Value, phone: &str, documents: &[Value]) {
    assert_eq!(account["phones"], serde_json::json!([phone]), "{account}");
    assert_eq!(
        account["documents"],
        Value::Array(documents.to_vec()),
        "{account}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Enrollment with documents; phone numbers normalised to E.164
// ---------------------------------------------------------------------------------------

fn scenario_enroll_with_documents(db: &TestDb) {
    let pdf = fixture("id-scan.pdf");
    let jpeg = fixture("id-scan-1x1.jpg");
    let png = fixture("photo-1x1.png");

    // National form in the default region (CN).
    let out = enroll_with_documents(db, "Alice", &pdf, &png);
    expect(&out, 0, "enrolled alice (Alice Example), active");
    let text = stdout(&out);
    assert!(text.contains("phone: +8613800138000"), "{text}");
    assert!(
        text.contains(&format!(
            "id_scan: application/pdf, {} bytes, sha256 {}",
            std::fs::metadata(&pdf).unwrap().len(),
            sha256_of(&pdf)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "photo: image/png, 69 bytes, sha256 {}",
            sha256_of(&png)
        )),
        "{text}"
    );

    // National US form with --default-region, JSON output.
    let out = db
        .cmd()
        .args(["--json", "--default-region", "US", "enroll"])
        .args(["--username", "bob", "--name", "Bob Example"])
        .args(["--phone", "(201) 555-0123"])
        .args(["--id-scan", jpeg.to_str().unwrap()])
        .args(["--photo", png.to_str().unwrap()])
        .arg("--password-stdin")
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    expect(&out, 0, "");
    let bob: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bob["username"], "bob");
    assert_eq!(bob["phones"], serde_json::json!(["+12015550123"]));

    // `accounts show` in text.
    let out = run(db, &["accounts", "show", "ALICE"]);
    expect(&out, 0, "alice (Alice Example), active");
    assert!(stdout(&out).contains("+8613800138000"), "{}", stdout(&out));

    // `--json accounts list`: both, sorted by username, documents sorted by kind.
    let list = json(db, &["accounts", "list"]);
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 2, "{list:?}");
    let (alice, bob) = (&list[0], &list[1]);
    assert_eq!(alice["display_name"], "Alice Example");
    assert_eq!(alice["status"], "active");
    for (account, username, phone, id_scan) in [
        (alice, "alice", "+8613800138000", ("application/pdf", &pdf)),
        (bob, "bob", "+12015550123", ("image/jpeg", &jpeg)),
    ] {
        assert_eq!(account["username"], username);
        let (scan_type, scan) = id_scan;
        let documents = [
            document("id_scan", scan_type, scan),
            document("photo", "image/png", &png),
        ];
        assert_phone_and_documents(account, phone, &documents);
    }
    assert!(alice["id"].as_i64().unwrap() != bob["id"].as_i64().unwrap());
    assert!(alice["created_at_ms"].as_i64().unwrap() > 1_600_000_000_000);

    // The stored bytes are the file's bytes.
    assert_eq!(db.counts(), [2, 2, 4, 2]);
    assert_eq!(
        db.query_i64("SELECT SUM(size_bytes) AS n FROM identity_documents"),
        db.query_i64("SELECT SUM(LENGTH(content)) AS n FROM identity_documents"),
    );
    assert_eq!(db.audit_count("enrollment"), 2);
}

// ---------------------------------------------------------------------------------------
// 2. Duplicate usernames, also differing only in case
// ---------------------------------------------------------------------------------------

fn scenario_duplicate_username(db: &TestDb) {
    let png = fixture("photo-1x1.png");
    enroll_ok(db, "carol", "13800138000");
    let before = db.counts();
    assert_eq!(before, [1, 1, 0, 1]);

    for username in ["carol", "Carol", "CAROL", "  carol  "] {
        let out = enroll(
            db,
            &[],
            username,
            "13900139000",
            &["--photo", png.to_str().unwrap()],
            "another password",
        );
        expect_user_error(&out, "already enrolled");
        assert!(stderr(&out).contains("\"carol\""), "{}", stderr(&out));
        assert_eq!(db.counts(), before, "nothing new written for {username:?}");
    }
    let carol = show_json(db, "carol");
    assert_phone_and_documents(&carol, "+8613800138000", &[]);
}

// ---------------------------------------------------------------------------------------
// 3. Two enrollments of one username at the same time
// ---------------------------------------------------------------------------------------

/// Starts `dialgate enroll` as its own process, the password already on its stdin.
fn spawn_enroll(db: &TestDb, username: &str, phone: &str) -> std::process::Child {
    let mut child = dialgate_command()
        .args([
            "--database-url",
            &db.url(),
            "enroll",
            "--username",
            username,
        ])
        .args(["--name", "Concurrent", "--phone", phone, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    child
}

/// Several nodes or CLI runs starting at once on a fresh database: one migrates, the
/// others wait for it and find nothing pending.
fn scenario_concurrent_first_start(db: &TestDb) {
    let children: Vec<_> = (0..4)
        .map(|i| spawn_enroll(db, &format!("user{i}"), &format!("1380013800{i}")))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    assert_eq!(db.count("accounts"), 4);
}

fn scenario_concurrent_enrollment(db: &TestDb) {
    // Operators migrate first; this scenario is about the username race, not about two
    // processes migrating a fresh database at once.
    db.migrate();
    let children = [
        spawn_enroll(db, "dave", "13800138000"),
        spawn_enroll(db, "dave", "13900139000"),
    ];
    let outputs = children.map(|c| c.wait_with_output().unwrap());
    let codes: Vec<_> = outputs.iter().map(|o| o.status.code()).collect();
    let report = || {
        outputs
            .iter()
            .map(|o| format!("{:?}\n{}{}", o.status, stdout(o), stderr(o)))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let winner = outputs
        .iter()
        .filter(|o| o.status.code() == Some(0))
        .count();
    assert_eq!(
        winner,
        1,
        "exactly one enrollment succeeds: {codes:?}\n{}",
        report()
    );
    let loser = outputs.iter().find(|o| o.status.code() != Some(0)).unwrap();
    expect_user_error(loser, "already enrolled");
    assert_eq!(db.count("accounts"), 1);
    assert_eq!(db.count("phones"), 1);
    assert_eq!(db.audit_count("enrollment"), 1);
    // The winner's phone is the one stored.
    let phone = show_json(db, "dave")["phones"][0]
        .as_str()
        .unwrap()
        .to_string();
    let winner = outputs.iter().position(|o| o.status.code() == Some(0));
    let expected = ["+8613800138000", "+8613900139000"][winner.unwrap()];
    assert_eq!(phone, expected);
}

// ---------------------------------------------------------------------------------------
// 4. Invalid input: refused with a message, nothing written
// ---------------------------------------------------------------------------------------

fn scenario_invalid_enrollments(db: &TestDb) {
    db.migrate();
    let gif = fixture("not-an-image.gif");
    let big_png = fixture("photo-2000-bytes.png");
    assert_eq!(std::fs::metadata(&big_png).unwrap().len(), 2000);
    let files = db.scratch_dir();
    let config = files.path().join("dialgate.toml");
    std::fs::write(&config, "max_document_bytes = 1000\n").unwrap();
    let missing = files.path().join("no-such-scan.pdf");

    struct Case<'a> {
        what: &'a str,
        global: Vec<&'a str>,
        username: &'a str,
        phone: &'a str,
        extra: Vec<&'a str>,
        password: &'a str,
        says: &'a str,
    }
    let case = |what, username, phone, password, says| Case {
        what,
        global: vec![],
        username,
        phone,
        extra: vec![],
        password,
        says,
    };
    let cases = [
        case(
            "too short a phone number",
            "erin",
            "12",
            PASSWORD,
            "\"12\" is not a valid phone number for region CN",
        ),
        case(
            "letters for a phone number",
            "erin",
            "abc",
            PASSWORD,
            "\"abc\" is not a phone number",
        ),
        Case {
            extra: vec!["--id-scan", gif.to_str().unwrap()],
            ..case(
                "a GIF ID scan",
                "erin",
                "13800138000",
                PASSWORD,
                "the id_scan file is not a JPEG, PNG or PDF",
            )
        },
        Case {
            extra: vec!["--photo", gif.to_str().unwrap()],
            ..case(
                "a GIF photo",
                "erin",
                "13800138000",
                PASSWORD,
                "the photo file is not a JPEG or PNG",
            )
        },
        Case {
            global: vec!["--config", config.to_str().unwrap()],
            extra: vec!["--photo", big_png.to_str().unwrap()],
            ..case(
                "a photo over max_document_bytes",
                "erin",
                "13800138000",
                PASSWORD,
                "the photo file is 2000 bytes; the limit is 1000 bytes",
            )
        },
        case(
            "a 7-character password equal to the username",
            "erin123",
            "13800138000",
            "erin123",
            "the password is too short: use at least 8 characters",
        ),
        case(
            "a password equal to the username (other case)",
            "erin1234",
            "13800138000",
            "ERIN1234",
            "the password must not be the username",
        ),
        case(
            "an empty password",
            "erin",
            "13800138000",
            "",
            "no password on stdin",
        ),
        case(
            "an invalid username",
            "erin smith",
            "13800138000",
            PASSWORD,
            "invalid username \"erin smith\"",
        ),
        Case {
            extra: vec!["--id-scan", missing.to_str().unwrap()],
            ..case(
                "a missing ID scan file",
                "erin",
                "13800138000",
                PASSWORD,
                "cannot read the id_scan file",
            )
        },
    ];
    for c in &cases {
        let out = enroll(db, &c.global, c.username, c.phone, &c.extra, c.password);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: expected exit 1\nstdout:\n{}\nstderr:\n{}",
            c.what,
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(c.says),
            "{}: expected {:?} in stderr:\n{}",
            c.what,
            c.says,
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "{}", c.what);
        assert_eq!(db.counts(), [0, 0, 0, 0], "{}: nothing written", c.what);
    }
    // The missing file is named, with the OS's reason.
    let out = enroll(
        db,
        &[],
        "erin",
        "13800138000",
        &["--id-scan", missing.to_str().unwrap()],
        PASSWORD,
    );
    let err = stderr(&out);
    assert!(err.contains("no-such-scan.pdf"), "{err}");
    assert!(err.contains("No such file"), "{err}");
    // The same enrollment, fixed, goes through.
    let png = fixture("photo-1x1.png");
    let out = enroll(
        db,
        &["--config", config.to_str().unwrap()],
        "erin",
        "13800138000",
        &["--photo", png.to_str().unwrap()],
        PASSWORD,
    );
    expect(&out, 0, "enrolled erin");
    assert_eq!(db.counts(), [1, 1, 1, 1]);
}

// ---------------------------------------------------------------------------------------
// 5. disable, enable, set-phone, set-password, delete
// ---------------------------------------------------------------------------------------

fn scenario_manage_account(db: &TestDb) {
    let (pdf, png) = (fixture("id-scan.pdf"), fixture("photo-1x1.png"));
    let out = enroll_with_documents(db, "frank", &pdf, &png);
    expect(&out, 0, "enrolled frank");
    enroll_ok(db, "grace", "13900139000");
    assert_eq!(db.counts(), [2, 2, 2, 2]);

    let out = run(db, &["accounts", "disable", "Frank"]);
    expect(&out, 0, "frank (frank Example), disabled");
    assert_eq!(show_json(db, "frank")["status"], "disabled");
    assert!(stdout(&run(db, &["accounts", "show", "frank"])).contains("disabled"));
    assert_eq!(show_json(db, "grace")["status"], "active", "only frank");

    let out = run(db, &["accounts", "enable", "frank"]);
    expect(&out, 0, "frank (frank Example), active");
    assert_eq!(show_json(db, "frank")["status"], "active");

    // A new phone replaces the old one; international form works in any region.
    let out = run(db, &["accounts", "set-phone", "frank", "+1 201-555-0123"]);
    expect(&out, 0, "phone: +12015550123");
    assert_eq!(
        show_json(db, "frank")["phones"],
        serde_json::json!(["+12015550123"])
    );
    assert_eq!(db.count("phones"), 2);
    let out = run(db, &["accounts", "set-phone", "frank", "12"]);
    expect_user_error(&out, "not a valid phone number");
    assert_eq!(
        show_json(db, "frank")["phones"],
        serde_json::json!(["+12015550123"])
    );

    // A new password, read from stdin; the stored hash verifies it.
    let hash_of = |username: &str| -> String {
        let store = db.store();
        let mut conn = store.conn().unwrap();
        accounts::table
            .filter(accounts::username.eq(username))
            .select(accounts::password_hash)
            .first(&mut *conn)
            .unwrap()
    };
    let old_hash = hash_of("frank");
    assert!(dialgate::auth::passwords::verify(PASSWORD, &old_hash));
    let set_password = |password: &str| {
        db.cmd()
            .args(["accounts", "set-password", "frank", "--password-stdin"])
            .write_stdin(format!("{password}\n"))
            .output()
            .unwrap()
    };
    let out = set_password("a brand new secret");
    expect(&out, 0, "frank (frank Example), active");
    let new_hash = hash_of("frank");
    assert!(new_hash.starts_with("$argon2id$"), "{new_hash}");
    assert!(dialgate::auth::passwords::verify(
        "a brand new secret",
        &new_hash
    ));
    assert!(!dialgate::auth::passwords::verify(PASSWORD, &new_hash));
    // A weak one is refused and changes nothing.
    let out = set_password("FRANK");
    expect_user_error(&out, "the password is too short");
    assert_eq!(hash_of("frank"), new_hash);

    // Unknown accounts are a user error for every action.
    for args in [
        vec!["accounts", "show", "nobody"],
        vec!["accounts", "disable", "nobody"],
        vec!["accounts", "enable", "nobody"],
        vec!["accounts", "set-phone", "nobody", "13800138000"],
        vec!["accounts", "delete", "nobody"],
    ] {
        expect_user_error(&run(db, &args), "no account named \"nobody\"");
    }

    for (kind, n) in [
        ("enrollment", 2),
        ("account_disabled", 1),
        ("account_enabled", 1),
        ("phone_changed", 1),
        ("password_changed", 1),
        ("account_deleted", 0),
    ] {
        assert_eq!(db.audit_count(kind), n, "{kind} audit events");
    }

    // Delete: the account, its phone and documents go; the audit trail stays.
    let out = db
        .cmd()
        .args(["--json", "accounts", "delete", "FRANK"])
        .output()
        .unwrap();
    expect(&out, 0, "");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report, serde_json::json!({ "deleted": "frank" }));
    assert_eq!(db.count("accounts"), 1);
    assert_eq!(db.count("phones"), 1, "grace's phone stays");
    assert_eq!(db.count("identity_documents"), 0);
    assert_eq!(
        db.query_i64(
            "SELECT COUNT(*) AS n FROM phones WHERE account_id NOT IN (SELECT id FROM accounts)"
        ),
        0
    );
    assert_eq!(db.audit_count("enrollment"), 2);
    assert_eq!(db.audit_count("account_deleted"), 1);
    assert_eq!(
        db.query_i64(
            "SELECT COUNT(*) AS n FROM audit_events \
             WHERE kind = 'account_deleted' AND username = 'frank'"
        ),
        1
    );
    expect_user_error(&run(db, &["accounts", "show", "frank"]), "no account named");
    expect_user_error(
        &run(db, &["accounts", "delete", "frank"]),
        "no account named",
    );
    let out = run(db, &["accounts", "delete", "grace"]);
    expect(&out, 0, "deleted grace with its phones and documents");
    assert_eq!(db.counts()[..3], [0, 0, 0]);
    expect(&run(db, &["accounts", "list"]), 0, "no accounts enrolled");

    // The name is free again.
    enroll_ok(db, "frank", "13800138000");
    assert_eq!(show_json(db, "frank")["documents"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------------------
// 6. CSV import
// ---------------------------------------------------------------------------------------

fn scenario_import_csv(db: &TestDb) {
    let files = db.scratch_dir();
    let dir = files.path();
    std::fs::copy(fixture("id-scan.pdf"), dir.join("id.pdf")).unwrap();
    std::fs::copy(fixture("id-scan-1x1.jpg"), dir.join("id.jpg")).unwrap();
    std::fs::copy(fixture("photo-1x1.png"), dir.join("photo.png")).unwrap();
    // Already enrolled before the import: its row must be refused.
    enroll_ok(db, "erin", "13800138009");

    let csv = write_file(
        dir,
        "users.csv",
        "username,name,phone,password,id_scan,photo\n\
         ann,Ann Anders,13800138001,password-ann,id.pdf,photo.png\n\
         ben,Ben Brown,+1 201 555 0124,password-ben,id.jpg,\n\
         badphone,Bad Phone,12,password-bad,,\n\
         cat,Cat Chen,13800138002,password-cat,,\n\
         shorty,Short Password,13800138003,short,,\n\
         toofew,Too Few\n\
         ERIN,Erin Again,13800138004,password-erin,,\n\
         nodoc,No Document,13800138005,password-nodoc,missing.pdf,\n\
         dan,Dan Deng,13800138006,password-dan,,photo.png\n",
    );
    let out = run(db, &["import", &csv]);
    expect(&out, 1, "imported 4 of 9 rows");
    assert!(
        stderr(&out).contains("5 rows were not imported"),
        "{}",
        stderr(&out)
    );
    let text = stdout(&out);
    for (line, says) in [
        (
            "line 4 (badphone):",
            "\"12\" is not a valid phone number for region CN",
        ),
        ("line 6 (shorty):", "the password is too short"),
        (
            "line 7:",
            "malformed row: expected field, but got end of row; expected columns username,name,phone,password",
        ),
        (
            "line 8 (ERIN):",
            "the username \"erin\" is already enrolled",
        ),
        ("line 9 (nodoc):", "cannot read the id_scan file"),
    ] {
        let found = text
            .lines()
            .find(|l| l.trim_start().starts_with(line))
            .unwrap_or_else(|| panic!("no {line:?} in the report:\n{text}"));
        assert!(found.contains(says), "{line} should say {says:?}: {found}");
    }
    assert!(text.contains("missing.pdf"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("line "))
            .count(),
        5,
        "only the bad rows are listed:\n{text}"
    );

    let list = json(db, &["accounts", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "ben", "cat", "dan", "erin"]);
    let by_name = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["username"] == name)
            .unwrap()
            .clone()
    };
    let ann = by_name("ann");
    assert_eq!(ann["display_name"], "Ann Anders");
    assert_phone_and_documents(
        &ann,
        "+8613800138001",
        &[
            document("id_scan", "application/pdf", &dir.join("id.pdf")),
            document("photo", "image/png", &dir.join("photo.png")),
        ],
    );
    assert_phone_and_documents(
        &by_name("ben"),
        "+12015550124",
        &[document("id_scan", "image/jpeg", &dir.join("id.jpg"))],
    );
    assert_eq!(by_name("cat")["documents"], serde_json::json!([]));
    assert_eq!(
        by_name("dan")["documents"],
        serde_json::json!([document("photo", "image/png", &dir.join("photo.png"))])
    );
    assert_eq!(by_name("erin")["display_name"], "erin Example", "untouched");
    assert_eq!(db.counts(), [5, 5, 4, 5]);

    // --json: {imported, failed: [{line, username, error}]}. A username twice in one file
    // goes in once; which of the two rows wins depends on which finishes hashing first.
    let csv = write_file(
        dir,
        "more.csv",
        "username,name,phone,password\n\
         fay,Fay One,13800138010,password-fay1\n\
         fay,Fay Two,13800138011,password-fay2\n\
         gus,Gus,abc,password-gus\n\
         hal,Hal,13800138012,password-hal\n",
    );
    let report = json_expect(db, &["import", &csv], 1, "2 rows were not imported");
    assert_eq!(report["imported"], 2, "{report}");
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{report}");
    let fay = &failed[0];
    assert!(fay["line"] == 2 || fay["line"] == 3, "{report}");
    assert_eq!(fay["username"], "fay");
    assert!(
        fay["error"].as_str().unwrap().contains("already enrolled"),
        "{report}"
    );
    assert_eq!(
        failed[1],
        serde_json::json!({
            "line": 4,
            "username": "gus",
            "error": "\"abc\" is not a phone number: use only digits, spaces, dashes, dots, \
                      parentheses and a leading +, e.g. +86 138 0013 8000",
        })
    );
    assert_eq!(db.count("accounts"), 7);

    // A clean file: exit 0.
    let csv = write_file(
        dir,
        "clean.csv",
        "username,name,phone,password\nivy,Ivy,13800138013,password-ivy\n",
    );
    let report = json(db, &["import", &csv]);
    assert_eq!(report, serde_json::json!({ "imported": 1, "failed": [] }));

    // A file that is not there.
    let out = run(db, &["import", dir.join("nope.csv").to_str().unwrap()]);
    expect_user_error(&out, "cannot read");
    assert_eq!(db.count("accounts"), 8);
}

// ---------------------------------------------------------------------------------------
// 7. migrate, and --no-migrate on a database that never was
// ---------------------------------------------------------------------------------------

fn scenario_migrate(db: &TestDb) {
    // A never-migrated database with --no-migrate: the command fails as a system error
    // that says what to run, and creates nothing.
    let out = run(db, &["--no-migrate", "accounts", "list"]);
    expect(&out, 2, "lacks migrations");
    let err = stderr(&out);
    assert!(
        err.contains("--no-migrate is set: run `dialgate migrate` first"),
        "{err}"
    );
    assert!(!db.has_accounts_table(), "--no-migrate must not migrate");

    let out = run(db, &["migrate"]);
    expect(&out, 0, "applied 20261121000001");
    assert!(stdout(&out).starts_with(&db.url()), "{}", stdout(&out));
    assert!(db.has_accounts_table());
    let out = run(db, &["migrate"]);
    expect(&out, 0, ": up to date");
    let report = json(db, &["migrate"]);
    assert_eq!(report["applied"], serde_json::json!([]));

    let out = run(db, &["--no-migrate", "accounts", "list"]);
    expect(&out, 0, "no accounts enrolled");
    assert_eq!(
        json(db, &["--no-migrate", "accounts", "list"]),
        serde_json::json!([])
    );
}

/// Without --no-migrate, the first command migrates a fresh database itself.
#[test]
fn first_command_migrates_sqlite() {
    let db = TestDb::sqlite();
    expect(&run(&db, &["accounts", "list"]), 0, "no accounts enrolled");
    expect(&run(&db, &["migrate"]), 0, "up to date");
}

#[test]
fn first_command_migrates_mysql() {
    let db = TestDb::mysql();
    expect(&run(&db, &["accounts", "list"]), 0, "no accounts enrolled");
    expect(&run(&db, &["migrate"]), 0, "up to date");
}

// ---------------------------------------------------------------------------------------
// 8. Database URLs that cannot work
// ---------------------------------------------------------------------------------------

#[test]
fn unreachable_mysql_is_a_system_error() {
    let out = common::db::bare_cmd()
        .args([
            "--database-url",
            "mysql://root@127.0.0.1:1/x",
            "accounts",
            "list",
        ])
        .output()
        .unwrap();
    expect(
        &out,
        2,
        "cannot connect to MySQL/MariaDB database mysql://root@127.0.0.1:1/x",
    );
    assert!(stderr(&out).contains("Can't connect"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn unusable_sqlite_path_is_a_system_error() {
    let out = common::db::bare_cmd()
        .args(["--database-url", "sqlite:///proc/dialgate-test/x.sqlite3"])
        .args(["accounts", "list"])
        .output()
        .unwrap();
    expect(
        &out,
        2,
        "cannot connect to SQLite database sqlite:///proc/dialgate-test/x.sqlite3",
    );
    assert!(
        stderr(&out).contains("cannot create directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unsupported_database_url_is_a_user_error() {
    for url in ["postgres://x", "postgres://u:hunter2@h/db"] {
        let out = common::db::bare_cmd()
            .args(["--database-url", url, "accounts", "list"])
            .output()
            .unwrap();
        expect_user_error(&out, "unsupported database URL");
        assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------------------
// 9. Bad arguments
// ---------------------------------------------------------------------------------------

#[test]
fn bad_arguments_are_user_errors() {
    let out = common::db::bare_cmd()
        .args(["enroll", "--username", "x", "--name", "X"])
        .output()
        .unwrap();
    expect_user_error(&out, "the following required arguments were not provided");
    assert!(stderr(&out).contains("--phone <PHONE>"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Usage: dialgate enroll"),
        "{}",
        stderr(&out)
    );

    let out = common::db::bare_cmd()
        .args(["accounts", "frobnicate"])
        .output()
        .unwrap();
    expect_user_error(&out, "unrecognized subcommand 'frobnicate'");

    let out = common::db::bare_cmd()
        .args(["accounts", "set-phone", "x"])
        .output()
        .unwrap();
    expect_user_error(&out, "<PHONE>");

    // --help is not an error.
    let out = common::db::bare_cmd()
        .args(["enroll", "--help"])
        .output()
        .unwrap();
    expect(&out, 0, "--password-stdin");
}
