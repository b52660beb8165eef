//! Identity documents (ID scan, photo): type by magic bytes, size cap, SHA-256; the one
//! bounded read of a document file (`read_file`).

use std::{io::Read, path::Path};

use sha2::{Digest, Sha256};

/// Default cap on one document (MariaDB's default max_allowed_packet is 16 MiB).
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    IdScan,
    Photo,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::IdScan => "id_scan",
            DocumentKind::Photo => "photo",
        }
    }

    /// A photo is an image; an ID scan may also be a PDF.
    fn accepts(self, media_type: &str) -> bool {
        self == DocumentKind::IdScan || media_type.starts_with("image/")
    }

    fn expected(self) -> &'static str {
        match self {
            DocumentKind::IdScan => "a JPEG, PNG or PDF",
            DocumentKind::Photo => "a JPEG or PNG",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the {kind} file is empty")]
    Empty { kind: &'static str },
    #[error("the {kind} file is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        kind: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("the {kind} file is not {expected} (its first bytes say otherwise)")]
    UnsupportedType {
        kind: &'static str,
        expected: &'static str,
    },
}

/// Reads a document file of at most `limit` bytes: only a regular file (not a FIFO,
/// device or directory, which could block or never end), and never more than
/// `limit + 1` bytes, so an oversized or growing file costs no more memory than the cap.
/// The error is a sentence naming the kind and the path.
pub fn read_file(kind: DocumentKind, path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let name = kind.as_str();
    let cannot = |e: std::io::Error| format!("cannot read the {name} file {}: {e}", path.display());
    // O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the
    // opened file, so nothing can be swapped in between.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    let file_type = meta.file_type();
    if !file_type.is_file() {
        let what = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "the {name} file {} is {what}; give a regular file",
            path.display()
        ));
    }
    let too_large = |size: u64| {
        DocumentError::TooLarge {
            kind: name,
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit,
        }
        .to_string()
    };
    if meta.len() > limit as u64 {
        return Err(too_large(meta.len()));
    }
    let mut content = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(limit as u64 + 1)
        .read_to_end(&mut content)
        .map_err(cannot)?;
    if content.len() > limit {
        // The file grew while being read.
        return Err(too_large(content.len() as u64));
    }
    Ok(content)
}

/// A validated document, ready to store.
#[derive(Debug, Clone)]
pub struct Document {
    pub kind: DocumentKind,
    pub media_type: &'static str,
    pub sha256: String,
    pub content: Vec<u8>,
}

/// The media type, judged by the content's magic bytes, never by a file name.
pub fn sniff_media_type(content: &[u8]) -> Option<&'static str> {
    if content.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if content.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if content.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

impl Document {
    pub fn validate(
        kind: DocumentKind,
        content: Vec<u8>,
        limit: usize,
    ) -> Result<Document, DocumentError> {
        let name = kind.as_str();
        if content.is_empty() {
            return Err(DocumentError::Empty { kind: name });
        }
        if content.len() > limit {
            return Err(DocumentError::TooLarge {
                kind: name,
                size: content.len(),
                limit,
            });
        }
        let media_type = sniff_media_type(&content)
            .filter(|t| kind.accepts(t))
            .ok_or(DocumentError::UnsupportedType {
                kind: name,
                expected: kind.expected(),
            })?;
        Ok(Document {
            kind,
            media_type,
            sha256: hex::encode(Sha256::digest(&content)),
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_by_magic_bytes_and_limits() {
        let png = b"\x89PNG\r\n\x1a\n rest".to_vec();
        let doc = Document::validate(DocumentKind::Photo, png, 100).unwrap();
        assert_eq!(doc.media_type, "image/png");
        assert_eq!(doc.sha256.len(), 64);
        assert_eq!(
            Document::validate(DocumentKind::IdScan, b"GIF89a...".to_vec(), 100).unwrap_err(),
            DocumentError::UnsupportedType {
                kind: "id_scan",
                expected: "a JPEG, PNG or PDF"
            }
        );
        let pdf_photo = Document::validate(DocumentKind::Photo, b"%PDF-1.7".to_vec(), 100);
        assert!(pdf_photo
            .unwrap_err()
            .to_string()
            .contains("not a JPEG or PNG"));
        assert!(matches!(
            Document::validate(DocumentKind::IdScan, b"%PDF-1.7".repeat(20), 100),
            Err(DocumentError::TooLarge { size: 160, .. })
        ));
        assert!(Document::validate(DocumentKind::IdScan, vec![], 100).is_err());
    }
}
