//! Line framing shared by the AGI and AMI codecs: `\n`-terminated lines (a `\r` before it
//! dropped), arriving in any TCP segmentation, with a length cap enforced before a whole
//! over-long line is buffered.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A line longer than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    pub limit: usize,
}

#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    /// How far the buffer was already searched for a line end, so a slow line is not
    /// rescanned from its start on every segment.
    scanned: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            max_line,
            scanned: 0,
        }
    }

    /// The next complete line, taken out of `buf` without its line end.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LineTooLong> {
        let too_long = LineTooLong {
            limit: self.max_line,
        };
        match buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.scanned + offset;
                self.scanned = 0;
                let mut line = buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > self.max_line {
                    return Err(too_long);
                }
                Ok(Some(line))
            }
            None if buf.len() > self.max_line => Err(too_long),
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }
}

/// Why [`LineReader::next_line`] gave no line.
#[derive(Debug)]
pub enum ReadLineError {
    TooLong(LineTooLong),
    Io(std::io::Error),
}

/// [`LineSplitter`] over an async byte source: the same framing (CR stripped, cap
/// enforced before a whole line is buffered) for peers that read lines without a codec.
/// The source is passed to each call, so the caller may write to it between lines.
#[derive(Debug)]
pub struct LineReader {
    splitter: LineSplitter,
    buf: BytesMut,
}

impl LineReader {
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            splitter: LineSplitter::new(max_line),
            buf: BytesMut::with_capacity(256),
        }
    }

    /// The next line from `source` without its line end; `None` at EOF (a partial last
    /// line is dropped, as a line without its end was never complete).
    pub async fn next_line<R: AsyncRead + Unpin>(
        &mut self,
        source: &mut R,
    ) -> Result<Option<BytesMut>, ReadLineError> {
        loop {
            if let Some(line) = self
                .splitter
                .next_line(&mut self.buf)
                .map_err(ReadLineError::TooLong)?
            {
                return Ok(Some(line));
            }
            self.buf.reserve(256);
            match source.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(ReadLineError::Io(e)),
            }
        }
    }
}

/// Feeds `input` to a line codec one byte at a time (the worst segmentation TCP can
/// produce), then ends the stream, and returns every frame it produced.
#[cfg(test)]
pub(crate) fn decode_bytewise<D: tokio_util::codec::Decoder>(
    codec: &mut D,
    input: &[u8],
) -> Result<Vec<D::Item>, D::Error> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &b in input {
        buf.extend_from_slice(&[b]);
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reader_strips_cr_caps_and_drops_a_partial_last_line() {
        let mut source: &[u8] = b"a\r\nbb\nc";
        let mut reader = LineReader::new(2);
        assert_eq!(
            &reader.next_line(&mut source).await.unwrap().unwrap()[..],
            b"a"
        );
        assert_eq!(
            &reader.next_line(&mut source).await.unwrap().unwrap()[..],
            b"bb"
        );
        assert!(reader.next_line(&mut source).await.unwrap().is_none());

        let mut source: &[u8] = b"abc";
        let err = LineReader::new(2).next_line(&mut source).await.unwrap_err();
        assert!(matches!(
            err,
            ReadLineError::TooLong(LineTooLong { limit: 2 })
        ));
    }
}
