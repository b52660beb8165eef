//! The sign-in page in a real browser: headless Chromium driven through chromedriver's
//! W3C WebDriver protocol, against the real `dialgate demo` server.
//!
//! Flow: open `/`, a wrong password shows the generic error, the right one shows the
//! number to call (a `tel:` link) and the masked enrolled phone, "Simulate the call"
//! signs in ("Signed in as demo"), "Sign out" returns to the form. Screenshots (PNG) go
//! to the test's temporary directory, or to `DIALGATE_TEST_ARTIFACTS` when that is set.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium
//! chromium-driver`); `.ci/run` installs them. The binaries are looked up in
//! `DIALGATE_CHROMEDRIVER` / `CHROMEDRIVER` and `DIALGATE_CHROMIUM` / `CHROME_BIN`
//! first, then /usr/bin/chromedriver and /usr/bin/chromium, then `$PATH`. Missing
//! binaries fail the test with that install command; the test never skips.
//!
//! The WebDriver client is the few lines of HTTP/1.1 over `std::net::TcpStream` below.

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

// ------------------------------------------------------------------ the tests

#[test]
fn browser_login_with_simulated_call() {
    let browser = BrowserBinaries::find();
    let tmp = tempfile::tempdir().unwrap();
    let server = DialgateDemo::start(tmp.path());
    let driver = ChromeDriver::start(&browser, tmp.path());
    let wd = WebDriver::new_session(&driver, &browser, tmp.path());
    login_flow(
        &wd,
        &server.base_url,
        &server.username,
        &server.password,
        tmp.path(),
    );
}

#[test]
fn credentials_line_parsing() {
    assert_eq!(
        parse_credentials("username: demo  password: s3cr3t-Pw"),
        (Some("demo".into()), Some("s3cr3t-Pw".into()))
    );
    assert_eq!(
        parse_credentials("  Demo account -> Username = \"demo\", Password = `a b`"),
        (Some("demo".into()), Some("a".into()))
    );
    assert_eq!(parse_credentials("password:x1"), (None, Some("x1".into())));
    assert_eq!(
        parse_credentials("User: alice"),
        (Some("alice".into()), None)
    );
    assert_eq!(parse_credentials("listening on 127.0.0.1:80"), (None, None));
    assert_eq!(
        parse_credentials("password hashing uses argon2id"),
        (None, None)
    );
}

fn login_flow(wd: &WebDriver, base_url: &str, username: &str, password: &str, out: &Path) {
    // The page is served with a CSP that forbids inline script and style.
    let (status, headers, _) = http_request(&base_url["http://".len()..], "GET", "/", None, &[])
        .expect("GET / on the server");
    assert_eq!(status, 200, "GET / answered {status}");
    let csp = header(&headers, "content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'"),
        "GET / must send Content-Security-Policy with default-src 'self'; got {csp:?}"
    );

    wd.desktop();
    wd.goto(&format!("{base_url}/"));
    wd.wait_until("the sign-in form", || wd.is_displayed("#login-form"));
    assert_eq!(wd.exec_str("return document.title"), "Sign in · dialgate");

    // 320 px wide: nothing wider than the viewport.
    wd.narrow();
    wd.wait_until("the narrow viewport", || {
        wd.exec_bool("return window.innerWidth === 320")
    });
    assert_no_horizontal_overflow(wd, "login step at 320 px");

    // A wrong password: the generic message, in the live region, without layout shift.
    let card_height =
        wd.exec_f64("return document.getElementById('main').getBoundingClientRect().height");
    wd.type_into("#username", username);
    wd.type_into("#password", "definitely-not-the-password");
    wd.click("#login-submit");
    wd.wait_until("the invalid-credentials message", || {
        wd.text("#login-error")
            .contains("Invalid username or password")
    });
    let live = wd
        .exec_str("return document.getElementById('login-error').getAttribute('aria-live') || ''");
    assert!(
        !live.is_empty(),
        "the login error must be in an aria-live region"
    );
    assert!(
        wd.is_displayed("#login-form"),
        "a wrong password must keep the form"
    );
    let after =
        wd.exec_f64("return document.getElementById('main').getBoundingClientRect().height");
    assert!(
        (after - card_height).abs() < 1.0,
        "showing the error moved the layout: card height {card_height} -> {after}"
    );
    wd.screenshot_to(&out.join("01-wrong-password-320.png"));

    // The right password: the number to call.
    wd.clear("#password");
    wd.type_into("#password", password);
    wd.click("#login-submit");
    wd.wait_until("the number to call", || wd.is_displayed("#dial-link"));
    let href = wd.attribute("#dial-link", "href");
    assert!(
        href.starts_with("tel:+")
            && href[5..].chars().all(|c| c.is_ascii_digit())
            && href.len() > 8,
        "the number must be a tel: link to an E.164 number, got {href:?}"
    );
    let shown_digits: String = wd
        .text("#dial-display")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(
        format!("tel:+{shown_digits}"),
        href,
        "the number shown must be the number dialled"
    );
    let hint = wd.text("#phone-hint");
    assert!(
        hint.contains("Call from your phone") && hint.contains('•'),
        "the enrolled phone must be shown masked, got {hint:?}"
    );
    assert_eq!(
        wd.exec_str("return document.activeElement ? document.activeElement.id : ''"),
        "call-heading",
        "focus must move to the call step's heading"
    );
    wd.wait_until("the waiting status", || {
        wd.text("#call-status").contains("Waiting for your call")
    });
    let countdown = wd.text("#countdown");
    assert!(
        countdown.len() == 5 && countdown.as_bytes()[2] == b':' && countdown != "00:00",
        "the countdown must read mm:ss, got {countdown:?}"
    );
    wd.wait_until("the demo's \"Simulate the call\" button", || {
        wd.is_displayed("#simulate-call")
    });
    assert_no_horizontal_overflow(wd, "call step at 320 px");
    wd.screenshot_to(&out.join("02-call-320.png"));

    // The simulated call signs in.
    wd.desktop();
    wd.click("#simulate-call");
    wd.wait_until("\"Signed in as ...\"", || wd.is_displayed("#signed-in"));
    let signed_in = wd.text("#signed-in");
    assert_eq!(signed_in.trim(), format!("Signed in as {username}"));
    assert_eq!(
        wd.exec_str("return document.activeElement ? document.activeElement.id : ''"),
        "done-heading",
        "focus must move to the signed-in step's heading"
    );
    let png = wd.screenshot_to(&out.join("03-signed-in.png"));
    assert!(
        png.len() > 1000,
        "suspiciously small screenshot ({} bytes)",
        png.len()
    );

    // Dark mode follows prefers-color-scheme.
    let light = wd.exec_str("return getComputedStyle(document.body).backgroundColor");
    wd.cdp(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    let dark = wd.exec_str("return getComputedStyle(document.body).backgroundColor");
    assert_ne!(light, dark, "the page must follow prefers-color-scheme");
    wd.screenshot_to(&out.join("04-signed-in-dark.png"));
    wd.cdp("Emulation.setEmulatedMedia", json!({"features": []}));

    // Sign out returns to the form.
    wd.click("#logout");
    wd.wait_until("the sign-in form after signing out", || {
        wd.is_displayed("#login-form")
    });
    assert!(!wd.is_displayed("#signed-in"));

    // No script errors and no CSP violations in the console.
    let problems: Vec<String> = wd
        .browser_log()
        .into_iter()
        .filter(|e| {
            let message = e["message"].as_str().unwrap_or("");
            // The network lines are the expected 401 of the wrong password and the like.
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

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn attribute(&self, css: &str, name: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/attribute/{name}"), None)
            .as_str()
            .unwrap_or_default()
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
