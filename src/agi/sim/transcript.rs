//! Recorded AGI conversations and a player that takes Asterisk's side of them against a
//! live FastAGI server, failing on the first byte that differs.
//!
//! Format (one line each): `< ` what Asterisk sent, `> ` what the script sent, a bare `<`
//! the empty line ending the environment, `#` comments. `# key: value` comments in the
//! header are metadata (e.g. `# server: dialgate`). Trailing spaces are significant.

use std::{net::SocketAddr, path::Path, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use super::is_reset;
use crate::agi::{server::RESULT_VARIABLE, Command, Verb};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// Asterisk to the server.
    FromAsterisk,
    /// The server (script) to Asterisk.
    FromServer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptLine {
    /// 1-based line number in the file, for error messages.
    pub number: usize,
    pub direction: Direction,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Transcript {
    pub name: String,
    pub comments: Vec<String>,
    pub lines: Vec<TranscriptLine>,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("{file}:{line}: {message}")]
    Format {
        file: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
}

impl Transcript {
    pub fn load(path: &Path) -> Result<Transcript, TranscriptError> {
        let bytes = std::fs::read(path).map_err(|source| TranscriptError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Transcript::parse(&path.display().to_string(), &bytes)
    }

    pub fn parse(name: &str, bytes: &[u8]) -> Result<Transcript, TranscriptError> {
        let mut transcript = Transcript {
            name: name.to_string(),
            comments: Vec::new(),
            lines: Vec::new(),
        };
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
            let number = i + 1;
            let (direction, payload) = match raw {
                [b'#', comment @ ..] => {
                    let text = String::from_utf8_lossy(comment).trim().to_string();
                    transcript.comments.push(text);
                    continue;
                }
                b"" => continue,
                b"<" => (Direction::FromAsterisk, &b""[..]),
                [b'<', b' ', rest @ ..] => (Direction::FromAsterisk, rest),
                [b'>', b' ', rest @ ..] => (Direction::FromServer, rest),
                _ => {
                    return Err(TranscriptError::Format {
                        file: name.to_string(),
                        line: number,
                        message: "a line must start with `< `, `> `, `<` alone or `#`".into(),
                    })
                }
            };
            transcript.lines.push(TranscriptLine {
                number,
                direction,
                bytes: payload.to_vec(),
            });
        }
        if transcript.lines.is_empty() {
            return Err(TranscriptError::Format {
                file: name.to_string(),
                line: 1,
                message: "no dialog lines".into(),
            });
        }
        Ok(transcript)
    }

    /// A `# key: value` header comment.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.comments.iter().find_map(|c| {
            let (k, v) = c.split_once(':')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
        })
    }

    /// The lines the script sent, in order.
    pub fn server_lines(&self) -> impl Iterator<Item = &TranscriptLine> {
        self.lines
            .iter()
            .filter(|l| l.direction == Direction::FromServer)
    }
}

/// How the player writes Asterisk's lines.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// End Asterisk's lines with CRLF instead of LF.
    pub crlf: bool,
    /// Write one byte per TCP segment instead of each run of lines at once.
    pub bytewise: bool,
    /// How long to wait for each line the server is expected to send.
    pub timeout: Duration,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            crlf: false,
            bytewise: false,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a successful replay saw.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub lines: usize,
    /// The last value the server gave `DIALGATE_RESULT`, if it set one.
    pub result: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Divergence {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: SocketAddr,
        source: std::io::Error,
    },
    #[error("{file}:{line}: expected the server to send {expected:?}, it sent {actual:?}")]
    Mismatch {
        file: String,
        line: usize,
        expected: String,
        actual: String,
    },
    #[error("{file}:{line}: expected the server to send {expected:?}, it closed the connection")]
    ClosedEarly {
        file: String,
        line: usize,
        expected: String,
    },
    #[error(
        "{file}:{line}: expected the server to send {expected:?}, nothing came within {timeout:?}"
    )]
    Silent {
        file: String,
        line: usize,
        expected: String,
        timeout: Duration,
    },
    #[error("{file}: the transcript is over but the server sent {actual:?}")]
    ExtraLine { file: String, actual: String },
    #[error(
        "{file}: the transcript is over but the server kept the connection open for {timeout:?}"
    )]
    NotClosed { file: String, timeout: Duration },
    #[error("{file}:{line}: connection error: {source}")]
    Io {
        file: String,
        line: usize,
        source: std::io::Error,
    },
}

/// Plays Asterisk's side of `transcript` against the FastAGI server at `target`.
pub async fn replay(
    transcript: &Transcript,
    target: SocketAddr,
    options: ReplayOptions,
) -> Result<ReplayReport, Divergence> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|source| Divergence::Connect { target, source })?;
    stream.set_nodelay(true).ok();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let file = transcript.name.clone();
    let mut result = None;
    let lines = &transcript.lines;
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        match line.direction {
            Direction::FromAsterisk => {
                // Lines Asterisk sends back to back go out together, as they would.
                let mut out = Vec::new();
                while i < lines.len() && lines[i].direction == Direction::FromAsterisk {
                    out.extend_from_slice(&lines[i].bytes);
                    out.extend_from_slice(if options.crlf { b"\r\n" } else { b"\n" });
                    i += 1;
                }
                let only_asterisk_left = lines[i..]
                    .iter()
                    .all(|l| l.direction == Direction::FromAsterisk);
                if let Err(source) = write_out(&mut write, &out, options.bytewise).await {
                    // Asterisk's last words may meet a socket the script already closed.
                    if !only_asterisk_left {
                        return Err(Divergence::Io {
                            file,
                            line: line.number,
                            source,
                        });
                    }
                }
            }
            Direction::FromServer => {
                let expected = String::from_utf8_lossy(&line.bytes).into_owned();
                let mut got = Vec::new();
                let read_line = read.read_until(b'\n', &mut got);
                match tokio::time::timeout(options.timeout, read_line).await {
                    Err(_) => {
                        return Err(Divergence::Silent {
                            file,
                            line: line.number,
                            expected,
                            timeout: options.timeout,
                        })
                    }
                    Ok(Err(source)) if !is_reset(&source) => {
                        return Err(Divergence::Io {
                            file,
                            line: line.number,
                            source,
                        })
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        return Err(Divergence::ClosedEarly {
                            file,
                            line: line.number,
                            expected,
                        })
                    }
                    Ok(Ok(_)) => {}
                }
                let actual = got.strip_suffix(b"\n").unwrap_or(&got);
                if actual != line.bytes.as_slice() {
                    return Err(Divergence::Mismatch {
                        file,
                        line: line.number,
                        expected,
                        actual: String::from_utf8_lossy(actual).into_owned(),
                    });
                }
                if let Some(value) = result_variable(&expected) {
                    result = Some(value);
                }
                i += 1;
            }
        }
    }
    let mut extra = Vec::new();
    match tokio::time::timeout(options.timeout, read.read_until(b'\n', &mut extra)).await {
        Err(_) => Err(Divergence::NotClosed {
            file,
            timeout: options.timeout,
        }),
        Ok(Ok(n)) if n > 0 => Err(Divergence::ExtraLine {
            file,
            actual: String::from_utf8_lossy(&extra).trim_end().to_string(),
        }),
        Ok(_) => Ok(ReplayReport {
            lines: lines.len(),
            result,
        }),
    }
}

async fn write_out(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &[u8],
    bytewise: bool,
) -> std::io::Result<()> {
    if !bytewise {
        return write.write_all(bytes).await;
    }
    for b in bytes {
        write.write_all(std::slice::from_ref(b)).await?;
        write.flush().await?;
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// The value of `SET VARIABLE DIALGATE_RESULT <value>`, if the line is that command.
fn result_variable(line: &str) -> Option<String> {
    let command = Command::parse(line).ok()?;
    match (command.verb(), command.args()) {
        (Verb::SetVariable, [name, value]) if name == RESULT_VARIABLE => Some(value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directions_comments_and_trailing_spaces() {
        let t = Transcript::parse(
            "t",
            b"# server: dialgate\n< agi_accountcode: \n<\n> ANSWER\n< 200 result=0\n",
        )
        .unwrap();
        assert_eq!(t.header("server"), Some("dialgate"));
        assert_eq!(t.lines.len(), 4);
        assert_eq!(t.lines[0].bytes, b"agi_accountcode: ");
        assert_eq!(t.lines[1].bytes, b"");
        assert_eq!(t.lines[2].direction, Direction::FromServer);
        assert_eq!(t.lines[2].number, 4);
    }

    #[test]
    fn rejects_unprefixed_lines() {
        let err = Transcript::parse("t", b"< a: b\nANSWER\n").unwrap_err();
        assert!(err.to_string().contains("t:2"), "{err}");
    }
}
