//! Headless Chromium for the page tests: Debian's chromium + chromedriver spoken to over
//! the W3C WebDriver protocol by `fantoccini` (plain HTTP on loopback, no TLS), and the
//! `dialgate demo` server process.

use std::{
    env,
    fs::{self, File},
    future::Future,
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use fantoccini::{
    elements::Element, error::CmdError, wd::WebDriverCompatibleCommand, Client, ClientBuilder,
    Locator,
};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

pub use super::http::Reply;

/// Generous: Argon2id at production parameters runs at every login.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

pub fn assert_no_horizontal_overflow(wd: &WebDriver, what: &str) {
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
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
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

pub fn wait_for_port(proc: &mut Proc, port: u16, deadline: Instant) {
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
pub struct Server {
    pub _proc: Proc,
    pub base_url: String,
    pub username: String,
    pub password: String,
}

pub type DialgateDemo = Server;

impl Server {
    /// `dialgate --data-dir <tmp> demo --http-listen 127.0.0.1:<p> --agi-listen 127.0.0.1:<p2>`.
    pub fn start(tmp: &Path) -> Server {
        let data_dir = tmp.join("data");
        fs::create_dir_all(&data_dir).unwrap();
        let http_port = super::free_port().port();
        let agi_port = super::free_port().port();
        let mut cmd = super::db::dialgate_command();
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .arg("demo")
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--agi-listen")
            .arg(format!("127.0.0.1:{agi_port}"));
        Server::spawn("dialgate demo", cmd, tmp, http_port)
    }

    /// Runs `cmd`, reads the credentials from its stdout, waits for `port` to accept.
    pub fn spawn(name: &str, mut cmd: Command, tmp: &Path, port: u16) -> Server {
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
pub fn parse_credentials(line: &str) -> (Option<String>, Option<String>) {
    pub fn value_after(line: &str, keys: &[&str]) -> Option<String> {
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

/// Copies the screenshots in `out` to `$DIALGATE_TEST_ARTIFACTS`, when set, for a person
/// (or CI) to look at.
pub fn keep_screenshots(out: &Path) {
    let Some(dir) = env::var_os("DIALGATE_TEST_ARTIFACTS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir).unwrap();
    for entry in fs::read_dir(out).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "png") {
            fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
}

pub struct BrowserBinaries {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl BrowserBinaries {
    pub fn find() -> BrowserBinaries {
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

pub fn find_binary(vars: &[&str], paths: &[&str], names: &[&str]) -> Option<PathBuf> {
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

pub struct ChromeDriver {
    pub _proc: Proc,
    pub url: String,
}

impl ChromeDriver {
    pub fn start(browser: &BrowserBinaries, tmp: &Path) -> ChromeDriver {
        let port = super::free_port().port();
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
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_for_port(&mut proc, port, deadline);
        loop {
            let status = request(Method::GET, &format!("{url}/status"), &[], "");
            if status.status == StatusCode::OK && status.json()["value"]["ready"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            thread::sleep(Duration::from_millis(100));
        }
        ChromeDriver { _proc: proc, url }
    }
}

/// A chromedriver command fantoccini has no method for: `POST /session/{id}/{path}`.
#[derive(Debug)]
struct SessionPost {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for SessionPost {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/{}",
            session.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(self.body.to_string()))
    }
}

/// A WebDriver session (a [`fantoccini::Client`] driven on its own runtime, so the
/// tests stay synchronous); deleted, closing the browser, on drop.
pub struct WebDriver {
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
}

impl WebDriver {
    pub fn new_session(driver: &ChromeDriver, browser: &BrowserBinaries, tmp: &Path) -> WebDriver {
        let profile = tmp.join("chromium-profile");
        fs::create_dir_all(&profile).unwrap();
        let caps = json!({
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
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let rt = runtime();
        let client = rt
            .block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(caps)
                    .connect(&driver.url),
            )
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        WebDriver {
            client: Some(client),
            rt,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Runs one command to completion; `what` names it in the panic when it fails.
    fn run<T>(&self, what: &str, command: impl Future<Output = Result<T, CmdError>>) -> T {
        self.rt
            .block_on(command)
            .unwrap_or_else(|e| panic!("WebDriver {what}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.run("goto", self.client().goto(url));
    }

    pub fn refresh(&self) {
        self.run("refresh", self.client().refresh());
    }

    /// A cookie's value (WebDriver sees HttpOnly cookies too).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.rt
            .block_on(self.client().get_named_cookie(name))
            .ok()
            .map(|c| c.value().to_string())
    }

    pub fn desktop(&self) {
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}));
        self.run("set window size", self.client().set_window_size(1280, 900));
    }

    /// A 320 px wide phone-sized viewport (Chromium's windows cannot be that narrow).
    pub fn narrow(&self) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 320, "height": 640, "deviceScaleFactor": 2, "mobile": true}),
        );
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.run(
            cmd,
            self.client().issue_cmd(SessionPost {
                path: "goog/cdp/execute",
                body: json!({"cmd": cmd, "params": params}),
            }),
        )
    }

    pub fn find(&self, css: &str) -> Element {
        self.run(
            &format!("find {css}"),
            self.client().find(Locator::Css(css)),
        )
    }

    pub fn click(&self, css: &str) {
        self.run(&format!("click {css}"), self.find(css).click());
    }

    pub fn clear(&self, css: &str) {
        self.run(&format!("clear {css}"), self.find(css).clear());
    }

    pub fn type_into(&self, css: &str, text: &str) {
        self.run(&format!("type into {css}"), self.find(css).send_keys(text));
    }

    // Text and attributes are read in one script, not by element reference: the page
    // re-renders list rows, and a reference found a moment earlier may be stale.

    /// The rendered text of the first match (panics when nothing matches).
    pub fn text(&self, css: &str) -> String {
        let v = self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([css]),
        );
        v.as_str()
            .unwrap_or_else(|| panic!("no element matches {css}"))
            .to_string()
    }

    /// An attribute of the first match; empty when absent (panics when nothing matches).
    pub fn attribute(&self, css: &str, name: &str) -> String {
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
    pub fn is_displayed(&self, css: &str) -> bool {
        self.exec_bool_args(
            "const e = document.querySelector(arguments[0]);\
             if (!e) return false;\
             const r = e.getBoundingClientRect();\
             return e.getClientRects().length > 0 && r.width > 0 && r.height > 0 \
                    && getComputedStyle(e).visibility !== 'hidden';",
            json!([css]),
        )
    }

    /// Runs `script` with `args` (a JSON array) and returns what it returned.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        let args = match args {
            Value::Array(args) => args,
            other => vec![other],
        };
        self.run(script, self.client().execute(script, args))
    }

    pub fn exec_bool_args(&self, script: &str, args: Value) -> bool {
        self.exec(script, args).as_bool().unwrap_or(false)
    }

    pub fn exec_bool(&self, script: &str) -> bool {
        self.exec_bool_args(script, json!([]))
    }

    pub fn exec_str(&self, script: &str) -> String {
        let v = self.exec(script, json!([]));
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    }

    pub fn exec_f64(&self, script: &str) -> f64 {
        let v = self.exec(script, json!([]));
        v.as_f64()
            .unwrap_or_else(|| panic!("{script} returned {v}, not a number"))
    }

    /// Polls `cond` until it holds; on timeout fails showing what the page says.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
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
    pub fn screenshot_to(&self, path: &Path) -> Vec<u8> {
        let png = self.run("screenshot", self.client().screenshot());
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        fs::write(path, &png).unwrap();
        png
    }

    /// Fails the test on script errors or CSP violations in the browser console. Failed
    /// requests (`source: network`) are the pages' expected 401s and 409s, not errors.
    pub fn assert_clean_console(&self) {
        let problems: Vec<String> = self
            .browser_log()
            .into_iter()
            .filter(|e| {
                let message = e["message"].as_str().unwrap_or("");
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
    }

    /// The browser console (chromedriver's log extension, with `goog:loggingPrefs`);
    /// empty if unsupported.
    pub fn browser_log(&self) -> Vec<Value> {
        let log = self.client().issue_cmd(SessionPost {
            path: "se/log",
            body: json!({"type": "browser"}),
        });
        match self.rt.block_on(log) {
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
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
    }
}

// ------------------------------------------------------------------ plain HTTP

/// `GET base_url + path`, which must answer 200 with a Content-Security-Policy that has
/// `default-src 'self'` (no inline script or style).
pub fn get_page(base_url: &str, path: &str) -> Reply {
    let reply = request(Method::GET, &format!("{base_url}{path}"), &[], "");
    let status = reply.status;
    assert_eq!(status, 200, "GET {path} answered {status}");
    let csp = reply.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'"),
        "GET {path} must send Content-Security-Policy with default-src 'self'; got {csp:?}"
    );
    reply
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// One request and its whole reply ([`super::http::fetch`], for synchronous tests).
pub fn request(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    runtime().block_on(super::http::fetch(
        method,
        url,
        headers,
        body.to_string(),
        Duration::from_secs(120),
    ))
}
