//! The temporary passwords page (`/payments`, issue 5) in a real browser: headless
//! Chromium driven through chromedriver's W3C WebDriver protocol, against the real
//! `dialgate demo` server, the way tests/browser_login.rs does (its WebDriver client and
//! process helpers are copied below).
//!
//! Flow: the demo balance is topped up with the CLI; `/payments` without a session shows
//! "Sign in first"; the owner signs in on `/` (simulated call), follows "Manage temporary
//! passwords", sees the balance 100.00, issues a password (1 use, spend limit 20.00) and
//! reads it from the page (shown once); the test pays 12.50 with it over HTTP; after a
//! reload the page shows 0 uses left and the balance 87.50; revoking it in the page shows
//! it revoked; a change refused by the server (409) shows "Cannot do that now".
//! Screenshots (PNG) go to the test's temporary directory, or to `DIALGATE_TEST_ARTIFACTS`.
//!
//! Needs Debian's `chromium` and `chromium-driver`, found as browser_login.rs finds them.

use std::{
    env,
    fs::{self, File},
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{json, Value};

const W3C_ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Generous: Argon2id at production parameters runs at every login.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const START_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ the test

#[test]
fn browser_temporary_passwords() {
    let browser = BrowserBinaries::find();
    let tmp = tempfile::tempdir().unwrap();
    let server = DialgateDemo::start(tmp.path());
    top_up(&tmp.path().join("data").join("demo.sqlite3"), "100.00");
    let driver = ChromeDriver::start(&browser, tmp.path());
    let wd = WebDriver::new_session(&driver, &browser, tmp.path());
    payments_flow(&wd, &server, tmp.path());
}

/// `dialgate --database-url <demo db> balance top-up --username demo --amount <amount>`.
fn top_up(db: &Path, amount: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dialgate"));
    cmd.arg("--database-url").arg(db).args([
        "balance",
        "top-up",
        "--username",
        "demo",
        "--amount",
        amount,
    ]);
    for var in [
        "DIALGATE_CONFIG",
        "DIALGATE_DATABASE_URL",
        "DIALGATE_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run dialgate balance top-up");
    assert!(
        out.status.success(),
        "dialgate balance top-up failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn payments_flow(wd: &WebDriver, server: &Server, out: &Path) {
    let base_url = &server.base_url;
    let addr = &base_url["http://".len()..];

    // The page and its script are served with the same headers as the sign-in page.
    for (path, kind) in [
        ("/payments", "text/html"),
        ("/payments.js", "text/javascript"),
    ] {
        let (status, headers, _) =
            http_request(addr, "GET", path, None, &[]).expect("GET on the server");
        assert_eq!(status, 200, "GET {path} answered {status}");
        let csp = header(&headers, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'self'"),
            "GET {path} must send Content-Security-Policy with default-src 'self'; got {csp:?}"
        );
        let ct = header(&headers, "content-type").unwrap_or_default();
        assert!(ct.starts_with(kind), "GET {path}: Content-Type {ct:?}");
    }

    // Not signed in: a link to sign in first.
    wd.desktop();
    wd.goto(&format!("{base_url}/payments"));
    wd.wait_until("\"Sign in first\"", || wd.is_displayed("#sign-in-link"));
    assert_eq!(wd.text("#sign-in-link").trim(), "Sign in first");
    assert_eq!(
        wd.exec_str("return document.getElementById('sign-in-link').getAttribute('href')"),
        "/"
    );
    assert!(!wd.is_displayed("#issue-form"));
    wd.screenshot_to(&out.join("payments-01-signed-out.png"));

    // Sign in on / with the simulated call, then follow the link.
    wd.click("#sign-in-link");
    wd.wait_until("the sign-in form", || wd.is_displayed("#login-form"));
    wd.type_into("#username", &server.username);
    wd.type_into("#password", &server.password);
    wd.click("#login-submit");
    wd.wait_until("the demo's \"Simulate the call\" button", || {
        wd.is_displayed("#simulate-call")
    });
    wd.click("#simulate-call");
    wd.wait_until("\"Signed in as ...\"", || wd.is_displayed("#signed-in"));
    wd.wait_until("the \"Manage temporary passwords\" link", || {
        wd.is_displayed("#payments-link")
    });
    assert_eq!(
        wd.text("#payments-link").trim(),
        "Manage temporary passwords"
    );
    wd.click("#payments-link");
    wd.wait_until("the temporary passwords page", || {
        wd.is_displayed("#issue-form")
    });
    assert!(wd.exec_str("return location.pathname") == "/payments");
    assert_eq!(
        wd.exec_str("return document.title"),
        "Temporary passwords · dialgate"
    );

    // The balance, in major units.
    wd.wait_until("the balance 100.00", || {
        wd.text("#balance-amount").trim() == "100.00"
    });
    let currency = wd.text("#balance-currency").trim().to_string();
    assert!(
        currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase()),
        "the currency must be shown (ISO code), got {currency:?}"
    );
    assert!(wd.is_displayed("#tp-empty"), "no passwords yet");

    // Every field has a label.
    let unlabelled = wd.exec_str(
        "return Array.from(document.querySelectorAll('#issue-form input, #issue-form select'))\
         .filter(e => !e.labels || e.labels.length === 0).map(e => e.id).join(',')",
    );
    assert_eq!(unlabelled, "", "form fields without a label");

    // 320 px wide works.
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "payments page at 320 px");
    wd.screenshot_to(&out.join("payments-02-form-320.png"));
    wd.desktop();

    // Issue one: 1 use, at most 20.00 in total.
    wd.type_into("#tp-label", "Browser test");
    wd.type_into("#tp-max-uses", "1");
    wd.type_into("#tp-spend-limit", "20.00");
    wd.click("#issue-submit");
    wd.wait_until("the new password", || wd.is_displayed("#issued-password"));
    let password = wd.text("#issued-password").trim().to_string();
    assert!(
        password.len() >= 8 && !password.contains(' '),
        "the password shown is {password:?}"
    );
    let note = wd.text("#issued-note");
    assert!(
        note.contains("It will not be shown again"),
        "the shown-once note reads {note:?}"
    );
    assert!(wd.is_displayed("#copy-password"));
    let font = wd
        .exec_str("return getComputedStyle(document.getElementById('issued-password')).fontFamily");
    assert!(
        font.to_ascii_lowercase().contains("mono"),
        "the password must be in a monospace font, got {font:?}"
    );
    wd.wait_until("the new password in the list", || {
        wd.exec_bool("return document.querySelectorAll('#tp-list li[data-id]').length === 1")
    });
    let id = wd.exec_str("return document.querySelector('#tp-list li[data-id]').dataset.id");
    let row = format!("#tp-list li[data-id=\"{id}\"]");
    assert_eq!(wd.attribute(&row, "data-state"), "active");
    assert_eq!(wd.text(&format!("{row} .tp-uses")).trim(), "1");
    assert_eq!(
        wd.text(&format!("{row} .tp-limit")).trim(),
        format!("20.00 {currency}")
    );
    assert!(
        wd.text("#status").contains("issued"),
        "the status region must say it was issued, got {:?}",
        wd.text("#status")
    );
    wd.screenshot_to(&out.join("payments-03-issued.png"));
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "the new password at 320 px");
    wd.exec(
        "document.getElementById('issued').scrollIntoView()",
        json!([]),
    );
    wd.screenshot_to(&out.join("payments-03-issued-320.png"));
    wd.desktop();

    // Done hides it for good.
    wd.click("#issued-done");
    wd.wait_until("the password hidden", || !wd.is_displayed("#issued"));
    assert!(
        !wd.exec_bool_args(
            "return document.body.innerHTML.includes(arguments[0])",
            json!([password])
        ),
        "the password must leave the page after Done"
    );

    // Pay 12.50 with it.
    let pay = |key: &str| {
        http_request(
            addr,
            "POST",
            "/v1/payments",
            Some(&json!({"username": server.username, "password": password, "amount": 1250})),
            &[("Idempotency-Key", key)],
        )
        .expect("POST /v1/payments")
    };
    let (status, _, body) = pay("browser-payments-1");
    assert_eq!(
        status,
        200,
        "the payment must be approved: {}",
        String::from_utf8_lossy(&body)
    );

    // After a reload: no uses left, 7.50 of the limit left, the balance 87.50.
    wd.refresh();
    wd.wait_until("the balance 87.50", || {
        wd.is_displayed("#balance-amount") && wd.text("#balance-amount").trim() == "87.50"
    });
    wd.wait_until("the row after the payment", || wd.is_displayed(&row));
    assert_eq!(wd.text(&format!("{row} .tp-uses")).trim(), "0");
    assert_eq!(
        wd.text(&format!("{row} .tp-limit")).trim(),
        format!("7.50 {currency}")
    );
    assert_eq!(wd.attribute(&row, "data-status"), "uses_exhausted");
    wd.screenshot_to(&out.join("payments-04-after-payment.png"));

    // Revoke it in the page (asked once more, in place).
    wd.click(&format!("{row} button[data-action=\"revoke\"]"));
    wd.wait_until("the revoke confirmation", || {
        wd.is_displayed(&format!("{row} button[data-action=\"confirm-revoke\"]"))
    });
    wd.click(&format!("{row} button[data-action=\"confirm-revoke\"]"));
    wd.wait_until("the row revoked", || {
        wd.attribute(&row, "data-state") == "revoked"
    });
    assert_eq!(wd.text(&format!("{row} .tp-state")).trim(), "Revoked");
    assert!(
        !wd.is_displayed(&format!("{row} button[data-action]")),
        "a revoked password has no actions"
    );
    assert!(
        wd.text("#status").contains("revoked"),
        "the status region must say it was revoked, got {:?}",
        wd.text("#status")
    );
    let (status, _, _) = pay("browser-payments-2");
    assert_ne!(status, 200, "a revoked password must not pay");

    // A change the server refuses (409): pause a second one in the page, revoke it
    // behind the page's back, then "Resume" in the page.
    wd.clear("#tp-label");
    wd.type_into("#tp-label", "Second");
    wd.click("#issue-submit");
    wd.wait_until("the second password", || {
        wd.is_displayed("#issued-password")
    });
    wd.click("#issued-done");
    wd.wait_until("two rows", || {
        wd.exec_bool("return document.querySelectorAll('#tp-list li[data-id]').length === 2")
    });
    let second = wd.exec_str(
        "return Array.from(document.querySelectorAll('#tp-list li[data-id]'))\
         .find(li => li.dataset.state === 'active').dataset.id",
    );
    let row2 = format!("#tp-list li[data-id=\"{second}\"]");
    wd.click(&format!("{row2} button[data-action=\"pause\"]"));
    wd.wait_until("the second one paused", || {
        wd.attribute(&row2, "data-state") == "paused"
    });
    assert_eq!(wd.text(&format!("{row2} .tp-state")).trim(), "Paused");
    let cookie = wd.cookie("dialgate_session").expect("the session cookie");
    let (status, _, body) = http_request(
        addr,
        "POST",
        &format!("/v1/temp-passwords/{second}/revoke"),
        None,
        &[("Cookie", &format!("dialgate_session={cookie}"))],
    )
    .expect("POST revoke");
    assert_eq!(
        status,
        200,
        "revoke with the session cookie: {}",
        String::from_utf8_lossy(&body)
    );
    wd.click(&format!("{row2} button[data-action=\"resume\"]"));
    wd.wait_until("\"Cannot do that now\"", || {
        wd.text("#status").contains("Cannot do that now")
    });
    wd.wait_until("the row updated to revoked", || {
        wd.attribute(&row2, "data-state") == "revoked"
    });
    assert_no_horizontal_overflow(wd, "payments list");
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "payments list at 320 px");
    wd.exec(
        "document.getElementById('list-section').scrollIntoView()",
        json!([]),
    );
    wd.screenshot_to(&out.join("payments-05-list-320.png"));
    wd.desktop();

    // No script errors and no CSP violations in the console.
    let problems: Vec<String> = wd
        .browser_log()
        .into_iter()
        .filter(|e| {
            let message = e["message"].as_str().unwrap_or("");
            // The network lines are the expected 401 before signing in, and the 409.
            (e["level"] == "SEVERE" && e["source"] != "network")
                || message.contains("Content Security Policy")
        })
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        problems.is_empty(),
        "browser console errors:\n{}",
        problems.join("\n")
    );

    if let Some(dir) = env::var_os("DIALGATE_TEST_ARTIFACTS") {
        let dir = PathBuf::from(dir);
        fs::create_dir_all(&dir).unwrap();
        for entry in fs::read_dir(out).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "png") {
                fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
    }
}

fn assert_no_horizontal_overflow(wd: &WebDriver, what: &str) {
    let (scroll, inner) = (
        wd.exec_f64("return document.documentElement.scrollWidth"),
        wd.exec_f64("return window.innerWidth"),
    );
    assert!(
        scroll <= inner,
        "{what}: the page is {scroll} px wide in a {inner} px viewport"
    );
}

// ------------------------------------------------------------------ processes

/// A child process killed (and its log shown, when the test is failing) on drop.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}\n-----",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(proc: &mut Proc, port: u16, deadline: Instant) {
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = proc.exited() {
            panic!(
                "{} exited ({status}) before listening on port {port}:\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not listen on port {port} in time:\n{}",
                proc.name,
                proc.log_tail()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The server under test: a process that prints the demo credentials on stdout.
struct Server {
    _proc: Proc,
    base_url: String,
    username: String,
    password: String,
}

type DialgateDemo = Server;

impl Server {
    /// `dialgate --data-dir <tmp> demo --http-listen 127.0.0.1:<p> --agi-listen 127.0.0.1:<p2>`.
    fn start(tmp: &Path) -> Server {
        let data_dir = tmp.join("data");
        fs::create_dir_all(&data_dir).unwrap();
        let http_port = free_port();
        let agi_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dialgate"));
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .arg("demo")
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--agi-listen")
            .arg(format!("127.0.0.1:{agi_port}"));
        for var in [
            "DIALGATE_CONFIG",
            "DIALGATE_DATABASE_URL",
            "DIALGATE_DATA_DIR",
        ] {
            cmd.env_remove(var);
        }
        Server::spawn("dialgate demo", cmd, tmp, http_port)
    }

    /// Runs `cmd`, reads the credentials from its stdout, waits for `port` to accept.
    fn spawn(name: &str, mut cmd: Command, tmp: &Path, port: u16) -> Server {
        let log = tmp.join(format!("{}.log", name.replace([' ', '.'], "-")));
        let stderr = File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut proc = Proc {
            name: name.to_string(),
            child,
            log: log.clone(),
        };

        // Stdout goes to a channel (for the credentials) and to the log, and keeps being
        // drained so the server never blocks on a full pipe.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout_log = tmp.join(format!("{}.stdout", name.replace([' ', '.'], "-")));
        thread::spawn(move || {
            let mut copy = File::create(stdout_log).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let mut username = None;
        let mut seen = Vec::new();
        let password = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let (u, p) = parse_credentials(&line);
                    seen.push(line);
                    if u.is_some() {
                        username = u;
                    }
                    if let Some(p) = p {
                        break p;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = proc.child.wait();
                    panic!(
                        "{name} closed stdout without printing the demo credentials \
                         (expected a line like `username: demo  password: <pw>`).\n\
                         stdout:\n{}\nstderr:\n{}",
                        seen.join("\n"),
                        proc.log_tail()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} printed no demo credentials within {START_TIMEOUT:?} \
                     (expected a line like `username: demo  password: <pw>`).\n\
                     stdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    proc.log_tail()
                );
            }
        };
        wait_for_port(&mut proc, port, deadline);
        Server {
            _proc: proc,
            base_url: format!("http://127.0.0.1:{port}"),
            username: username.unwrap_or_else(|| "demo".to_string()),
            password,
        }
    }
}

/// Finds `username`/`user` and `password` values in a line such as
/// `username: demo  password: s3cret` (also `=`, quotes, backticks, any case).
fn parse_credentials(line: &str) -> (Option<String>, Option<String>) {
    fn value_after(line: &str, keys: &[&str]) -> Option<String> {
        let lower = line.to_ascii_lowercase();
        for key in keys {
            let mut from = 0;
            while let Some(i) = lower[from..].find(key) {
                let start = from + i;
                from = start + key.len();
                // A whole word: not inside a longer one ("username" holds "name").
                let before_ok = start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric();
                let rest = &line[from..];
                let after = rest.trim_start_matches([' ', '\t']);
                let Some(after) = after.strip_prefix([':', '=']) else {
                    continue;
                };
                if !before_ok {
                    continue;
                }
                let value: String = after
                    .trim_start()
                    .trim_start_matches(['"', '\'', '`'])
                    .chars()
                    .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '`' | ','))
                    .collect();
                if !value.is_empty() {
                    return Some(value);
                }
            }
        }
        None
    }
    (
        value_after(line, &["username", "user"]),
        value_after(line, &["password"]),
    )
}

// ------------------------------------------------------------------ the browser

struct BrowserBinaries {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl BrowserBinaries {
    fn find() -> BrowserBinaries {
        let chromedriver = find_binary(
            &["DIALGATE_CHROMEDRIVER", "CHROMEDRIVER"],
            &["/usr/bin/chromedriver"],
            &["chromedriver"],
        );
        let chromium = find_binary(
            &["DIALGATE_CHROMIUM", "CHROME_BIN"],
            &["/usr/bin/chromium"],
            &["chromium", "chromium-browser", "google-chrome"],
        );
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => BrowserBinaries {
                chromium,
                chromedriver,
            },
            (chromium, chromedriver) => panic!(
                "the browser test needs Chromium and chromedriver (found chromium: {chromium:?}, \
                 chromedriver: {chromedriver:?}). Install them with \
                 `apt-get install -y chromium chromium-driver`, or point DIALGATE_CHROMIUM and \
                 DIALGATE_CHROMEDRIVER at them."
            ),
        }
    }
}

fn find_binary(vars: &[&str], paths: &[&str], names: &[&str]) -> Option<PathBuf> {
    let is_exe = |p: &Path| p.is_file();
    for var in vars {
        if let Some(v) = env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(v);
            assert!(is_exe(&p), "{var}={} is not a file", p.display());
            return Some(p);
        }
    }
    if let Some(p) = paths.iter().map(PathBuf::from).find(|p| is_exe(p)) {
        return Some(p);
    }
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| is_exe(p))
}

struct ChromeDriver {
    _proc: Proc,
    addr: String,
}

impl ChromeDriver {
    fn start(browser: &BrowserBinaries, tmp: &Path) -> ChromeDriver {
        let port = free_port();
        let log = tmp.join("chromedriver.log");
        let mut child = Command::new(&browser.chromedriver);
        child
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = child
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.chromedriver.display()));
        let mut proc = Proc {
            name: "chromedriver".into(),
            child,
            log,
        };
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_for_port(&mut proc, port, deadline);
        loop {
            if let Ok((200, _, body)) = http_request(&addr, "GET", "/status", None, &[]) {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            thread::sleep(Duration::from_millis(100));
        }
        ChromeDriver { _proc: proc, addr }
    }
}

/// A WebDriver session; deleted (closing the browser) on drop.
struct WebDriver {
    addr: String,
    session: String,
}

impl WebDriver {
    fn new_session(driver: &ChromeDriver, browser: &BrowserBinaries, tmp: &Path) -> WebDriver {
        let profile = tmp.join("chromium-profile");
        fs::create_dir_all(&profile).unwrap();
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {"implicit": 0, "pageLoad": 60000, "script": 30000},
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {
                        "binary": browser.chromium.to_string_lossy(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-extensions",
                            "--window-size=1280,900",
                            "--lang=en-US",
                            format!("--user-data-dir={}", profile.display()),
                        ]
                    }
                }
            }
        });
        let (status, _, body) = http_request(&driver.addr, "POST", "/session", Some(&caps), &[])
            .expect("POST /session to chromedriver");
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| {
            panic!(
                "chromedriver could not start Chromium ({status}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        WebDriver {
            addr: driver.addr.clone(),
            session: session.to_string(),
        }
    }

    /// One command; returns its `value`, panicking with WebDriver's error otherwise.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("/session/{}{path}", self.session);
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (status, _, raw) = http_request(&self.addr, method, &url, body.as_ref(), &[])
            .map_err(|e| format!("WebDriver {method} {path}: {e}"))?;
        let v: Value = serde_json::from_slice(&raw).map_err(|e| {
            format!(
                "WebDriver {method} {path}: bad JSON ({e}): {}",
                String::from_utf8_lossy(&raw)
            )
        })?;
        if status != 200 {
            return Err(format!(
                "WebDriver {method} {path} -> {status}: {} {}",
                v["value"]["error"], v["value"]["message"]
            ));
        }
        Ok(v["value"].clone())
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn refresh(&self) {
        self.cmd("POST", "/refresh", None);
    }

    /// A cookie's value (WebDriver sees HttpOnly cookies too).
    fn cookie(&self, name: &str) -> Option<String> {
        self.try_cmd("GET", &format!("/cookie/{name}"), None)
            .ok()
            .and_then(|v| v["value"].as_str().map(str::to_string))
    }

    fn desktop(&self) {
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}));
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": 900})),
        );
    }

    /// A 320 px wide phone-sized viewport (Chromium's windows cannot be that narrow).
    fn narrow(&self) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 320, "height": 640, "deviceScaleFactor": 2, "mobile": true}),
        );
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[W3C_ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), None);
    }

    fn clear(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/clear"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    // Text and attributes are read in one script, not by element reference: the page
    // re-renders list rows, and a reference found a moment earlier may be stale.

    /// The rendered text of the first match (panics when nothing matches).
    fn text(&self, css: &str) -> String {
        let v = self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([css]),
        );
        v.as_str()
            .unwrap_or_else(|| panic!("no element matches {css}"))
            .to_string()
    }

    /// An attribute of the first match; empty when absent (panics when nothing matches).
    fn attribute(&self, css: &str, name: &str) -> String {
        let v = self.exec(
            "const e = document.querySelector(arguments[0]);\
             return e ? (e.getAttribute(arguments[1]) || '') : null;",
            json!([css, name]),
        );
        v.as_str()
            .unwrap_or_else(|| panic!("no element matches {css}"))
            .to_string()
    }

    /// Rendered: present, not `hidden` (nor inside something hidden), with a size.
    fn is_displayed(&self, css: &str) -> bool {
        self.exec_bool_args(
            "const e = document.querySelector(arguments[0]);\
             if (!e) return false;\
             const r = e.getBoundingClientRect();\
             return e.getClientRects().length > 0 && r.width > 0 && r.height > 0 \
                    && getComputedStyle(e).visibility !== 'hidden';",
            json!([css]),
        )
    }

    fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    fn exec_bool_args(&self, script: &str, args: Value) -> bool {
        self.exec(script, args).as_bool().unwrap_or(false)
    }

    fn exec_bool(&self, script: &str) -> bool {
        self.exec_bool_args(script, json!([]))
    }

    fn exec_str(&self, script: &str) -> String {
        let v = self.exec(script, json!([]));
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    }

    fn exec_f64(&self, script: &str) -> f64 {
        let v = self.exec(script, json!([]));
        v.as_f64()
            .unwrap_or_else(|| panic!("{script} returned {v}, not a number"))
    }

    /// Polls `cond` until it holds; on timeout fails showing what the page says.
    fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if cond() {
                return;
            }
            if Instant::now() > deadline {
                let text = self.exec_str("return document.body ? document.body.innerText : ''");
                panic!(
                    "timed out after {STEP_TIMEOUT:?} waiting for {what}; the page says:\n{text}"
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a screenshot and checks it is a PNG; returns its bytes.
    fn screenshot_to(&self, path: &Path) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot is a base64 string"))
            .expect("screenshot is valid base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        fs::write(path, &png).unwrap();
        png
    }

    /// The browser console (chromedriver's log extension); empty if unsupported.
    fn browser_log(&self) -> Vec<Value> {
        match self.try_cmd("POST", "/se/log", Some(json!({"type": "browser"}))) {
            Ok(Value::Array(entries)) => entries,
            Ok(_) => Vec::new(),
            Err(e) => {
                eprintln!("note: browser console log unavailable: {e}");
                Vec::new()
            }
        }
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = http_request(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
            &[],
        );
    }
}

// ------------------------------------------------------------------ HTTP/1.1

type Headers = Vec<(String, String)>;

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// One request on a fresh connection: `(status, headers, body)`.
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> std::io::Result<(u16, Headers, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if body.is_some() {
        req.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(payload.as_bytes())?;

    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut headers = Headers::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut out = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok((status, headers, out));
    }
    if let Some(len) = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        out.resize(len, 0);
        reader.read_exact(&mut out)?;
    } else if header(&headers, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = out.len();
            out.resize(start + size, 0);
            reader.read_exact(&mut out[start..])?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else {
        reader.read_to_end(&mut out)?;
    }
    Ok((status, headers, out))
}
