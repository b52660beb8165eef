//! Every transcript in fixtures/agi replayed over real TCP against the real server:
//! Asterisk's side is played byte for byte and any divergence fails the test.

mod common;

use std::time::Duration;

use common::{follow_router, load, transcript_env, transcripts, TestServer};
use dialgate::{
    agi::{
        sim::{replay, ReplayOptions, Transcript},
        AgiCall, CallError, Command, Reply, Router, ServerConfig,
    },
    dialin,
};

fn framings() -> [ReplayOptions; 3] {
    let base = ReplayOptions::default();
    [
        base,
        ReplayOptions { crlf: true, ..base },
        ReplayOptions {
            bytewise: true,
            ..base
        },
    ]
}

/// Replays one transcript against the server it was written for: dialgate's own router
/// (`# server: dialgate`) or a script that sends the recorded commands.
async fn replay_one(transcript: &Transcript, options: ReplayOptions) {
    let dialgate_side = transcript.header("server") == Some("dialgate");
    let (router, log) = if dialgate_side {
        (dialin::router(), None)
    } else {
        let (router, log) = follow_router(transcript);
        (router, Some(log))
    };
    let server = TestServer::start(router, ServerConfig::default()).await;
    let outcome = replay(transcript, server.addr, options).await;
    server.shutdown().await;
    let log = log.map(|l| l.lock().unwrap().take());
    if let Err(divergence) = outcome {
        panic!("{options:?}: {divergence}\nscript side: {log:#?}");
    }
    if let Some(log) = log {
        let log = log.expect("the script ran to its end");
        assert_eq!(log.env, transcript_env(transcript), "{}", transcript.name);
        for (command, reply) in &log.exchanges {
            assert!(reply.is_ok(), "{}: {command}: {reply:?}", transcript.name);
        }
    }
}

#[tokio::test]
async fn every_transcript_replays_with_lf_crlf_and_bytewise_segments() {
    let files = transcripts();
    assert!(
        files.len() >= 13,
        "expected the recorded and written transcripts, found {files:?}"
    );
    for file in files {
        let transcript = Transcript::load(&file).unwrap();
        for options in framings() {
            replay_one(&transcript, options).await;
        }
    }
}

async fn follow(name: &str) -> common::FollowLog {
    let transcript = load(name);
    let (router, log) = follow_router(&transcript);
    let server = TestServer::start(router, ServerConfig::default()).await;
    replay(&transcript, server.addr, ReplayOptions::default())
        .await
        .unwrap();
    server.shutdown().await;
    let log = log.lock().unwrap().take().unwrap();
    log
}

/// Replays `transcript` against a server whose script `name` is `script`, and returns
/// what the script produced. The replay itself must match byte for byte.
async fn replay_with_script<T, F, Fut>(transcript: &Transcript, name: &str, script: F) -> T
where
    T: Send + 'static,
    F: FnOnce(AgiCall) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let once = std::sync::Mutex::new(Some((script, tx)));
    let router = Router::new().route(name, move |call: AgiCall| {
        let (script, tx) = once.lock().unwrap().take().expect("one call");
        async move {
            tx.send(script(call).await).ok();
            Ok(())
        }
    });
    let server = TestServer::start(router, ServerConfig::default()).await;
    replay(transcript, server.addr, ReplayOptions::default())
        .await
        .unwrap();
    server.shutdown().await;
    rx.await.unwrap()
}

fn success(reply: &Reply) -> &dialgate::agi::Response {
    match reply {
        Reply::Success(r) => r,
        other => panic!("expected 200, got {other:?}"),
    }
}

#[tokio::test]
async fn recorded_answered_call_sees_its_own_hangup_then_511() {
    let log = follow("01-sip-answered-verify.agi").await;
    assert_eq!(log.env.caller_number().as_deref(), Some("+8613800138000"));
    assert_eq!(
        log.env.channel_technology_endpoint(),
        Some(("SIP".into(), "loopback".into()))
    );
    assert_eq!(
        success(log.reply(2)).data.as_deref(),
        Some("+8613800138000")
    );
    assert_eq!(success(log.reply(4)).attribute("endpos"), Some("8000"));
    assert_eq!(log.reply(6), &Reply::DeadChannel);
    assert_eq!(success(log.reply(7)).data.as_deref(), Some("ok"));
    assert!(log.dead_at_end);
}

#[tokio::test]
async fn recorded_hangup_before_reply_is_an_event_not_a_reply() {
    let log = follow("06-local-hangup-race-during-playback.agi").await;
    assert_eq!(success(log.reply(1)).result, "-1");
    // HANGUP arrived first; the reply that followed still belongs to GET VARIABLE.
    assert_eq!(
        success(log.reply(2)).data.as_deref(),
        Some("+8613800138000")
    );
    assert_eq!(log.reply(3), &Reply::DeadChannel);
    assert_eq!(log.env.dnid(), None, "agi_dnid: unknown means absent");
}

#[tokio::test]
async fn after_hangup_a_live_only_command_fails_fast_and_is_never_written() {
    // The recorded race, cut before the script's STREAM FILE on the dead channel: a
    // strict AgiCall must refuse that command itself, writing nothing.
    let mut transcript = load("06-local-hangup-race-during-playback.agi");
    transcript.lines.truncate(transcript.lines.len() - 2);
    let name = transcript_env(&transcript).script_path();
    let (dead, refused) = replay_with_script(&transcript, &name, |mut call| async move {
        for command in [
            Command::answer(),
            Command::stream_file("silence/10", ""),
            Command::get_variable("CALLERID(num)"),
        ] {
            call.send_ok(&command).await.unwrap();
        }
        let refused = call.send(&Command::stream_file("silence/1", "")).await;
        (call.is_dead(), refused)
    })
    .await;
    assert!(dead);
    assert!(
        matches!(refused, Err(CallError::ChannelDead("STREAM FILE"))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_command_with_a_newline_is_refused_before_anything_is_written() {
    let mut transcript = load("10-pjsip-ast20-ping.agi");
    transcript.lines.truncate(transcript.lines.len() - 2);
    // The transcript ends after the environment: any byte the server writes diverges.
    let outcome = replay_with_script(&transcript, "ping", |mut call| async move {
        call.send(&Command::set_variable("X", "1\nEXEC System reboot"))
            .await
    })
    .await;
    assert!(
        outcome.unwrap_err().to_string().contains("CR, LF or NUL"),
        "refused with a clear error"
    );
}

#[tokio::test]
async fn a_command_without_reply_times_out_and_the_call_is_abandoned() {
    let mut transcript = load("10-pjsip-ast20-ping.agi");
    // Asterisk never answers the SET VARIABLE.
    transcript.lines.pop();
    let (first, second) = replay_with_script(&transcript, "ping", |mut call| async move {
        call.set_command_timeout(Duration::from_millis(200));
        let first = call
            .send(&Command::set_variable("DIALGATE_RESULT", "pong"))
            .await;
        (first, call.send(&Command::noop()).await)
    })
    .await;
    assert!(matches!(first, Err(CallError::Timeout { .. })), "{first:?}");
    assert!(matches!(second, Err(CallError::Broken)), "{second:?}");
}
