//! The HTTP side's deadlines, connection cap and `/healthz`, on the real binary over real
//! TCP: a slow-loris header, idle kept-alive connections, a trickled body, connections
//! beyond the cap (FastAGI still answers), a hung database (`/healthz` within a second,
//! saying nothing about the database; the request budget; the SSE stream outlives it;
//! a FastAGI `verify` answers `error` within `--store-timeout`, and works again once the
//! database is back).

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{
    db::{DbProxy, ProxyMode, TestDb},
    http::{http, send},
    sse::SseReader,
    ServeProcess,
};
use hyper::{Method, StatusCode};
use serde_json::json;

/// Whether the server has closed `stream` (EOF or reset), reading what it sends.
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// How long until the server closes `stream`, waiting at most `limit` (`None`: still open).
fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if closed(stream) {
            return Some(started.elapsed());
        }
    }
    None
}

/// One keep-alive `GET /healthz` on `stream`; the status code.
fn get_healthz(stream: &mut TcpStream) -> u16 {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    // The body is small JSON ending in `}`.
    while !response.ends_with(b"}") {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&response[9..12]).parse().unwrap()
}

#[test]
fn a_slow_loris_header_is_closed_within_the_header_timeout() {
    let server = ServeProcess::start(&["--http-header-timeout", "1s"], None);
    let http = server.http_addr();
    let mut stream = TcpStream::connect(http).unwrap();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut closed_after = None;
    // One byte every 300 ms: never idle, never done.
    for byte in request.iter().cycle() {
        if stream.write_all(&[*byte]).is_err() || closed(&mut stream) {
            closed_after = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let closed_after = closed_after.expect("the slow header was still open after 10 s");
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?} (header timeout 1 s)"
    );
    eprintln!("slow-loris header closed after {closed_after:?} (--http-header-timeout 1s)");
    // The server still serves.
    assert_eq!(get_healthz(&mut TcpStream::connect(http).unwrap()), 200);
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let server = ServeProcess::start(
        &["--http-idle-timeout", "1s", "--http-header-timeout", "5s"],
        None,
    );
    let http = server.http_addr();
    let mut used: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(http).unwrap();
            assert_eq!(get_healthz(&mut stream), 200);
            stream
        })
        .collect();
    // Kept alive: a second request on the same connection within the idle timeout works.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get_healthz(&mut used[0]), 200);
    let mut silent = TcpStream::connect(http).unwrap();
    let started = Instant::now();
    for stream in used.iter_mut().chain([&mut silent]) {
        let remaining = Duration::from_secs(4).saturating_sub(started.elapsed());
        assert!(
            time_to_close(stream, remaining).is_some(),
            "an idle connection was still open after {:?}",
            started.elapsed()
        );
    }
    let all_closed = started.elapsed();
    assert!(all_closed < Duration::from_secs(4));
    eprintln!("21 idle connections closed {all_closed:?} after their last request (--http-idle-timeout 1s)");
}

#[test]
fn a_trickled_request_body_is_cut_off() {
    let server = ServeProcess::start(&["--http-body-timeout", "1s"], None);
    let mut stream = TcpStream::connect(server.http_addr()).unwrap();
    stream
        .write_all(
            b"POST /v1/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 200\r\n\r\n{",
        )
        .unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // One byte every 200 ms, until the server answers and closes.
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the trickled body was still being read after 10 s"
        );
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stream.write_all(b" ").is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
    eprintln!("trickled body answered 408 and closed after {took:?} (--http-body-timeout 1s)");
}

#[test]
fn sigterm_closes_idle_and_half_sent_connections_at_once() {
    let mut server = ServeProcess::start(&[], None);
    let http = server.http_addr();
    let mut used = TcpStream::connect(http).unwrap();
    assert_eq!(get_healthz(&mut used), 200);
    let _idle = TcpStream::connect(http).unwrap();
    let mut partial = TcpStream::connect(http).unwrap();
    partial.write_all(b"GET /hea").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "shutdown still waiting for idle connections after 3 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    eprintln!("SIGTERM with idle and half-sent HTTP connections: exited in {took:?}");
}

/// The open-file limit of 128 leaves HTTP 64 connections (half the limit is the most the
/// reserve takes); the 65th and later are closed at once, and FastAGI still takes a call.
#[test]
fn connections_beyond_the_http_cap_are_closed_at_once_and_fastagi_still_answers() {
    let server = ServeProcess::start(&["--http-idle-timeout", "60s"], Some(128));
    let http = server.http_addr();
    let log = server.log_text();
    let cap: usize = log
        .lines()
        .find(|l| l.contains("HTTP gateway listening"))
        .and_then(|l| l.split("max_connections=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cap in the log:\n{log}"));
    assert_eq!(cap, 64, "{log}");
    // Idle HTTP connections, held: more than the cap, more than the whole limit.
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(TcpStream::connect(http).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut open = 0;
    let mut slowest_close = Duration::ZERO;
    for stream in held.iter_mut() {
        let started = Instant::now();
        if closed(stream) {
            slowest_close = slowest_close.max(started.elapsed());
        } else {
            open += 1;
        }
    }
    assert_eq!(open, cap, "connections kept open");
    server.wait_for_log("HTTP connection cap reached");
    // FastAGI: a real call answers at once.
    let started = Instant::now();
    let out = assert_cmd::Command::cargo_bin("dialgate")
        .unwrap()
        .args(["simulate-call", "--target", &server.addr.to_string()])
        .args(["--from", "+8613800138000", "--to", "+861055550100"])
        .args(["--script", "ping", "--timeout", "5s"])
        .timeout(Duration::from_secs(10))
        .output()
        .unwrap();
    let ping_took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DIALGATE_RESULT=pong"),
        "FastAGI ping with HTTP at its cap: {stdout}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    // One more HTTP connection is closed at once.
    let mut beyond = TcpStream::connect(http).unwrap();
    let closed_in = time_to_close(&mut beyond, Duration::from_secs(2)).expect("closed at once");
    // Freed slots serve again.
    held.clear();
    let mut served = false;
    for _ in 0..50 {
        if let Ok(mut stream) = TcpStream::connect(http) {
            if !closed(&mut stream) {
                served = get_healthz(&mut stream) == 200;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served, "HTTP serves again once connections are gone");
    eprintln!(
        "nofile 128: HTTP cap {cap}, 200 idle connections: {open} held, the rest closed \
         (slowest {slowest_close:?}); FastAGI ping answered in {ping_took:?}; \
         one more closed in {closed_in:?}"
    );
}

// ---------------------------------------------------------------------------------------
// A hung database: /healthz, the request budget, the SSE stream
// ---------------------------------------------------------------------------------------

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
const PHONE: &str = "+8613800138000";
const DIALIN: &str = "+861055550100";

/// `/healthz` now: status, body text, how long it took.
async fn healthz(base: &str) -> (StatusCode, String, Duration) {
    let started = Instant::now();
    let reply = http(Method::GET, &format!("{base}/healthz"), &[], "").await;
    let took = started.elapsed();
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
        took,
    )
}

/// MariaDB behind a [`DbProxy`], one enrolled user, and `dialgate serve` on it with
/// `extra` flags; returns the server and its base URL.
fn serve_behind_proxy(db: &TestDb, proxy: &DbProxy, extra: &[&str]) -> (ServeProcess, String) {
    db.enroll(USER, PHONE, "Alice", PASSWORD);
    let mut args = vec![
        "--database-url",
        &proxy.url,
        "--dialin-number",
        DIALIN,
        "--trusted-trunk",
        "PJSIP/carrier",
    ];
    args.extend_from_slice(extra);
    let server = tokio::task::block_in_place(|| ServeProcess::start(&args, None));
    let base = format!("http://{}", server.http_addr());
    (server, base)
}

/// Starts a login for the enrolled user: its challenge id and the `Bearer` secret.
async fn start_login(base: &str) -> (String, String) {
    let login = http(
        Method::POST,
        &format!("{base}/v1/login"),
        &[("content-type", "application/json")],
        &json!({ "username": USER, "password": PASSWORD }).to_string(),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let login = login.json();
    (
        login["challenge_id"].as_str().unwrap().to_string(),
        format!("Bearer {}", login["secret"].as_str().unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_healthz_in_a_second_the_budget_and_the_sse_stream() {
    let db = TestDb::mysql();
    let proxy = DbProxy::to(&db).await;
    let name = db.mysql_name().unwrap().to_string();
    let (server, base) = serve_behind_proxy(&db, &proxy, &["--http-request-timeout", "2s"]);

    let (status, body, _) = healthz(&base).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The SSE stream is not cut by the 2 s budget: it waits, then reports the call.
    let (id, bearer) = start_login(&base).await;
    let stream = send(
        Method::GET,
        &format!("{base}/v1/login/{id}/events"),
        &[("authorization", &bearer)],
        "",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut sse = SseReader::new(stream.into_body());
    sse.event("pending", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = tokio::task::block_in_place(|| {
        assert_cmd::Command::cargo_bin("dialgate")
            .unwrap()
            .args(["simulate-call", "--target", &server.addr.to_string()])
            .args(["--from", PHONE, "--to", DIALIN])
            .timeout(Duration::from_secs(15))
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DIALGATE_RESULT=verified"), "{stdout}");
    let verified = sse.event("verified", Duration::from_secs(5)).await;
    assert_eq!(verified["state"], "verified");

    // The database hangs: /healthz says unavailable within a second, and nothing else.
    proxy.set(ProxyMode::Hang);
    for _ in 0..3 {
        let (status, body, took) = healthz(&base).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!({ "status": "unavailable", "database": "unavailable", "ami": "disabled" })
        );
        assert!(took < Duration::from_millis(2500), "/healthz took {took:?}");
        eprintln!("database hung: /healthz 503 in {took:?}");
    }
    // A request that needs the database answers 503 at its budget.
    let started = Instant::now();
    let balance = http(
        Method::GET,
        &format!("{base}/v1/balance"),
        &[(
            "cookie",
            "dialgate_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        "",
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        balance.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        balance.body
    );
    assert_eq!(balance.json()["error"], "timeout");
    assert!(took < Duration::from_secs(5), "the budget took {took:?}");
    eprintln!("database hung: a store request answered 503 timeout in {took:?} (budget 2 s)");

    // The database is gone: the answer still names nothing; the log has the detail.
    proxy.set(ProxyMode::Refuse);
    let port = proxy.addr.port().to_string();
    let mut last = String::new();
    for _ in 0..3 {
        let (status, body, took) = healthz(&base).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(took < Duration::from_millis(2500), "/healthz took {took:?}");
        for secret in ["mysql", "root", "127.0.0.1", &port, &name] {
            assert!(
                !body.contains(secret),
                "{secret:?} in the public answer: {body}"
            );
        }
        last = body;
    }
    assert!(last.contains("\"unavailable\""), "{last}");
    server.wait_for_log("health check: database unreachable");

    // The database is back: so is /healthz (a ping started during the outage does not
    // hold the answer).
    proxy.set(ProxyMode::Forward);
    let started = Instant::now();
    loop {
        let (status, body, _) = healthz(&base).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "/healthz still {status} after the database came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("database back: /healthz 200 after {:?}", started.elapsed());
}

/// `dialgate simulate-call` from the enrolled phone: its stdout and how long it took.
fn simulate_call(server: &ServeProcess) -> (String, Duration) {
    let started = Instant::now();
    let out = assert_cmd::Command::cargo_bin("dialgate")
        .unwrap()
        .args(["simulate-call", "--target", &server.addr.to_string()])
        .args(["--from", PHONE, "--to", DIALIN])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_verify_answers_error_within_the_store_timeout() {
    let db = TestDb::mysql();
    let proxy = DbProxy::to(&db).await;
    let (server, base) = serve_behind_proxy(&db, &proxy, &["--store-timeout", "1s"]);
    start_login(&base).await;

    // The database hangs: the call is told `error` within the budget (1 s) + slack.
    proxy.set(ProxyMode::Hang);
    let (stdout, took) = tokio::task::block_in_place(|| simulate_call(&server));
    assert!(stdout.contains("DIALGATE_RESULT=error"), "{stdout}");
    assert!(took < Duration::from_secs(4), "verify took {took:?}");
    eprintln!("database hung: verify answered error in {took:?} (store timeout 1 s)");
    server.wait_for_log("--store-timeout");

    // The database answers again: a new call verifies the still pending login.
    proxy.set(ProxyMode::Forward);
    let started = Instant::now();
    loop {
        let (stdout, _) = tokio::task::block_in_place(|| simulate_call(&server));
        if stdout.contains("DIALGATE_RESULT=verified") {
            break;
        }
        assert!(stdout.contains("DIALGATE_RESULT=error"), "{stdout}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "verify still failing after the database came back: {stdout}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "database back: verify verified after {:?}",
        started.elapsed()
    );
}
