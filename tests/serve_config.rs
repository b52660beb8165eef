//! `dialgate serve` settings from flags and the config file's `[serve]` table, through the
//! real binary.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
};

use common::ServeProcess;

/// One HTTP/1.1 request; returns the status code and the whole response text.
fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response)
}

fn serve_fails_with(args: &[&str], message: &str) {
    let data = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("dialgate")
        .unwrap()
        .arg("--data-dir")
        .arg(data.path())
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in:\n{stderr}"
    );
}

#[test]
fn the_config_file_serve_table_sets_the_login_limit_and_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    std::fs::write(
        &config,
        "[serve]\ndialin_numbers = [\"+861055550100\"]\nlogin_limit_per_ip = 2\n",
    )
    .unwrap();
    let server = ServeProcess::start(&["--config", config.to_str().unwrap()], None);
    let http = server.http_addr();
    let wrong = r#"{"username":"nobody","password":"wrong password"}"#;
    assert_eq!(post_json(http, "/v1/login", wrong).0, 401);
    assert_eq!(post_json(http, "/v1/login", wrong).0, 401);
    let (status, response) = post_json(http, "/v1/login", wrong);
    assert_eq!(status, 429, "{response}");
    assert!(
        response.to_lowercase().contains("retry-after:"),
        "{response}"
    );
    assert!(!server.log_text().contains("no --dialin-number configured"));
}

#[test]
fn unknown_keys_in_the_serve_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    std::fs::write(&config, "[serve]\ndialin_number = \"+861055550100\"\n").unwrap();
    serve_fails_with(
        &["--config", config.to_str().unwrap()],
        "unknown field `dialin_number`",
    );
}

#[test]
fn inconsistent_settings_stop_the_start_with_what_to_fix() {
    serve_fails_with(&["--code-digits", "4"], "--code-digits needs --mode answer");
    serve_fails_with(&["--challenge-ttl", "20m"], "outside 10s..600s");
    serve_fails_with(&["--trusted-trunk", "carrier"], "write TECHNOLOGY/ENDPOINT");
    serve_fails_with(&["--dialin-number", "12"], "--dialin-number \"12\"");
    serve_fails_with(&["--signal-key", "short"], "at least 32 characters");
}
