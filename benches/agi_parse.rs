//! Parser micro-benchmarks: the environment block through `AgiCodec` (whole and in
//! 64-byte TCP-sized segments), `parse_reply_line` on typical replies and
//! `Command::to_line`. Run with `cargo bench --bench agi_parse` (about 30 s).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dialgate::agi::reply::parse_reply_line;
use dialgate::agi::{AgiCodec, Command, Frame};
use tokio_util::codec::Decoder;

/// An Asterisk 20.x PJSIP FastAGI environment block (key order from res_agi.c
/// `setup_env()`, values invented), 25 lines plus the terminating blank line.
const ENV_BLOCK: &[u8] = b"agi_network: yes\n\
agi_network_script: verify?mode=code&account=42\n\
agi_request: agi://127.0.0.1:4573/verify?mode=code&account=42\n\
agi_channel: PJSIP/carrier-0000002a\n\
agi_language: en\n\
agi_type: PJSIP\n\
agi_uniqueid: 1795301234.42\n\
agi_version: 20.11.0\n\
agi_callerid: +8613800138000\n\
agi_calleridname: Zhang Wei\n\
agi_callingpres: 0\n\
agi_callingani2: 0\n\
agi_callington: 0\n\
agi_callingtns: 0\n\
agi_dnid: +861055550100\n\
agi_rdnis: unknown\n\
agi_context: dialgate-verify\n\
agi_extension: s\n\
agi_priority: 1\n\
agi_enhanced: 0.0\n\
agi_accountcode: \n\
agi_threadid: 140234871391808\n\
agi_arg_1: 9000\n\
agi_arg_2: 0123456789abcdef\n\
agi_arg_3: lang=en\n\
\n";

const REPLIES: &[(&str, &[u8])] = &[
    ("result_1", b"200 result=1"),
    ("endpos", b"200 result=0 endpos=8000"),
    ("data", b"200 result=1 (+8613800138000)"),
    (
        "speech",
        br#"200 result=1 (speech) endpos=0 results=1 score0=800 text0="hello \"joe\"" grammar0=yesno"#,
    ),
    (
        "usage_520",
        b"520 Invalid command syntax.  Proper usage not available.",
    ),
];

fn expect_env(frame: Option<Frame>) {
    match frame {
        Some(Frame::Env(env)) => {
            black_box(env);
        }
        other => panic!("expected the environment, got {other:?}"),
    }
}

fn env_block(c: &mut Criterion) {
    let mut group = c.benchmark_group("env_block");
    group.throughput(Throughput::Bytes(ENV_BLOCK.len() as u64));

    group.bench_function("whole", |b| {
        b.iter(|| {
            let mut codec = AgiCodec::default();
            let mut buf = BytesMut::from(black_box(ENV_BLOCK));
            expect_env(codec.decode(&mut buf).unwrap());
        })
    });

    group.bench_function("segments_64", |b| {
        b.iter(|| {
            let mut codec = AgiCodec::default();
            let mut buf = BytesMut::with_capacity(256);
            let mut env = None;
            for segment in black_box(ENV_BLOCK).chunks(64) {
                buf.extend_from_slice(segment);
                if let Some(frame) = codec.decode(&mut buf).unwrap() {
                    env = Some(frame);
                }
            }
            expect_env(env);
        })
    });
    group.finish();
}

fn replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_reply_line");
    for &(name, line) in REPLIES {
        // Fail loudly (also in `cargo test --benches`) if a sample stops parsing.
        parse_reply_line(line).unwrap();
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| parse_reply_line(black_box(line)).unwrap())
        });
    }
    group.finish();
}

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("command_to_line");
    let set_variable = Command::set_variable("DIALGATE_RESULT", r#"verified "ok" 42"#);
    let stream_file = Command::stream_file("custom/dialgate-enter-code", "0123456789*#");
    for (name, command) in [
        ("set_variable", &set_variable),
        ("stream_file", &stream_file),
    ] {
        command.to_line().unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(name), command, |b, command| {
            b.iter(|| black_box(command).to_line().unwrap())
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = env_block, replies, commands
}
criterion_main!(benches);
