//! The AMI client against a scripted AMI server over real TCP: every transcript in
//! fixtures/ami, login failure and backoff, the link dropping mid-action, a missed pong,
//! garbage from the server and an injection attempt.

mod common;

use std::time::{Duration, Instant};

use common::ami_server::{ami_fixtures, AmiScript, ScriptedAmi};
use dialgate::ami::{
    Action, AmiClient, AmiConfig, AmiError, Backoff, LinkState, Message, Originate,
    OriginateReason, OriginateResult, ProtocolError,
};
use tokio::sync::broadcast;

fn config(server: &ScriptedAmi) -> AmiConfig {
    AmiConfig {
        address: server.addr.to_string(),
        username: "dialgate".into(),
        secret: "s3cret".into(),
        events: true,
        // Fixture dialogs must not be interrupted by a keep-alive Ping.
        ping_interval: Duration::from_secs(3600),
        action_timeout: Duration::from_secs(3),
        reconnect: Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_secs(1),
        },
    }
}

async fn connect(config: AmiConfig) -> (AmiClient, broadcast::Receiver<Message>) {
    let (client, events) = AmiClient::connect(config).unwrap();
    client
        .wait_connected(Duration::from_secs(5))
        .await
        .expect("logged in");
    (client, events)
}

async fn next_event(events: &mut broadcast::Receiver<Message>) -> Message {
    tokio::time::timeout(Duration::from_secs(3), events.recv())
        .await
        .expect("an event in time")
        .unwrap()
}

const LOGIN: &str = "> Action: Login\n> ActionID: 1\n> Username: dialgate\n> Secret: s3cret\n\
> Events: on\n>\n< Response: Success\n< ActionID: {{ActionID}}\n< Message: Authentication accepted\n<\n";

fn script(name: &str, body: &str) -> AmiScript {
    AmiScript::parse(
        name,
        &format!("< Asterisk Call Manager/5.0.2\n{LOGIN}{body}"),
    )
}

const PING_PONG: &str = "> Action: Ping\n> ActionID: 2\n>\n< Response: Success\n\
< ActionID: {{ActionID}}\n< Ping: Pong\n< Timestamp: 1700000000.000001\n<\n";

fn callback_originate() -> Originate {
    Originate {
        channel: "PJSIP/+15550100@carrier".into(),
        context: Some("dialgate-callback".into()),
        exten: Some("s".into()),
        priority: Some(1),
        caller_id: Some("\"dialgate\" <+15550199>".into()),
        channel_id: Some("dialgate-c42".into()),
        variables: vec![("DIALGATE_CHALLENGE".into(), "c42".into())],
        ..Originate::default()
    }
}

fn refused_message(e: AmiError) -> String {
    match e {
        AmiError::Refused { message, .. } => message,
        other => panic!("expected Refused, got {other:?}"),
    }
}

/// Plays one fixture and checks what the client made of it.
async fn drive(script: AmiScript) {
    let name = script.name.clone();
    let reason: Option<i32> = script.header("reason").map(|r| r.parse().unwrap());
    let server = ScriptedAmi::start(vec![script]).await;
    let number = &name[..2];
    if number == "06" {
        let (client, _) = AmiClient::connect(config(&server)).unwrap();
        let err = client
            .wait_connected(Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AmiError::LoginFailed(m) if m == "Authentication failed"),
            "{err:?}"
        );
        assert!(err.to_string().contains("login refused"), "{err}");
        assert!(matches!(client.state(), LinkState::Reconnecting { .. }));
        assert!(client.stats().login_failures >= 1);
        server.assert_played(1).await;
        return;
    }
    let (client, mut events) = connect(config(&server)).await;
    match number {
        "01" => {
            assert_eq!(client.version().as_deref(), Some("1.0"));
            let pong = client.ping().await.unwrap();
            assert_eq!(pong.response(), Some("Pong"));
        }
        "02" => {
            assert_eq!(client.version().as_deref(), Some("1.1"));
            assert_eq!(next_event(&mut events).await.event(), Some("FullyBooted"));
            let out = client.command("core show uptime").await.unwrap();
            assert_eq!(
                out.0,
                [
                    "System uptime: 2 hours, 5 minutes, 3 seconds",
                    "Last reload: 2 hours, 5 minutes, 3 seconds"
                ]
            );
        }
        "03" => {
            assert_eq!(client.version().as_deref(), Some("2.10.4"));
            let pong = client.ping().await.unwrap();
            assert_eq!(pong.get("ping"), Some("Pong"));
            let out = client.command("core show settings").await.unwrap();
            assert_eq!(
                out.0,
                [
                    "",
                    "PBX Core settings",
                    "-----------------",
                    "  Version: 13.38.3",
                    "  Maximum calls: Not set"
                ]
            );
        }
        "04" => {
            assert_eq!(client.version().as_deref(), Some("5.0.2"));
            client.ping().await.unwrap();
            let out = client.command("core show uptime").await.unwrap();
            assert_eq!(out.0.len(), 2);
            assert_eq!(out.0[1], "Last reload: 2 hours, 5 minutes, 3 seconds");
            let err = client.command("foo bar").await.unwrap_err();
            let message = refused_message(err);
            assert!(message.contains("No such command 'foo bar'"), "{message}");
        }
        "05" => {
            assert_eq!(client.version().as_deref(), Some("11.0.0"));
            let ok = client
                .hangup("PJSIP/carrier-00000001", Some(16))
                .await
                .unwrap();
            assert_eq!(ok.get("Message"), Some("Channel Hungup"));
            let gone = client
                .hangup("PJSIP/carrier-00000002", None)
                .await
                .unwrap_err();
            assert_eq!(refused_message(gone), "No such channel");
            client.logoff().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(client.state(), LinkState::Disabled);
            assert!(matches!(client.ping().await, Err(AmiError::Disabled)));
        }
        "07" => {
            let outcome = client.originate(callback_originate()).await.unwrap();
            assert_eq!(outcome.response, OriginateResult::Success);
            assert_eq!(outcome.reason, OriginateReason::Answered);
            assert!(outcome.answered());
            assert_eq!(outcome.channel.as_deref(), Some("PJSIP/carrier-00000007"));
            assert_eq!(outcome.uniqueid.as_deref(), Some("dialgate-c42"));
            let names: Vec<String> = [(); 3]
                .iter()
                .map(|_| events.try_recv().unwrap().event().unwrap().to_string())
                .collect();
            assert_eq!(names, ["FullyBooted", "Newchannel", "OriginateResponse"]);
        }
        "08" | "09" | "10" | "11" | "12" => {
            let outcome = client.originate(callback_originate()).await.unwrap();
            assert_eq!(outcome.response, OriginateResult::Failure, "{name}");
            assert_eq!(Some(outcome.reason.code()), reason, "{name}");
            let expected = match number {
                "08" => OriginateReason::Failed,
                "09" => OriginateReason::HungUp,
                "10" => OriginateReason::NoAnswer,
                "11" => OriginateReason::Busy,
                _ => OriginateReason::Congestion,
            };
            assert_eq!(outcome.reason, expected, "{name}");
            assert!(!outcome.answered());
            if reason == Some(0) {
                assert_eq!(outcome.uniqueid, None, "`<null>` is no uniqueid");
            }
        }
        "13" => {
            let list = client
                .send_list(Action::new("CoreShowChannels"))
                .await
                .unwrap();
            assert_eq!(list.response.get("Message"), Some("Channels will follow"));
            assert_eq!(list.events.len(), 2);
            assert_eq!(list.events[0].get("Uniqueid"), Some("dialgate-c42"));
            let complete = list.complete.unwrap();
            assert_eq!(complete.get("ListItems"), Some("2"));
            // The `\r\n\n` terminator did not swallow or glue anything: the link still works.
            assert!(matches!(client.state(), LinkState::Connected { .. }));
        }
        "14" => {
            assert_eq!(next_event(&mut events).await.event(), Some("FullyBooted"));
            let rtcp = next_event(&mut events).await;
            assert_eq!(rtcp.event(), Some("RTCPReceived"));
            assert_eq!(rtcp.raw_lines(), ["From 192.168.0.1:1234"]);
            assert_eq!(rtcp.get("ssrc"), Some("0x4e1f2a3b"));
            let user = next_event(&mut events).await;
            assert_eq!(user.get_all("Variable"), ["A=1", "B=2"]);
        }
        _ => panic!("{name}: no driver for this fixture; add one to tests/ami_client.rs"),
    }
    server.assert_played(1).await;
    assert_eq!(client.stats().reconnects(), 0, "{name}");
}

#[tokio::test]
async fn every_fixture_plays_against_the_client() {
    let files = ami_fixtures();
    assert!(files.len() >= 14, "{files:?}");
    for file in files {
        drive(AmiScript::load(&file)).await;
    }
}

#[tokio::test]
async fn login_failure_is_retried_with_backoff_without_spinning() {
    let server = ScriptedAmi::fixture("06-ami5.0.2-login-failure.ami").await;
    let mut config = config(&server);
    config.reconnect = Backoff {
        min: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };
    let (client, _) = AmiClient::connect(config).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = server.connections();
    // Immediately, then >= 200 ms, >= 200 ms, >= 400 ms apart: at most 4 in one second.
    assert!(
        (2..=4).contains(&attempts),
        "{attempts} connection attempts in 1 s"
    );
    let stats = client.stats();
    assert_eq!(stats.logins, 0);
    assert!(stats.login_failures >= 2, "{stats:?}");
    assert!(matches!(
        client.last_error(),
        Some(AmiError::LoginFailed(_))
    ));
    // An action while the login keeps failing says why instead of hanging.
    let mut quick = AmiClient::connect(AmiConfig {
        action_timeout: Duration::from_millis(300),
        ..self::config(&server)
    })
    .unwrap()
    .0;
    let err = quick.ping().await.unwrap_err();
    assert!(
        matches!(&err, AmiError::LinkDown(m) if m.contains("Authentication failed")),
        "{err:?}"
    );
    quick = AmiClient::disabled();
    assert_eq!(quick.state(), LinkState::Disabled);
    server.assert_played(1).await;
}

#[tokio::test]
async fn link_drop_mid_action_fails_it_and_the_client_logs_in_again_first() {
    let dropped = AmiScript::parse(
        "drop",
        &format!(
            "# after: close\n< Asterisk Call Manager/5.0.2\n{LOGIN}> Action: Ping\n> ActionID: 2\n>\n"
        ),
    );
    // The second connection must see Login before the next action.
    let server = ScriptedAmi::start(vec![dropped, script("again", PING_PONG)]).await;
    let (client, _) = connect(config(&server)).await;
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(&err, AmiError::LinkDown(m) if m.contains("closed")),
        "{err:?}"
    );
    let pong = client.ping().await.unwrap();
    assert_eq!(pong.get("Ping"), Some("Pong"));
    server.assert_played(2).await;
    let stats = client.stats();
    assert_eq!(stats.reconnects(), 1, "{stats:?}");
    assert_eq!(stats.link_drops, 1);
}

#[tokio::test]
async fn missed_pong_reconnects() {
    let silent = script("silent", "> Action: Ping\n> ActionID: 2\n>\n");
    let server = ScriptedAmi::start(vec![silent, script("idle", "")]).await;
    let mut config = config(&server);
    config.ping_interval = Duration::from_millis(150);
    let (client, _) = connect(config).await;
    let started = Instant::now();
    server.wait_connections(2, Duration::from_secs(3)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "a ping, then a missed one"
    );
    client.wait_connected(Duration::from_secs(3)).await.unwrap();
    let stats = client.stats();
    assert!(
        stats.missed_pongs >= 1 && stats.reconnects() >= 1,
        "{stats:?}"
    );
    server.assert_played(2).await;
}

#[tokio::test]
async fn garbage_from_the_server_is_a_clean_error_and_a_reconnect() {
    let bad_banner = AmiScript::parse("ssh", "< SSH-2.0-OpenSSH_9.6\n");
    let garbage = script("garbage", "< \u{1}\u{2} this is not AMI\n<\n");
    let server = ScriptedAmi::start(vec![bad_banner, garbage, script("good", PING_PONG)]).await;
    let (client, _) = AmiClient::connect(config(&server)).unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.ping().await {
                Ok(pong) => break pong,
                Err(AmiError::LinkDown(_)) => continue,
                Err(e) => panic!("{e:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(pong.get("Ping"), Some("Pong"));
    assert_eq!(server.connections(), 3);
    let error = client.last_error().unwrap();
    assert!(
        matches!(&error, AmiError::Protocol(e) if matches!(**e, ProtocolError::MalformedLine(_))),
        "{error:?}"
    );
    assert_eq!(client.stats().reconnects(), 1);
    server.assert_played(3).await;
}

#[tokio::test]
async fn injection_in_a_variable_is_refused_before_writing() {
    // After the login the server expects a Ping and nothing before it.
    let server = ScriptedAmi::start(vec![script("inject", PING_PONG)]).await;
    let (client, _) = connect(config(&server)).await;
    let mut originate = callback_originate();
    originate.variables = vec![(
        "DIALGATE_CHALLENGE".into(),
        "c42\r\n\r\nAction: Command\r\nCommand: core stop now".into(),
    )];
    let err = client.originate(originate).await.unwrap_err();
    assert!(
        matches!(&err, AmiError::Protocol(e) if matches!(**e, ProtocolError::UnsafeValue { .. })),
        "{err:?}"
    );
    let raw = Action::new("Setvar")
        .field("Variable", "X")
        .field("Value", "1\nAction: Logoff");
    assert!(matches!(client.send(raw).await, Err(AmiError::Protocol(_))));
    client.ping().await.unwrap();
    server.assert_played(1).await;
    assert_eq!(client.stats().reconnects(), 0);
}

#[tokio::test]
async fn originate_response_overtaking_the_queued_response_still_matches() {
    let body = "> Action: Originate\n> ActionID: 2\n> Channel: Local/100@test\n\
> Application: Playback\n> Data: beep\n> Timeout: 1000\n> Async: true\n>\n\
< Event: OriginateResponse\n< ActionID: {{ActionID}}\n< Response: Failure\n\
< Channel: Local/100@test\n< Reason: 3\n< Uniqueid: <null>\n<\n\
< Response: Success\n< ActionID: {{ActionID}}\n< Message: Originate successfully queued\n<\n";
    let server = ScriptedAmi::start(vec![script("overtake", body)]).await;
    let (client, _) = connect(config(&server)).await;
    let outcome = client
        .originate(Originate {
            channel: "Local/100@test".into(),
            application: Some("Playback".into()),
            data: Some("beep".into()),
            timeout_ms: 1000,
            ..Originate::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (outcome.response, outcome.reason),
        (OriginateResult::Failure, OriginateReason::NoAnswer)
    );
    assert_eq!(outcome.reason.as_str(), "no answer");
    server.assert_played(1).await;
}

#[tokio::test]
async fn logoff_answered_by_a_bare_close_stops_without_reconnecting() {
    let mut close = script("close", "> Action: Logoff\n> ActionID: 2\n>\n");
    close.comments.push("after: close".into());
    let server = ScriptedAmi::start(vec![close]).await;
    let (client, _) = connect(config(&server)).await;
    client.logoff().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.state(), LinkState::Disabled);
    assert_eq!(server.connections(), 1);
    server.assert_played(1).await;
}
