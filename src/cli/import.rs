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
    /// paths are relative to the CSV file.
    pub file: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Row {
    username: String,
    name: String,
    phone: String,
    password: String,
    #[serde(default)]
    id_scan: Option<String>,
    #[serde(default)]
    photo: Option<String>,
}

#[derive(Debug, Serialize)]
struct RowFailure {
    line: u64,
    username: Option<String>,
    error: String,
}

#[derive(Debug, Serialize)]
struct Report {
    imported: usize,
    failed: Vec<RowFailure>,
}

pub fn run(global: &GlobalArgs, args: ImportArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(&args.file)
        .map_err(|e| Failure::User(anyhow::anyhow!("cannot read {}: {e}", args.file.display())))?;
    let base = args.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let headers = reader
        .headers()
        .map_err(|e| {
            Failure::User(anyhow::anyhow!(
                "{}: {}",
                args.file.display(),
                csv_error(&e)
            ))
        })?
        .clone();
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
                match import_row(row, &base, &config, &store) {
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

fn import_row(row: &Row, base: &Path, config: &Config, store: &Store) -> Result<(), String> {
    let mut documents = Vec::new();
    for (kind, path) in [
        (DocumentKind::IdScan, &row.id_scan),
        (DocumentKind::Photo, &row.photo),
    ] {
        if let Some(path) = path.as_deref().filter(|p| !p.is_empty()) {
            documents
                .push(read_document(kind, &base.join(path)).map_err(|f| f.error().to_string())?);
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
