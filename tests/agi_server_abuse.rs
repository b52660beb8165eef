//! Bad peers against the real `dialgate serve` binary over real TCP: each one gets a log
//! line saying what happened, never takes the server down, and never spins a core.

mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    path::Path,
    process::Output,
    time::Duration,
};

use common::{db::bare_cmd, load, ServeProcess};
use dialgate::agi::sim::transcript::{replay, ReplayOptions};

const ENV_HEAD: &str =
    "agi_network: yes\nagi_network_script: ping\nagi_request: agi://127.0.0.1/ping\n";

/// A full ping call still succeeds: the server is alive and serving.
async fn assert_serving(server: &ServeProcess) {
    let report = replay(
        &load("10-pjsip-ast20-ping.agi"),
        server.addr,
        ReplayOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("server stopped serving: {e}\nlog:\n{}", server.log_text()));
    assert_eq!(report.result.as_deref(), Some("pong"));
}

/// `serve` with `args` and one peer connected to its FastAGI port.
fn serve_with_peer(args: &[&str]) -> (ServeProcess, TcpStream) {
    let server = ServeProcess::start(args, None);
    let peer = TcpStream::connect(server.addr).unwrap();
    (server, peer)
}

/// `serve` with `args` and a call on it that has had its first command.
fn call_in_flight(args: &[&str]) -> (ServeProcess, TcpStream) {
    let (server, mut call) = serve_with_peer(args);
    call.write_all(format!("{ENV_HEAD}\n").as_bytes()).unwrap();
    let mut command = [0u8; 64];
    assert!(
        call.read(&mut command).unwrap() > 0,
        "the call is in its dialog"
    );
    (server, call)
}

/// Reads until the server closes; returns what it sent.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// The server must stay idle (not spin) for a second while this peer's state lingers.
fn assert_not_spinning(server: &ServeProcess) {
    let before = server.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_time() - before;
    assert!(
        used < Duration::from_millis(200),
        "server used {used:?} of CPU while idle"
    );
}

#[tokio::test]
async fn garbage_is_refused_with_a_log_line() {
    let (server, mut peer) = serve_with_peer(&[]);
    peer.write_all(b"GET / HTTP/1.1\r\nHost: dialgate\r\n\r\n")
        .unwrap();
    assert!(
        read_to_close(&mut peer).is_empty(),
        "nothing is written to a non-AGI peer"
    );
    server.wait_for_log("bad environment block");
    server.wait_for_log("malformed AGI environment line \"GET / HTTP/1.1\"");
    assert_serving(&server).await;
}

#[tokio::test]
async fn an_oversized_line_is_cut_off_at_8_kib() {
    let (server, mut peer) = serve_with_peer(&[]);
    let mut line = b"agi_network: ".to_vec();
    line.resize(20_000, b'y');
    // The server may close while we are still writing: that is the point.
    let _ = peer.write_all(&line);
    read_to_close(&mut peer);
    server.wait_for_log("line longer than 8192 bytes");
    assert_serving(&server).await;
}

#[tokio::test]
async fn an_endless_environment_block_is_cut_off() {
    let (server, mut peer) = serve_with_peer(&[]);
    for i in 0..100_000 {
        if peer
            .write_all(format!("agi_x_{i}: {}\n", "v".repeat(40)).as_bytes())
            .is_err()
        {
            break;
        }
    }
    read_to_close(&mut peer);
    server.wait_for_log("AGI environment larger than 65536 bytes");
    assert_serving(&server).await;
}

#[tokio::test]
async fn an_idle_peer_is_closed_after_the_environment_timeout_without_spinning() {
    let (server, mut peer) = serve_with_peer(&["--env-timeout", "1500ms"]);
    peer.write_all(ENV_HEAD.as_bytes()).unwrap();
    assert_not_spinning(&server);
    assert!(read_to_close(&mut peer).is_empty());
    server.wait_for_log("did not send a complete environment block in time");
    assert_serving(&server).await;
}

#[tokio::test]
async fn a_peer_leaving_mid_environment_is_logged_and_forgotten() {
    let (server, mut peer) = serve_with_peer(&[]);
    peer.write_all(ENV_HEAD.as_bytes()).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    read_to_close(&mut peer);
    server
        .wait_for_log("connection closed before the end of the AGI environment (3 lines received)");
    // The failure mode of one Python library: spinning forever on the half-closed socket.
    assert_not_spinning(&server);
    assert_serving(&server).await;
}

#[tokio::test]
async fn an_abrupt_reset_in_the_middle_of_a_call_is_logged() {
    let (server, mut peer) = serve_with_peer(&[]);
    peer.write_all(format!("{ENV_HEAD}agi_uniqueid: reset-1\n\n").as_bytes())
        .unwrap();
    let mut command = [0u8; 64];
    let n = peer.read(&mut command).unwrap();
    assert!(command[..n].starts_with(b"SET VARIABLE DIALGATE_RESULT pong"));
    // SO_LINGER 0: close with RST, as a crashed PBX host would.
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
    let log = server.wait_for_log("script failed");
    assert!(log.contains("reset-1"), "the log names the call:\n{log}");
    assert_serving(&server).await;
}

#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    // 64 descriptors: the runtime takes a dozen, the rest go to the held peers below.
    let server = ServeProcess::start(&["--env-timeout", "60s"], Some(64));
    let mut held: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    server.wait_for_log("out of file descriptors");
    assert_not_spinning(&server);
    held.clear();
    // Once the held peers are gone the backlog drains and real calls work again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_serving(&server).await;
    server.wait_for_log("FastAGI accepting connections again");
}

#[tokio::test]
async fn peers_outside_the_allow_list_are_refused() {
    let (server, mut peer) = serve_with_peer(&["--agi-allow", "10.9.9.9,192.0.2.0/24"]);
    peer.write_all(format!("{ENV_HEAD}\n").as_bytes()).unwrap();
    assert!(read_to_close(&mut peer).is_empty());
    server.wait_for_log("peer not in the allow-list");
    drop(server);

    let allowed = ServeProcess::start(&["--agi-allow", "127.0.0.0/8"], None);
    assert_serving(&allowed).await;
}

#[tokio::test]
async fn calls_beyond_max_connections_are_closed_at_once() {
    let (server, mut first) = call_in_flight(&["--max-connections", "1"]);
    let mut second = TcpStream::connect(server.addr).unwrap();
    assert!(read_to_close(&mut second).is_empty());
    server.wait_for_log("too many calls in progress");
    first.write_all(b"200 result=1\n").unwrap();
    read_to_close(&mut first);
    // The slot frees once the server task has finished with the call, an instant after
    // the socket closes.
    let ping = load("10-pjsip-ast20-ping.agi");
    let mut served = false;
    for _ in 0..50 {
        if replay(&ping, server.addr, ReplayOptions::default())
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served,
        "the freed slot takes a new call; log:\n{}",
        server.log_text()
    );
}

#[tokio::test]
async fn sigterm_stops_accepting_and_lets_the_call_in_flight_finish() {
    let (mut server, mut call) = call_in_flight(&["--grace-period", "10s"]);
    server.signal(libc::SIGTERM);
    server.wait_for_log("waiting for calls in progress");
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "no new calls after the signal"
    );
    call.write_all(b"200 result=1\n").unwrap();
    read_to_close(&mut call);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(server.log_text().contains("FastAGI server stopped"));
}

#[tokio::test]
async fn the_grace_period_cuts_off_calls_that_do_not_finish() {
    let (mut server, mut call) = call_in_flight(&["--grace-period", "300ms"]);
    server.signal(libc::SIGINT);
    // Asterisk never answers: the server closes the call when the grace period is over.
    read_to_close(&mut call);
    assert!(server.child.wait().unwrap().success());
    assert!(server
        .log_text()
        .contains("call cut off: shutdown grace period over"));
}

/// `dialgate replay <transcript> --target <server>`.
fn replay_command(transcript: &Path, server: &ServeProcess) -> Output {
    bare_cmd()
        .arg("replay")
        .arg(transcript)
        .args(["--target", &server.addr.to_string()])
        .output()
        .unwrap()
}

#[test]
fn replay_command_reports_success_and_divergence() {
    let server = ServeProcess::start(&[], None);
    let fixture = common::fixture_dir().join("10-pjsip-ast20-ping.agi");
    let ok = replay_command(&fixture, &server);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("DIALGATE_RESULT=pong"));

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.agi");
    let text = std::fs::read_to_string(&fixture).unwrap();
    std::fs::write(
        &wrong,
        text.replace("DIALGATE_RESULT pong", "DIALGATE_RESULT pang"),
    )
    .unwrap();
    let diverged = replay_command(&wrong, &server);
    assert_eq!(diverged.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&diverged.stdout);
    assert!(
        stdout.contains(
            "wrong.agi:28: expected the server to send \"SET VARIABLE DIALGATE_RESULT pang\""
        ),
        "{stdout}"
    );
}

#[test]
fn an_unreachable_database_stops_the_start_with_the_cause() {
    let out = bare_cmd()
        .args(["serve", "--agi-listen", "127.0.0.1:0"])
        .args(["--database-url", "mysql://root@127.0.0.1:1/nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("cannot connect to MySQL/MariaDB database mysql://root@127.0.0.1:1/nowhere"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_user_errors_with_a_message() {
    let out = bare_cmd()
        .args(["serve", "--agi-allow", "not-an-ip"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an IP address or network"));

    let busy = ServeProcess::start(&[], None);
    let data = tempfile::tempdir().unwrap();
    let out = bare_cmd()
        .args(["serve", "--agi-listen", &busy.addr.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a port in use is a system error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen for FastAGI on"));
}
