//! Shared test helpers: a real FastAGI server on a loopback port, and a script that
//! sends exactly what a transcript's script side sent.
#![allow(dead_code)]

pub mod ami_server;
pub mod browser;
pub mod db;
pub mod gate;
pub mod http;
pub mod node;
pub mod sse;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use dialgate::agi::{
    sim::transcript::{Direction, Transcript},
    AgiCall, AgiEnv, Command, Reply, Router, Server, ServerConfig,
};
use tokio::sync::oneshot;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/agi")
}

/// Every `*.agi` transcript in fixtures/agi, sorted by name.
pub fn transcripts() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixtures/agi exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "agi"))
        .collect();
    files.sort();
    files
}

pub fn load(name: &str) -> Transcript {
    Transcript::load(&fixture_dir().join(name)).unwrap()
}

/// A running server; dropping the handle stops it.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(router: Router, config: ServerConfig) -> TestServer {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), router, config)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting and waits for the server to finish its calls.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What the transcript-following script saw.
#[derive(Debug, Default, Clone)]
pub struct FollowLog {
    pub env: AgiEnv,
    /// Each command line sent and what came back (the error text on failure).
    pub exchanges: Vec<(String, Result<Reply, String>)>,
    pub dead_at_end: bool,
}

impl FollowLog {
    /// The reply to the n-th command (0-based), which must have succeeded.
    pub fn reply(&self, n: usize) -> &Reply {
        match &self.exchanges[n].1 {
            Ok(reply) => reply,
            Err(e) => panic!("command {n} ({}) failed: {e}", self.exchanges[n].0),
        }
    }
}

/// The environment block of a transcript, parsed like the server parses it.
pub fn transcript_env(transcript: &Transcript) -> AgiEnv {
    let lines: Vec<&[u8]> = transcript
        .lines
        .iter()
        .take_while(|l| !l.bytes.is_empty())
        .filter(|l| l.direction == Direction::FromAsterisk)
        .map(|l| l.bytes.as_slice())
        .collect();
    AgiEnv::from_lines(lines).unwrap()
}

/// A router whose script (registered under the transcript's script path) sends the
/// transcript's `>` lines through typed commands and `AgiCall::send`, leaving dead-channel
/// judgement to Asterisk as the recorded scripts did. The log arrives when it finishes.
pub fn follow_router(transcript: &Transcript) -> (Router, Arc<Mutex<Option<FollowLog>>>) {
    let commands: Vec<Command> = transcript
        .server_lines()
        .map(|l| {
            let text = String::from_utf8(l.bytes.clone()).expect("commands are UTF-8");
            Command::parse(&text)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", transcript.name, l.number))
        })
        .collect();
    let log = Arc::new(Mutex::new(None));
    let sink = log.clone();
    let script = move |mut call: AgiCall| {
        let commands = commands.clone();
        let sink = sink.clone();
        async move {
            call.let_asterisk_judge_dead_channel(true);
            let mut log = FollowLog {
                env: call.env().clone(),
                ..FollowLog::default()
            };
            for command in &commands {
                let outcome = call.send(command).await.map_err(|e| e.to_string());
                log.exchanges.push((command.to_line().unwrap(), outcome));
            }
            log.dead_at_end = call.is_dead();
            *sink.lock().unwrap() = Some(log);
            call.close().await;
            Ok(())
        }
    };
    let name = transcript_env(transcript).script_path();
    (Router::new().route(&name, script), log)
}

/// A `dialgate serve` process on a free loopback port, its log going to a file, with no
/// `DIALGATE_*` settings from the environment but `DIALGATE_LOG=debug`.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts the real binary with `args` (after `serve --agi-listen ADDR`), optionally
    /// with a lower open-file limit, and waits until it listens.
    pub fn start(args: &[&str], nofile_limit: Option<u64>) -> ServeProcess {
        ServeProcess::spawn(args, "127.0.0.1:0", nofile_limit)
    }

    /// Like [`ServeProcess::start`], but listening for HTTP on `http_listen` (a known
    /// port, e.g. for `--node-url`): `serve` refuses a repeated `--http-listen`, so this
    /// passes only the one given here.
    pub fn start_with_http(args: &[&str], http_listen: SocketAddr) -> ServeProcess {
        ServeProcess::spawn(args, &http_listen.to_string(), None)
    }

    fn spawn(args: &[&str], http_listen: &str, nofile_limit: Option<u64>) -> ServeProcess {
        use std::os::unix::process::CommandExt;
        let addr = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut command = db::dialgate_command();
        command
            .args(["serve", "--agi-listen", &addr.to_string()])
            .args(["--http-listen", http_listen])
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env("DIALGATE_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(limit) = nofile_limit {
            // SAFETY: setrlimit is async-signal-safe and touches no parent state.
            unsafe {
                command.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().unwrap();
        let process = ServeProcess {
            child,
            addr,
            log,
            _dir: dir,
        };
        process.wait_for_log("FastAGI server listening");
        process
    }

    /// The HTTP gateway's address, from its start-up log line.
    pub fn http_addr(&self) -> SocketAddr {
        let log = self.wait_for_log("HTTP gateway listening");
        let line = log
            .lines()
            .find(|l| l.contains("HTTP gateway listening"))
            .unwrap();
        let addr = line.split("addr=").nth(1).unwrap();
        addr.split_whitespace().next().unwrap().parse().unwrap()
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits up to 10 s for `needle` to appear in the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "log never said {needle:?}; log:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        std::time::Duration::from_millis(ticks * 1000 / hz)
    }

    pub fn signal(&self, signal: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
