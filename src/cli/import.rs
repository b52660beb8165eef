//! `dialgate import FILE.csv`: bulk enrollment. Each good row is committed on its own;
//! every bad row is reported with its line and what to fix.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{enroll::read_document, Failure, GlobalArgs};
use crate::{
    auth::{
        accounts::{self, Enrollment},
        documents::DocumentKind,
    },
    config::Config,
    store::Store,
};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// CSV with a header row: username,name,phone,password[,id_scan][,photo]. Document
    /// paths are relative to the CSV file and must stay in its folder.
    pub file: PathBuf,
    /// Also read document paths that are absolute or leave the CSV file's folder.
    #[arg(long)]
    pub allow_outside_paths: bool,
}

/// One CSV row as read (trimmed; nothing validated yet).
#[derive(Debug, Deserialize)]
pub struct Row {
    pub username: String,
    pub name: String,
    pub phone: String,
    pub password: String,
    #[serde(default)]
    pub id_scan: Option<String>,
    #[serde(default)]
    pub photo: Option<String>,
}

/// A row that was not imported, with its line and what to fix.
#[derive(Debug, Serialize)]
pub struct RowFailure {
    pub line: u64,
    pub username: Option<String>,
    pub error: String,
}

/// The rows that parsed, each with its line, and the rows that did not.
pub type ParsedRows = (Vec<(u64, Row)>, Vec<RowFailure>);

/// The rows of an import CSV: those that parsed, each with its line, and a failure for
/// each that did not. Only an unreadable header row is an error. Pure (no store, no
/// files); used by `run` and by the fuzz targets.
pub fn parse_rows(input: impl std::io::Read) -> Result<ParsedRows, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader.headers().map_err(|e| csv_error(&e))?.clone();
    // Parse everything first: a malformed row is reported, the others still go in.
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for record in reader.records() {
        let parsed = record.and_then(|record| {
            let line = record.position().map_or(0, |p| p.line());
            record
                .deserialize::<Row>(Some(&headers))
                .map(|row| (line, row))
        });
        match parsed {
            Ok(row) => rows.push(row),
            Err(e) => failed.push(RowFailure {
                line: e.position().map_or(0, |p| p.line()),
                username: None,
                error: csv_error(&e),
            }),
        }
    }
    Ok((rows, failed))
}

#[derive(Debug, Serialize)]
struct Report {
    imported: usize,
    failed: Vec<RowFailure>,
}

pub fn run(global: &GlobalArgs, args: ImportArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let file = std::fs::File::open(&args.file)
        .map_err(|e| Failure::User(anyhow::anyhow!("cannot read {}: {e}", args.file.display())))?;
    let base = args
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (rows, failed) = parse_rows(file)
        .map_err(|e| Failure::User(anyhow::anyhow!("{}: {e}", args.file.display())))?;
    let store = global.open_store(&config)?;
    let progress = indicatif::ProgressBar::new(rows.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows {elapsed}")
            .expect("valid template"),
    );
    let failures = Mutex::new(failed);
    let next = AtomicUsize::new(0);
    let imported = AtomicUsize::new(0);
    // Argon2id dominates; one worker per core.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((line, row)) = rows.get(i) else {
                    break;
                };
                match import_row(row, &base, args.allow_outside_paths, &config, &store) {
                    Ok(()) => {
                        imported.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => failures.lock().unwrap().push(RowFailure {
                        line: *line,
                        username: Some(row.username.clone()),
                        error,
                    }),
                }
                progress.inc(1);
            });
        }
    });
    progress.finish_and_clear();
    let mut failed = failures.into_inner().unwrap();
    failed.sort_by_key(|f| f.line);
    let report = Report {
        imported: imported.into_inner(),
        failed,
    };
    global.emit(&report, |r| {
        let mut text = format!(
            "imported {} of {} rows",
            r.imported,
            r.imported + r.failed.len()
        );
        for f in &r.failed {
            text.push_str(&format!(
                "\n  line {}{}: {}",
                f.line,
                f.username
                    .as_deref()
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default(),
                f.error
            ));
        }
        text
    });
    match report.failed.len() {
        0 => Ok(()),
        n => Err(Failure::User(anyhow::anyhow!(
            "{n} rows were not imported; fix them and import those rows again"
        ))),
    }
}

/// Where a row's document path points: relative to the CSV's folder `base`. Unless
/// `allow_outside`, an absolute path or one that leaves `base` (by `..` or a symbolic
/// link) is refused, so a CSV from elsewhere cannot pull in any file the operator can read.
pub fn document_path(base: &Path, text: &str, allow_outside: bool) -> Result<PathBuf, String> {
    use std::path::Component;
    let given = Path::new(text);
    let path = base.join(given);
    if allow_outside {
        return Ok(path);
    }
    let refuse = |why: &str| {
        format!(
            "the document path {text:?} {why}; document paths must stay in the CSV file's folder \
             (move the file there, or pass --allow-outside-paths)"
        )
    };
    if given.is_absolute() {
        return Err(refuse("is absolute"));
    }
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(refuse("leaves the folder by '..'"));
    }
    // A symbolic link inside the folder may still point out of it.
    if let (Ok(real), Ok(real_base)) = (path.canonicalize(), base.canonicalize()) {
        if !real.starts_with(&real_base) {
            return Err(refuse("leads out of the folder by a symbolic link"));
        }
    }
    Ok(path)
}

fn import_row(
    row: &Row,
    base: &Path,
    allow_outside: bool,
    config: &Config,
    store: &Store,
) -> Result<(), String> {
    let mut documents = Vec::new();
    for (kind, path) in [
        (DocumentKind::IdScan, &row.id_scan),
        (DocumentKind::Photo, &row.photo),
    ] {
        if let Some(path) = path.as_deref().filter(|p| !p.is_empty()) {
            let path = document_path(base, path, allow_outside)?;
            documents.push(
                read_document(kind, &path, config.max_document_bytes)
                    .map_err(|f| f.error().to_string())?,
            );
        }
    }
    let enrollment = Enrollment::prepare(
        &row.username,
        &row.password,
        &row.name,
        &row.phone,
        documents,
        &super::enroll::rules(config),
    )
    .map_err(|e| e.to_string())?;
    accounts::enroll(store, &enrollment).map_err(|e| e.to_string())?;
    Ok(())
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => format!(
            "malformed row: {err}; expected columns username,name,phone,password[,id_scan][,photo]"
        ),
        _ => format!("malformed row: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rows;

    #[test]
    fn rows_and_failures_with_their_lines() {
        let csv = "username,name,phone,password,photo\n alice , A ,+8613800138000,pw\nbob,B\n";
        let (rows, failed) = parse_rows(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1.username, "alice");
        assert_eq!(rows[0].1.photo, None);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].line, 3);
        assert!(failed[0].error.starts_with("malformed row"));
    }
}
