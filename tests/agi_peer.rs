//! `agi::sim::peer` (Asterisk's side of a call) against the real in-process server, and the
//! `dialgate simulate-call` command against a `dialgate serve` process.

mod common;

use std::time::Duration;

use assert_cmd::Command as Cmd;
use common::{free_port, load, transcript_env, ServeProcess, TestServer};
use dialgate::agi::{
    server::RESULT_VARIABLE,
    sim::{place_call, CallSpec, PeerError},
    AgiCall, AgiEnv, Command, Reply, Router, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(5);

fn spec(script: &str) -> CallSpec {
    CallSpec {
        script: script.into(),
        caller: Some("+8613800138000".into()),
        dnid: Some("+861055550100".into()),
        extension: "+861055550100".into(),
        context: "dialin".into(),
        args: vec!["+861055550100".into()],
        ..CallSpec::default()
    }
}

#[tokio::test]
async fn ping_sets_pong_without_answering() {
    let server = TestServer::start(dialgate::dialin::router(), ServerConfig::default()).await;
    let outcome = place_call(server.addr, &spec("ping"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(outcome.result.as_deref(), Some("pong"));
    assert!(!outcome.answered);
    assert!(!outcome.hung_up);
    assert_eq!(outcome.exchanges.len(), 1);
    assert_eq!(
        outcome.exchanges[0].command,
        "SET VARIABLE DIALGATE_RESULT pong"
    );
    assert_eq!(outcome.exchanges[0].reply, "200 result=1");
    assert_eq!(
        outcome.variables,
        vec![(RESULT_VARIABLE.to_string(), "pong".to_string())]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_script_is_notfound() {
    let server = TestServer::start(dialgate::dialin::router(), ServerConfig::default()).await;
    let outcome = place_call(server.addr, &spec("verfy?lang=en"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(outcome.result.as_deref(), Some("notfound"));
    server.shutdown().await;
}

#[test]
fn env_block_has_asterisk_20_key_order() {
    // Same keys in the same order as the Asterisk 20 environment of the ping fixture.
    let fixture = transcript_env(&load("10-pjsip-ast20-ping.agi"));
    let mut s = spec("ping");
    s.args.clear();
    let block = s.env_block("127.0.0.1", 4573);
    assert!(block.ends_with(b"\n\n") && !block.ends_with(b"\n\n\n"));
    let lines: Vec<&[u8]> = block[..block.len() - 2].split(|&b| b == b'\n').collect();
    let env = AgiEnv::from_lines(lines).unwrap();
    let keys = |e: &AgiEnv| e.entries().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
    assert_eq!(keys(&env), keys(&fixture));
    assert_eq!(
        env.get("agi_request").as_deref(),
        Some("agi://127.0.0.1/ping")
    );
    assert_eq!(env.get("agi_type").as_deref(), Some("PJSIP"));
    assert_eq!(env.get("agi_accountcode").as_deref(), Some(""));
    assert_eq!(env.get("agi_rdnis").as_deref(), Some("unknown"));
}

/// ANSWER, GET DATA, HANGUP, then STREAM FILE (left for "Asterisk" to refuse with 511);
/// DIALGATE_RESULT records what each step got.
fn dialog_router() -> Router {
    Router::new().route("dialog", |mut call: AgiCall| async move {
        call.let_asterisk_judge_dead_channel(true);
        call.send_ok(&Command::answer()).await?;
        let data = call.send_ok(&Command::get_data("beep", 3000, 4)).await?;
        call.send_ok(&Command::hangup()).await?;
        let after = call.send(&Command::stream_file("bye", "")).await?;
        let summary = format!(
            "digits={}{};after={}",
            data.result,
            if data.timed_out() { "(timeout)" } else { "" },
            after.code()
        );
        call.set_variable(RESULT_VARIABLE, &summary).await?;
        call.close().await;
        Ok(())
    })
}

#[tokio::test]
async fn answer_get_data_hangup_then_dead_channel() {
    let server = TestServer::start(dialog_router(), ServerConfig::default()).await;
    let mut s = spec("dialog");
    s.digits = Some("1234".into());
    let outcome = place_call(server.addr, &s, TIMEOUT).await.unwrap();
    let dialog: Vec<(&str, &str, bool)> = outcome
        .exchanges
        .iter()
        .map(|e| (e.command.as_str(), e.reply.as_str(), e.hangup))
        .collect();
    assert_eq!(
        dialog,
        vec![
            ("ANSWER", "200 result=0", false),
            ("GET DATA beep 3000 4", "200 result=1234", false),
            ("HANGUP", "200 result=1", true),
            (
                "STREAM FILE bye \"\"",
                "511 Command Not Permitted on a dead channel or intercept routine",
                false
            ),
            (
                "SET VARIABLE DIALGATE_RESULT digits=1234;after=511",
                "200 result=1",
                false
            ),
        ]
    );
    assert!(outcome.answered);
    assert!(outcome.hung_up);
    assert_eq!(outcome.result.as_deref(), Some("digits=1234;after=511"));
    server.shutdown().await;
}

#[tokio::test]
async fn get_data_times_out_without_digits() {
    let server = TestServer::start(dialog_router(), ServerConfig::default()).await;
    let outcome = place_call(server.addr, &spec("dialog"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(outcome.exchanges[1].reply, "200 result= (timeout)");
    assert_eq!(
        outcome.result.as_deref(),
        Some("digits=(timeout);after=511")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn caller_hangs_up_mid_call() {
    // After the first reply the caller hangs up: the script (strict by default) sees the
    // HANGUP and its STREAM FILE is refused locally; dead-allowed commands still work.
    let router = Router::new().route("hang", |mut call: AgiCall| async move {
        call.send_ok(&Command::answer()).await?;
        let refused = call.send(&Command::stream_file("x", "")).await.is_err();
        let value = call.send(&Command::get_variable("CALLERID(num)")).await?;
        let num = match value {
            Reply::Success(r) => r.data.unwrap_or_default(),
            other => other.to_string(),
        };
        call.set_variable(RESULT_VARIABLE, &format!("{refused}:{num}"))
            .await?;
        call.close().await;
        Ok(())
    });
    let server = TestServer::start(router, ServerConfig::default()).await;
    let mut s = spec("hang");
    s.hangup_after = Some(1);
    let outcome = place_call(server.addr, &s, TIMEOUT).await.unwrap();
    assert!(outcome.exchanges[0].hangup);
    assert!(outcome.hung_up);
    assert_eq!(outcome.result.as_deref(), Some("true:+8613800138000"));
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_target_is_a_connect_error() {
    let addr = free_port();
    let err = place_call(addr, &spec("ping"), TIMEOUT).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut sink)).await;
    });
    let err = place_call(addr, &spec("ping"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Timeout { .. }), "{err}");
    assert!(!err.is_unreachable());
    hold.abort();
}

#[tokio::test]
async fn overlong_line_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flood = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let line = format!("VERBOSE \"{}\" 1\n", "x".repeat(9 * 1024));
        let _ = socket.write_all(line.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let err = place_call(addr, &spec("ping"), TIMEOUT).await.unwrap_err();
    assert!(
        matches!(err, PeerError::LineTooLong { limit: 8192, .. }),
        "{err}"
    );
    flood.abort();
}

#[test]
fn cli_simulate_call_against_serve() {
    let serve = ServeProcess::start(&[], None);
    let output = Cmd::cargo_bin("dialgate")
        .unwrap()
        .args(["simulate-call", "--target", &serve.addr.to_string()])
        .args(["--from", "+8613800138000", "--to", "+861055550100"])
        .args(["--script", "ping"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        "> SET VARIABLE DIALGATE_RESULT pong\n< 200 result=1\nDIALGATE_RESULT=pong\n"
    );
}

#[test]
fn cli_unreachable_target_exits_2() {
    let addr = free_port();
    let output = Cmd::cargo_bin("dialgate")
        .unwrap()
        .args(["simulate-call", "--target", &addr.to_string()])
        .args(["--from", "+8613800138000", "--to", "+861055550100"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

#[test]
fn cli_bad_arguments_exit_1() {
    for args in [
        &["--target", "localhost", "--from", "1", "--to", "2"][..],
        &[
            "--target",
            "127.0.0.1:1",
            "--from",
            "1",
            "--to",
            "2",
            "--digits",
            "12x",
        ],
        &["--target", "127.0.0.1:1", "--from", "1"],
    ] {
        let output = Cmd::cargo_bin("dialgate")
            .unwrap()
            .arg("simulate-call")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
    }
}
