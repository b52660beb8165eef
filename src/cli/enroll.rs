//! `dialgate enroll`: one user with phone, personal details, ID scan and photo.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{read_password, Failure, GlobalArgs};
use crate::auth::{
    accounts::{self, AccountSummary, Enrollment},
    documents::{self, DocumentKind},
};

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[arg(long)]
    pub username: String,
    /// The phone the user will call from (E.164, or national form in --default-region).
    #[arg(long)]
    pub phone: String,
    /// The user's full name.
    #[arg(long)]
    pub name: String,
    /// Scan of an identity document (JPEG, PNG or PDF).
    #[arg(long, value_name = "FILE")]
    pub id_scan: Option<PathBuf>,
    /// Photo of the user (JPEG or PNG).
    #[arg(long, value_name = "FILE")]
    pub photo: Option<PathBuf>,
    /// Read the password from the first line of standard input instead of the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Reads a document file given on the command line or in a CSV row: a regular file,
/// at most `limit` bytes read (`documents::read_file`).
pub fn read_document(
    kind: DocumentKind,
    path: &Path,
    limit: usize,
) -> Result<(DocumentKind, Vec<u8>), Failure> {
    documents::read_file(kind, path, limit)
        .map(|bytes| (kind, bytes))
        .map_err(|e| Failure::User(anyhow::anyhow!(e)))
}

pub fn run(global: &GlobalArgs, args: EnrollArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let mut documents = Vec::new();
    if let Some(path) = &args.id_scan {
        documents.push(read_document(
            DocumentKind::IdScan,
            path,
            config.max_document_bytes,
        )?);
    }
    if let Some(path) = &args.photo {
        documents.push(read_document(
            DocumentKind::Photo,
            path,
            config.max_document_bytes,
        )?);
    }
    let password = read_password(args.password_stdin)?;
    let enrollment = Enrollment::prepare(
        &args.username,
        &password,
        &args.name,
        &args.phone,
        documents,
        &rules(&config),
    )?;
    let store = global.open_store(&config)?;
    let summary = accounts::enroll(&store, &enrollment)?;
    global.emit(&summary, |s| format!("enrolled {}", describe(s)));
    Ok(())
}

/// One account in a few human lines.
pub fn describe(account: &AccountSummary) -> String {
    let mut text = format!(
        "{} ({}), {}\n  phone: {}",
        account.username,
        account.display_name,
        account.status,
        if account.phones.is_empty() {
            "(none)".to_string()
        } else {
            account.phones.join(", ")
        }
    );
    for doc in &account.documents {
        text.push_str(&format!(
            "\n  {}: {}, {} bytes, sha256 {}",
            doc.kind, doc.media_type, doc.size_bytes, doc.sha256
        ));
    }
    text
}

/// What enrollment takes from the configuration.
pub fn rules(config: &crate::config::Config) -> accounts::EnrollmentRules<'_> {
    accounts::EnrollmentRules {
        default_region: config.default_region,
        max_document_bytes: config.max_document_bytes,
        currency: &config.currency,
    }
}
