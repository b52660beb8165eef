//! A scripted AMI server: plays Asterisk's side of a recorded AMI transcript
//! (fixtures/ami/*.ami) over real TCP and checks what the client sends, line by line.
//!
//! Format (one line each): `< ` what Asterisk sent (written with CRLF), `> ` what the
//! client sent (must arrive with CRLF), a bare `<` or `>` the empty line ending a
//! message, `#` comments (`# key: value` in the header are metadata, e.g.
//! `# after: close`). In `< ` lines `{{ActionID}}` becomes the ActionID of the client's
//! last message, and a trailing `{{NOCR}}` ends the line with a bare LF (the `\r\n\n`
//! terminator quirk, and the raw CLI text of Asterisk <= 13 `Command` replies). A `> `
//! line `ActionID: ...` matches any ActionID and captures it; in other `> ` lines
//! `{{*}}` matches any text (e.g. a challenge id only known at run time). Every line the
//! client sent is kept, see [`ScriptedAmi::received`].

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

const PLACEHOLDER: &str = "{{ActionID}}";
const NOCR: &str = "{{NOCR}}";
const WILDCARD: &str = "{{*}}";

type Received = Arc<Mutex<Vec<String>>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Asterisk writes this line (`lf_only`: without CR).
    Send {
        number: usize,
        text: String,
        lf_only: bool,
    },
    /// The client must send this line.
    Expect { number: usize, text: String },
}

#[derive(Debug, Clone)]
pub struct AmiScript {
    pub name: String,
    pub comments: Vec<String>,
    pub steps: Vec<Step>,
}

pub fn ami_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ami")
}

/// Every `*.ami` transcript in fixtures/ami, sorted by name.
pub fn ami_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(ami_fixture_dir())
        .expect("fixtures/ami exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ami"))
        .collect();
    files.sort();
    files
}

impl AmiScript {
    pub fn load(path: &Path) -> AmiScript {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        AmiScript::parse(&name, &text)
    }

    pub fn fixture(name: &str) -> AmiScript {
        AmiScript::load(&ami_fixture_dir().join(name))
    }

    pub fn parse(name: &str, text: &str) -> AmiScript {
        let mut script = AmiScript {
            name: name.to_string(),
            comments: Vec::new(),
            steps: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let number = i + 1;
            if let Some(comment) = raw.strip_prefix('#') {
                script.comments.push(comment.trim().to_string());
                continue;
            }
            let step = match raw {
                "" => continue,
                "<" => Step::Send {
                    number,
                    text: String::new(),
                    lf_only: false,
                },
                ">" => Step::Expect {
                    number,
                    text: String::new(),
                },
                _ if raw.starts_with("< ") => {
                    let text = &raw[2..];
                    let (text, lf_only) = match text.strip_suffix(NOCR) {
                        Some(t) => (t, true),
                        None => (text, false),
                    };
                    Step::Send {
                        number,
                        text: text.to_string(),
                        lf_only,
                    }
                }
                _ if raw.starts_with("> ") => Step::Expect {
                    number,
                    text: raw[2..].to_string(),
                },
                _ => panic!("{name}:{number}: a line must start with `< `, `> `, `<`, `>` or `#`"),
            };
            script.steps.push(step);
        }
        assert!(!script.steps.is_empty(), "{name}: no dialog lines");
        script
    }

    /// A `# key: value` header comment.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.comments.iter().find_map(|c| {
            let (k, v) = c.split_once(':')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }

    fn closes(&self) -> bool {
        self.header("after") == Some("close")
    }
}

/// The server; each accepted connection plays the next script (the last one repeats).
pub struct ScriptedAmi {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    results: Arc<Mutex<Vec<Result<(), String>>>>,
    received: Received,
    task: JoinHandle<()>,
}

impl ScriptedAmi {
    pub async fn start(scripts: Vec<AmiScript>) -> ScriptedAmi {
        assert!(!scripts.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let results = Arc::new(Mutex::new(Vec::new()));
        let (count, sink) = (connections.clone(), results.clone());
        let received: Received = Arc::default();
        let seen = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let script = scripts[n.min(scripts.len() - 1)].clone();
                let (sink, seen) = (sink.clone(), seen.clone());
                tokio::spawn(async move {
                    play(stream, script, sink, seen).await;
                });
            }
        });
        ScriptedAmi {
            addr,
            connections,
            results,
            received,
            task,
        }
    }

    pub async fn fixture(name: &str) -> ScriptedAmi {
        ScriptedAmi::start(vec![AmiScript::fixture(name)]).await
    }

    /// Every line the client sent so far (without CRLF), over all connections.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Outcomes of the scripts played to their end (or to a divergence) so far.
    pub fn results(&self) -> Vec<Result<(), String>> {
        self.results.lock().unwrap().clone()
    }

    /// Waits until `n` scripts have finished and asserts none diverged.
    pub async fn assert_played(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.results().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} scripts finished: {:?}",
                self.results().len(),
                self.results()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for result in self.results() {
            if let Err(e) = result {
                panic!("{e}");
            }
        }
    }

    /// Waits until at least `n` connections were accepted.
    pub async fn wait_connections(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connections() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} connections within {timeout:?}",
                self.connections()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ScriptedAmi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn play(
    stream: TcpStream,
    script: AmiScript,
    sink: Arc<Mutex<Vec<Result<(), String>>>>,
    seen: Received,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let outcome = follow(&mut reader, &mut writer, &script, &seen).await;
    let diverged = outcome.is_err();
    if let Err(e) = &outcome {
        // Shown with the failing test's output; the client sees the link close at once.
        eprintln!("scripted AMI server: {e}");
    }
    sink.lock().unwrap().push(outcome);
    if diverged || script.closes() {
        let _ = writer.shutdown().await;
        return;
    }
    // Hold the connection open, discarding what the client sends, until it closes.
    let mut scratch = [0u8; 1024];
    while matches!(reader.read(&mut scratch).await, Ok(n) if n > 0) {}
}

async fn follow(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    script: &AmiScript,
    seen: &Received,
) -> Result<(), String> {
    let name = &script.name;
    let mut action_id: Option<String> = None;
    let mut out: Vec<u8> = Vec::new();
    for step in &script.steps {
        match step {
            Step::Send {
                text,
                lf_only,
                number,
            } => {
                if text.contains(PLACEHOLDER) && action_id.is_none() {
                    return Err(format!(
                        "{name}:{number}: {PLACEHOLDER} before any ActionID"
                    ));
                }
                let text = text.replace(PLACEHOLDER, action_id.as_deref().unwrap_or(""));
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(if *lf_only { b"\n" } else { b"\r\n" });
            }
            Step::Expect { number, text } => {
                if !out.is_empty() {
                    writer
                        .write_all(&out)
                        .await
                        .map_err(|e| format!("{name}:{number}: write failed: {e}"))?;
                    out.clear();
                }
                let mut line = Vec::new();
                let read = tokio::time::timeout(
                    Duration::from_secs(5),
                    reader.read_until(b'\n', &mut line),
                )
                .await
                .map_err(|_| format!("{name}:{number}: client sent nothing; expected {text:?}"))?
                .map_err(|e| format!("{name}:{number}: read failed: {e}"))?;
                if read == 0 {
                    return Err(format!("{name}:{number}: client closed; expected {text:?}"));
                }
                let Some(actual) = line.strip_suffix(b"\r\n") else {
                    return Err(format!(
                        "{name}:{number}: line not ended by CRLF: {:?}",
                        String::from_utf8_lossy(&line)
                    ));
                };
                let actual = String::from_utf8_lossy(actual).into_owned();
                seen.lock().unwrap().push(actual.clone());
                let wildcard = |pattern: &str, actual: &str| match pattern.split_once(WILDCARD) {
                    Some((head, tail)) => {
                        actual.len() >= head.len() + tail.len()
                            && actual.starts_with(head)
                            && actual.ends_with(tail)
                    }
                    None => pattern == actual,
                };
                let id_line = |s: &str| s.len() >= 10 && s[..10].eq_ignore_ascii_case("ActionID: ");
                if id_line(text) {
                    if !actual.starts_with("ActionID: ") || actual.len() <= 10 {
                        return Err(format!(
                            "{name}:{number}: expected an ActionID line, client sent {actual:?}"
                        ));
                    }
                    action_id = Some(actual[10..].to_string());
                } else if !wildcard(text, &actual) {
                    return Err(format!(
                        "{name}:{number}: expected the client to send {text:?}, it sent {actual:?}"
                    ));
                }
            }
        }
    }
    if !out.is_empty() {
        writer
            .write_all(&out)
            .await
            .map_err(|e| format!("{name}: final write failed: {e}"))?;
    }
    Ok(())
}
