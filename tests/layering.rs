//! The dependency rules of ARCHITECTURE.md ("Invariants"), checked on the source: each
//! module's `crate::` paths (in `use` lines, grouped `use crate::{..}` included, and
//! inline paths) and the HTTP crates it names.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Protocol and infrastructure: they know no domain.
const PROTOCOL: &[&str] = &[
    "agi", "ami", "lines", "phone", "store", "metrics", "time", "rt",
];
/// The domain and everything above it.
const DOMAIN_AND_ABOVE: &[&str] = &["auth", "dialin", "gateway", "cli", "config"];
/// Crates that mean HTTP.
const HTTP_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "hyper_util",
    "http",
    "http_body_util",
    "tower",
    "tower_http",
];

/// Top-level modules of `crate::` named in `source`.
fn crate_modules(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        // `crate::` preceded by an identifier character is another crate's path (`dialgate::`
        // is not `crate::`, but `foo_crate::` would be).
        let glued = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !glued {
            if let Some(group) = after.strip_prefix('{') {
                found.extend(group_heads(group));
            } else {
                found.insert(ident(after));
            }
        }
        rest = after;
    }
    found.retain(|m| !m.is_empty());
    found
}

/// The first path segment of each item of a `{a, b::c, d::{e, f}}` group (the text after
/// its opening brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut at_item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if at_item_start && (c.is_alphanumeric() || c == '_') && depth == 0 => {
                heads.push(ident(&group[i..]));
                at_item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// External crates named at the start of a path (`axum::`, `use hyper::{..}`).
fn names_crate(source: &str, krate: &str) -> bool {
    source.lines().any(|line| {
        let line = line.trim_start();
        !line.starts_with("//")
            && line.match_indices(&format!("{krate}::")).any(|(at, _)| {
                !line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            })
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file with the top-level module it belongs to (`src/agi/sim/peer.rs` is
/// `agi`, `src/lines.rs` is `lines`).
fn modules() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.components().next()?.as_os_str().to_str()?.to_string();
            let module = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            Some((module, path, text))
        })
        .collect()
}

fn violations(rule: &str, allowed: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let mut bad = Vec::new();
    for (module, path, text) in modules() {
        for used in crate_modules(&text) {
            if !allowed(&module, &used) {
                bad.push(format!("{rule}: {} uses crate::{used}", path.display()));
            }
        }
    }
    bad
}

#[test]
fn protocol_modules_know_no_domain() {
    let bad = violations("protocol knows no domain", |module, used| {
        !(PROTOCOL.contains(&module) && DOMAIN_AND_ABOVE.contains(&used))
    });
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn auth_knows_no_http_agi_or_config() {
    let forbidden = ["config", "agi", "ami", "dialin", "gateway", "cli"];
    let mut bad = violations("auth knows no HTTP, AGI or config", |module, used| {
        module != "auth" || !forbidden.contains(&used)
    });
    for (module, path, text) in modules() {
        for krate in HTTP_CRATES {
            if module == "auth" && names_crate(&text, krate) {
                bad.push(format!(
                    "auth knows no HTTP: {} names {krate}::",
                    path.display()
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn dialin_and_gateway_stay_apart_and_below_the_cli() {
    let bad = violations(
        "dialin and gateway are siblings below cli and config",
        |module, used| match module {
            "dialin" => !["gateway", "cli", "config"].contains(&used),
            "gateway" => !["dialin", "cli", "config"].contains(&used),
            _ => true,
        },
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The scanner itself: a rule that cannot see an import would pass anything.
#[test]
fn the_scanner_sees_every_form_of_crate_path() {
    let source = r#"
use crate::agi::Router;
use crate::{
    auth::{accounts, login::LoginSettings},
    config::Config, store,
};
// use crate::cli::ignored_in_a_comment;
fn f() { let _ = crate::gateway::api::x(); let _ = dialgate::metrics::M; }
pub(crate) fn g() {}
"#;
    let found: Vec<String> = crate_modules(source).into_iter().collect();
    assert_eq!(found, ["agi", "auth", "config", "gateway", "store"]);
    assert!(names_crate("    let c = hyper::Client::new();", "hyper"));
    assert!(!names_crate(
        "    let c = my_hyper::Client::new();",
        "hyper"
    ));
    assert!(!names_crate("    // axum::Router", "axum"));
}
