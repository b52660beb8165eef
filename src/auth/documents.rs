//! Identity documents (ID scan, photo): type by magic bytes, size cap, SHA-256.

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
