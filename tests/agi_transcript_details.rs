//! What a script sees in each written transcript (fixtures/agi/11-* to 25-*): the typed
//! environment accessors and the parsed replies, checked over real TCP against the real
//! server. (tests/agi_transcripts.rs already replays every file byte for byte.)

mod common;

use common::{follow_router, load, transcript_env, FollowLog, TestServer};
use dialgate::{
    agi::{
        sim::{replay, ReplayOptions},
        Presentation, Reply, Response, ServerConfig,
    },
    dialin,
};

/// Runs the transcript's script side through `AgiCall` and returns what it saw.
async fn follow(name: &str) -> FollowLog {
    let transcript = load(name);
    let (router, log) = follow_router(&transcript);
    let server = TestServer::start(router, ServerConfig::default()).await;
    replay(&transcript, server.addr, ReplayOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    server.shutdown().await;
    let log = log
        .lock()
        .unwrap()
        .take()
        .expect("the script ran to its end");
    for (command, reply) in &log.exchanges {
        assert!(reply.is_ok(), "{name}: {command}: {reply:?}");
    }
    log
}

/// Replays a `# server: dialgate` transcript against dialgate's own router and returns the
/// DIALGATE_RESULT it set.
async fn dialgate_result(name: &str) -> Option<String> {
    let transcript = load(name);
    assert_eq!(transcript.header("server"), Some("dialgate"), "{name}");
    let server = TestServer::start(dialin::router(), ServerConfig::default()).await;
    let report = replay(&transcript, server.addr, ReplayOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    server.shutdown().await;
    report.result
}

fn success(reply: &Reply) -> &Response {
    match reply {
        Reply::Success(r) => r,
        other => panic!("expected 200, got {other:?}"),
    }
}

fn pair(a: &str, b: &str) -> Option<(String, String)> {
    Some((a.to_string(), b.to_string()))
}

#[tokio::test]
async fn pjsip_ast22_get_data_results_are_strings() {
    let log = follow("11-pjsip-ast22-get-data-digits.agi").await;
    let env = &log.env;
    assert_eq!(env.version().as_deref(), Some("22.4.1"));
    assert_eq!(env.channel_technology_endpoint(), pair("PJSIP", "carrier"));
    assert_eq!(env.caller_number().as_deref(), Some("+8613800138000"));
    assert_eq!(env.caller_name(), None, "agi_calleridname: unknown");
    assert_eq!(env.dnid().as_deref(), Some("+861055550100"));
    assert_eq!(env.presentation(), Some(Presentation::Allowed));
    assert_eq!(env.account_code(), None);
    assert_eq!(env.thread_id(), Some(140153817286336));
    assert_eq!(env.script_path(), "verify");
    assert!(env.args().is_empty());

    // GET DATA: leading zeros kept.
    let r = success(log.reply(1));
    assert_eq!(r.result, "0042");
    assert!(!r.timed_out());
    assert_eq!(r.result_int(), Some(42));
    // Nothing typed.
    let r = success(log.reply(2));
    assert_eq!(r.result, "");
    assert!(r.timed_out());
    // Some digits, then the inter-digit timeout.
    let r = success(log.reply(3));
    assert_eq!(r.result, "12");
    assert!(r.timed_out());
    // '*' is a digit; the terminating '#' is not stored.
    let r = success(log.reply(4));
    assert_eq!(r.result, "12*");
    assert!(!r.timed_out());
    assert_eq!(r.result_int(), None);
    // WAIT FOR DIGIT: ASCII '2', then a timeout.
    assert_eq!(success(log.reply(5)).result_int(), Some(i64::from(b'2')));
    assert_eq!(success(log.reply(6)).result_int(), Some(0));
    // STREAM FILE interrupted by '2', then played to its end.
    let r = success(log.reply(7));
    assert_eq!(r.result_int(), Some(50));
    assert_eq!(r.attribute("endpos"), Some("3520"));
    let r = success(log.reply(8));
    assert_eq!(r.result, "0");
    assert_eq!(r.data, None);
    assert_eq!(r.attribute("endpos"), Some("8000"));
    assert!(!log.dead_at_end);
}

#[tokio::test]
async fn sip_ast16_32bit_hangup_right_after_a_reply() {
    let log = follow("12-sip-ast16-32bit-hangup-after-reply.agi").await;
    let env = &log.env;
    assert_eq!(env.version().as_deref(), Some("1.6.2.24"));
    assert_eq!(
        env.thread_id(),
        Some(-1225491568),
        "signed on 32-bit builds"
    );
    assert_eq!(env.caller_number().as_deref(), Some("5145552255"));
    assert_eq!(env.caller_name().as_deref(), Some("Bob Martin"));
    assert_eq!(env.channel_technology_endpoint(), pair("SIP", "carrier"));
    assert_eq!(env.context().as_deref(), Some("from-trunk"));
    assert_eq!(env.priority(), Some(2));

    let r = success(log.reply(1));
    assert!(r.is_failure());
    assert_eq!(r.attribute("endpos"), Some("1234"));
    // HANGUP followed that reply: a live-only command gets the old 511 wording.
    assert_eq!(log.reply(2), &Reply::DeadChannel);
    assert_eq!(success(log.reply(3)).data.as_deref(), Some("5145552255"));
    assert_eq!(success(log.reply(4)).result, "1");
    assert_eq!(success(log.reply(5)).result, "1");
    assert!(log.dead_at_end);
}

#[tokio::test]
async fn sip_ast11_gosub_reply_is_the_200_and_data_keeps_parentheses() {
    let log = follow("13-sip-ast11-gosub-variables.agi").await;
    let env = &log.env;
    assert_eq!(env.version().as_deref(), Some("11.25.3"));
    assert_eq!(env.language().as_deref(), Some("fr"));
    assert_eq!(env.calling_pres(), Some(1));
    assert_eq!(env.presentation(), Some(Presentation::Allowed));
    assert_eq!(env.caller_name().as_deref(), Some("Alice Example"));
    assert_eq!(env.script_path(), "lookup");

    // `100 result=0 Trying...` is skipped: GOSUB's reply is the 200 after the subroutine.
    let gosub = log.reply(0);
    assert_eq!(gosub.code(), 200);
    let r = success(gosub);
    assert_eq!(r.result, "0");
    assert_eq!(r.data, None);
    // The variable's own parentheses are data, not framing.
    assert_eq!(
        success(log.reply(1)).data.as_deref(),
        Some("(hello)(world)")
    );
    let unset = success(log.reply(2));
    assert_eq!(unset.result, "0");
    assert_eq!(unset.data, None);
    assert_eq!(success(log.reply(3)).data.as_deref(), Some("Alice Example"));
    assert_eq!(success(log.reply(4)).result, "1");
    let got = success(log.reply(5));
    assert_eq!(got.result, "1");
    assert_eq!(got.data.as_deref(), Some("seen"));
    assert_eq!(log.exchanges[3].0, "GET FULL VARIABLE ${CALLERID(name)}");
}

#[tokio::test]
async fn local_channel_arguments_and_url_query() {
    let log = follow("14-local-ast18-args-query.agi").await;
    let env = &log.env;
    assert_eq!(env.channel_type().as_deref(), Some("Local"));
    assert_eq!(
        env.channel_technology_endpoint(),
        pair("Local", "100@from-internal")
    );
    assert_eq!(
        env.network_script().as_deref(),
        Some("verify?mode=code&lang=zh")
    );
    assert_eq!(env.script_path(), "verify");
    assert_eq!(env.query_param("mode").as_deref(), Some("code"));
    assert_eq!(env.query_param("lang").as_deref(), Some("zh"));
    assert_eq!(env.query_param("missing"), None);
    assert_eq!(env.args(), vec!["4729", "", "hello world"]);
    assert_eq!(env.arg(2).as_deref(), Some(""), "empty argument kept");
    assert_eq!(env.arg(3).as_deref(), Some("hello world"));
    assert_eq!(env.arg(4), None);
    assert_eq!(env.dnid(), None);
    assert_eq!(env.rdnis(), None);
    assert_eq!(env.caller_number().as_deref(), Some("200"));
    assert_eq!(
        log.exchanges[0].0,
        r#"VERBOSE "verify mode=code lang=zh for 200" 3"#
    );
    assert_eq!(success(log.reply(1)).result, "0");
}

#[tokio::test]
async fn iax2_values_with_colons() {
    let log = follow("15-iax2-ast13-colons-in-values.agi").await;
    let env = &log.env;
    assert_eq!(env.channel().as_deref(), Some("IAX2/203.0.113.5:4569-1234"));
    assert_eq!(
        env.channel_technology_endpoint(),
        pair("IAX2", "203.0.113.5:4569")
    );
    assert_eq!(env.caller_name().as_deref(), Some("Support: Level 2"));
    assert_eq!(env.caller_number().as_deref(), Some("2125550199"));
    assert_eq!(
        env.request().as_deref(),
        Some("agi://127.0.0.1:4573/verify")
    );
    assert_eq!(success(log.reply(1)).result_int(), Some(6), "channel up");
    assert_eq!(
        success(log.reply(2)).data.as_deref(),
        Some("Support: Level 2")
    );
    // The script's own HANGUP succeeded: the channel is dead from then on.
    assert_eq!(success(log.reply(3)).result, "1");
    assert!(log.dead_at_end);
}

#[tokio::test]
async fn dialgate_answers_notfound_to_a_scriptless_url() {
    let env = transcript_env(&load("16-dialgate-scriptless-url.agi"));
    assert_eq!(env.network_script(), None);
    assert_eq!(env.script_path(), "");
    assert!(env.query_params().is_empty());
    assert_eq!(env.request().as_deref(), Some("agi://127.0.0.1"));
    assert_eq!(
        dialgate_result("16-dialgate-scriptless-url.agi")
            .await
            .as_deref(),
        Some("notfound")
    );
}

#[tokio::test]
async fn dialgate_answers_notfound_to_an_unknown_script() {
    let env = transcript_env(&load("17-dialgate-unknown-script.agi"));
    assert_eq!(env.script_path(), "verfy");
    assert_eq!(env.query_param("lang").as_deref(), Some("en"));
    assert_eq!(
        dialgate_result("17-dialgate-unknown-script.agi")
            .await
            .as_deref(),
        Some("notfound")
    );
}

#[tokio::test]
async fn dialgate_ping_on_a_withheld_number() {
    let env = transcript_env(&load("18-dialgate-pjsip-ast22-withheld-ping.agi"));
    assert_eq!(env.version().as_deref(), Some("22.4.1"));
    assert_eq!(env.calling_pres(), Some(32));
    assert_eq!(env.presentation(), Some(Presentation::Restricted));
    // The number is known to Asterisk, but the caller asked for it to be withheld.
    assert_eq!(env.caller_number().as_deref(), Some("+8613912345678"));
    assert_eq!(env.script_path(), "ping");
    assert_eq!(
        dialgate_result("18-dialgate-pjsip-ast22-withheld-ping.agi")
            .await
            .as_deref(),
        Some("pong")
    );
}

#[tokio::test]
async fn unavailable_caller_and_hangup_while_idle() {
    let log = follow("19-pjsip-ast20-unavailable-idle-hangup.agi").await;
    let env = &log.env;
    assert_eq!(env.caller_number(), None, "agi_callerid: unknown");
    assert_eq!(env.caller_name(), None);
    assert_eq!(env.calling_pres(), Some(67));
    assert_eq!(env.presentation(), Some(Presentation::NotAvailable));
    assert_eq!(env.dnid(), None);
    assert_eq!(env.extension().as_deref(), Some("s"));

    assert_eq!(success(log.reply(1)).attribute("endpos"), Some("16000"));
    assert_eq!(success(log.reply(2)).result, "1");
    // HANGUP came while no command was in flight.
    assert_eq!(log.reply(3), &Reply::DeadChannel);
    assert_eq!(success(log.reply(4)).result, "0", "NOOP");
    assert_eq!(success(log.reply(5)).result, "1");
    assert_eq!(success(log.reply(6)).result, "1");
    assert!(log.dead_at_end);
}

#[tokio::test]
async fn exit_on_hangup_last_reply_arrives_before_the_hangups() {
    let log = follow("20-pjsip-ast20-exit-on-hangup.agi").await;
    assert_eq!(log.exchanges.len(), 2);
    let r = success(log.reply(1));
    assert!(r.is_failure());
    assert_eq!(r.data, None);
    assert_eq!(r.attribute("endpos"), Some("2400"));
    assert_eq!(log.env.version().as_deref(), Some("20.11.0"));
}

#[tokio::test]
async fn unknown_command_then_multiline_usage_with_markup_and_latin1() {
    let log = follow("21-sip-ast18-unknown-command-and-usage.agi").await;
    assert_eq!(log.reply(1), &Reply::InvalidCommand);
    assert_eq!(log.exchanges[2].0, r#"WAIT FOR DIGIT """#);
    let Reply::Usage(lines) = log.reply(2) else {
        panic!("expected 520, got {:?}", log.reply(2));
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("<replaceable>timeout</replaceable>"));
    assert!(lines[0].ends_with("re\u{fffd}u."), "{lines:?}");
    assert!(lines[1].contains("d'\u{fffd}chec"), "{lines:?}");
    assert!(lines[1].contains("<literal>-1</literal>"));
    // The dialog is back in step after the usage block.
    assert_eq!(success(log.reply(3)).result_int(), Some(0));
    assert_eq!(log.env.language().as_deref(), Some("fr"));
}

#[tokio::test]
async fn single_line_usage_when_no_usage_text_is_available() {
    let log = follow("22-pjsip-ast20-no-xmldoc-usage.agi").await;
    assert_eq!(log.reply(1), &Reply::Usage(vec![]));
    assert_eq!(log.reply(1).code(), 520);
    assert_eq!(success(log.reply(2)).result_int(), Some(i64::from(b'#')));
    assert_eq!(success(log.reply(3)).result, "0");
}

#[tokio::test]
async fn speech_recognize_attributes() {
    let log = follow("23-pjsip-ast16-speech.agi").await;
    for n in [1, 2, 3] {
        assert_eq!(success(log.reply(n)).result, "1", "command {n}");
    }
    let r = success(log.reply(4));
    assert_eq!(r.result, "1");
    assert_eq!(r.data.as_deref(), Some("speech"));
    assert_eq!(r.attribute("endpos"), Some("0"));
    assert_eq!(r.attribute("results"), Some("1"));
    assert_eq!(r.attribute("score0"), Some("812"));
    assert_eq!(r.attribute("text0"), Some("four seven two nine"));
    assert_eq!(r.attribute("grammar0"), Some("code"));
    let r = success(log.reply(5));
    assert_eq!(r.data.as_deref(), Some("digit"));
    assert_eq!(r.attribute("digit"), Some("5"));
    assert_eq!(r.attribute("endpos"), Some("1200"));
    let r = success(log.reply(6));
    assert_eq!(r.data.as_deref(), Some("timeout"));
    assert!(r.timed_out());
    assert_eq!(r.attribute("endpos"), Some("16000"));
    assert_eq!(success(log.reply(7)).result, "1");
}

#[tokio::test]
async fn latin1_caller_name_on_an_asterisk_14_zap_channel() {
    let log = follow("24-zap-ast14-latin1-caller-name.agi").await;
    let env = &log.env;
    assert_eq!(
        env.get_raw("agi_calleridname"),
        Some(&b"Jos\xe9 Garc\xeda"[..]),
        "raw bytes kept"
    );
    assert_eq!(
        env.caller_name().as_deref(),
        Some("Jos\u{fffd} Garc\u{fffd}a")
    );
    assert_eq!(env.caller_number().as_deref(), Some("0145678901"));
    assert_eq!(env.channel_technology_endpoint(), pair("Zap", "1"));
    // Keys that Asterisk 1.4 did not send yet.
    assert_eq!(env.version(), None);
    assert_eq!(env.thread_id(), None);
    assert!(env.args().is_empty());
    assert_eq!(env.dnid().as_deref(), Some("0170000000"));
    assert_eq!(
        success(log.reply(0)).data.as_deref(),
        Some("Jos\u{fffd} Garc\u{fffd}a")
    );
    assert_eq!(success(log.reply(1)).result, "1");
}

#[tokio::test]
async fn asterisk_10_combined_caller_id_over_a_stdio_bridge() {
    let log = follow("25-ast10-stdio-bridge-old-callerid.agi").await;
    let env = &log.env;
    assert!(!env.network());
    assert_eq!(env.network_script(), None);
    assert_eq!(env.script_path(), "");
    let id = env.caller_id();
    assert_eq!(id.name.as_deref(), Some("John Doe"));
    assert_eq!(id.number.as_deref(), Some("5551234"));
    assert_eq!(env.get("agi_dnid").as_deref(), Some(""));
    assert_eq!(env.dnid(), None, "empty means absent");
    assert_eq!(env.rdnis(), None);
    assert_eq!(env.uniqueid(), None);
    assert_eq!(env.presentation(), None, "no agi_callingpres in 1.0");
    assert_eq!(env.channel_technology_endpoint(), pair("SIP", "carrier"));
    assert_eq!(success(log.reply(1)).result, "0");
    assert_eq!(success(log.reply(2)).result, "1");
    assert!(log.dead_at_end, "own HANGUP succeeded");
}

#[tokio::test]
async fn asterisk_11_usage_with_glued_end_marker() {
    let log = follow("26-sip-ast11-usage-glued-end-marker.agi").await;
    let Reply::Usage(lines) = log.reply(0) else {
        panic!("{:?}", log.reply(0))
    };
    assert_eq!(lines.len(), 2);
    assert!(lines[1].ends_with("receive a DTMF digit."), "{lines:?}");
    // The next reply is read as the reply to the next command, not swallowed as usage.
    assert_eq!(success(log.reply(1)).result, "49");
}
