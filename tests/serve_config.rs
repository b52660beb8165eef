//! `dialgate serve` settings from flags, `DIALGATE_*` variables, the config file's
//! `[serve]` table and the defaults: in process through the real parser, and through the
//! real binary.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use clap::{CommandFactory, Parser};
use common::ServeProcess;
use dialgate::cli::{
    serve::{ServeOptions, ServeSettings},
    Cli, Command,
};

/// One HTTP/1.1 request; returns the status code and the whole response text.
fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response)
}

fn serve_fails_with(args: &[&str], message: &str) {
    let data = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("dialgate")
        .unwrap()
        .arg("--data-dir")
        .arg(data.path())
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in:\n{stderr}"
    );
}

#[test]
fn the_config_file_serve_table_sets_the_login_limit_and_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    std::fs::write(
        &config,
        // The old plural key still works, with a warning.
        "[serve]\ndialin_numbers = [\"+861055550100\"]\nlogin_limit_per_ip = 2\n",
    )
    .unwrap();
    let server = ServeProcess::start(&["--config", config.to_str().unwrap()], None);
    let http = server.http_addr();
    let wrong = r#"{"username":"nobody","password":"wrong password"}"#;
    assert_eq!(post_json(http, "/v1/login", wrong).0, 401);
    assert_eq!(post_json(http, "/v1/login", wrong).0, 401);
    let (status, response) = post_json(http, "/v1/login", wrong);
    assert_eq!(status, 429, "{response}");
    assert!(
        response.to_lowercase().contains("retry-after:"),
        "{response}"
    );
    let log = server.log_text();
    assert!(!log.contains("no --dialin-number configured"), "{log}");
    assert!(
        log.contains("[serve] dialin_numbers is deprecated, write dialin_number"),
        "{log}"
    );
}

#[test]
fn unknown_keys_in_the_serve_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    std::fs::write(&config, "[serve]\ndialin_nubmer = [\"+861055550100\"]\n").unwrap();
    serve_fails_with(
        &["--config", config.to_str().unwrap()],
        "unknown field `dialin_nubmer`",
    );
    std::fs::write(&config, "databse_url = \"x.sqlite3\"\n").unwrap();
    serve_fails_with(
        &["--config", config.to_str().unwrap()],
        "unknown field `databse_url`",
    );
    // A key may not be given under both its names.
    std::fs::write(
        &config,
        "[serve]\ntrusted_trunk = [\"PJSIP/a\"]\ntrusted_trunks = [\"PJSIP/b\"]\n",
    )
    .unwrap();
    serve_fails_with(&["--config", config.to_str().unwrap()], "duplicate field");
}

#[test]
fn a_typed_value_of_the_wrong_kind_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    std::fs::write(&config, "[serve]\nenv_timeout = \"soon\"\n").unwrap();
    serve_fails_with(&["--config", config.to_str().unwrap()], "line 2");
    serve_fails_with(&["--env-timeout", "soon"], "write e.g. 30s, 5m, 2h");
}

#[test]
fn a_variable_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    std::fs::write(&config, "[serve]\nchallenge_ttl = \"60s\"\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("dialgate")
        .unwrap()
        .env("DIALGATE_CHALLENGE_TTL", "20m")
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--challenge-ttl 1200s is outside"),
        "{stderr}"
    );
}

/// What `dialgate [global] serve [serve_args]` resolves to with `file` as `--config`.
fn serve_options(global: &[&str], file: Option<&str>, serve_args: &[&str]) -> ServeOptions {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    let mut argv = vec!["dialgate", "--data-dir", dir.path().to_str().unwrap()];
    if let Some(text) = file {
        std::fs::write(&config, text).unwrap();
        argv.extend(["--config", config.to_str().unwrap()]);
    }
    argv.extend(global);
    argv.push("serve");
    argv.extend(serve_args);
    let cli = Cli::try_parse_from(argv).unwrap();
    let Command::Serve(given) = cli.command else {
        unreachable!()
    };
    let config = cli
        .global
        .config()
        .map_err(|e| e.error().to_string())
        .unwrap();
    let options = ServeOptions::layered(given, &config)
        .map_err(|e| e.error().to_string())
        .unwrap();
    // Whatever the layers gave resolves.
    ServeSettings::resolve(options.clone(), &config)
        .map_err(|e| e.error().to_string())
        .unwrap();
    options
}

fn secs(n: u64) -> Option<dialgate::config::HumanDuration> {
    Some(dialgate::config::HumanDuration(Duration::from_secs(n)))
}

#[test]
fn the_file_is_used_where_no_flag_is_given_and_flags_beat_it() {
    let file = "default_region = \"US\"\n[serve]\ndialin_number = [\"+861055550100\"]\n\
                trusted_trunk = [\"PJSIP/carrier\"]\nlogin_limit_per_ip = 2\n\
                session_ttl = \"2h\"\ninsecure_cookies = true\nmode = \"answer\"\n";
    let options = serve_options(&[], Some(file), &[]);
    assert_eq!(options.login_limit_per_ip, Some(2));
    assert_eq!(options.session_ttl, secs(7200));
    assert_eq!(
        options.dialin_number.as_deref(),
        Some(&["+861055550100".to_string()][..])
    );
    assert_eq!(
        options.trusted_trunk.as_deref(),
        Some(&["PJSIP/carrier".to_string()][..])
    );
    assert!(options.insecure_cookies);
    // Untouched: the defaults.
    assert_eq!(options.login_limit_per_account, Some(30));
    assert_eq!(options.challenge_ttl, secs(180));

    let options = serve_options(
        &[],
        Some(file),
        &[
            "--login-limit-per-ip",
            "7",
            "--session-ttl",
            "30m",
            "--dialin-number",
            "+861055550199",
            "--mode",
            "missed-call",
        ],
    );
    assert_eq!(options.login_limit_per_ip, Some(7));
    assert_eq!(options.session_ttl, secs(1800));
    assert_eq!(
        options.dialin_number.as_deref(),
        Some(&["+861055550199".to_string()][..])
    );
    assert_eq!(
        options.mode,
        Some(dialgate::dialin::verify::Mode::MissedCall)
    );
    // The ones not given still come from the file.
    assert_eq!(
        options.trusted_trunk.as_deref(),
        Some(&["PJSIP/carrier".to_string()][..])
    );
}

#[test]
fn the_old_plural_keys_are_still_read() {
    let file = "[serve]\ndialin_numbers = [\"+861055550100\", \"+861055550101\"]\n\
                trusted_trunks = [\"PJSIP/carrier\"]\n";
    let options = serve_options(&[], Some(file), &[]);
    assert_eq!(options.dialin_number.map(|n| n.len()), Some(2));
    assert_eq!(
        options.trusted_trunk.as_deref(),
        Some(&["PJSIP/carrier".to_string()][..])
    );
}

#[test]
fn the_top_level_file_settings_are_layered_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ndefault_region = \"US\"\ncurrency = \"usd\"\nmigrate_on_start = false\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let parse = |extra: &[&str]| {
        // Global flags after the subcommand, the less obvious place.
        let mut argv = vec!["dialgate", "--config", config.to_str().unwrap(), "migrate"];
        argv.extend(extra);
        let cli = Cli::try_parse_from(argv).unwrap();
        cli.global
            .config()
            .map_err(|e| e.error().to_string())
            .unwrap()
    };
    let from_file = parse(&[]);
    assert_eq!(from_file.data_dir, data);
    assert_eq!(from_file.default_region.to_string(), "US");
    assert_eq!(from_file.currency, "USD");
    assert!(!from_file.migrate_on_start);
    let flagged = parse(&["--default-region", "GB", "--data-dir", "/tmp/elsewhere"]);
    assert_eq!(flagged.default_region.to_string(), "GB");
    assert_eq!(flagged.data_dir, Path::new("/tmp/elsewhere"));
}

#[test]
fn serve_help_shows_the_defaults() {
    let mut command = Cli::command();
    let help = command
        .find_subcommand_mut("serve")
        .unwrap()
        .render_long_help()
        .to_string();
    for default in [
        "[default: 127.0.0.1:4573]",
        "[default: 10000]",
        "[default: 5s]",
        "[default: 1m]",
        "[default: 30s]",
        "[default: missed-call]",
        "[default: 3m]",
        "[default: 12h]",
        "[default: PJSIP/{number}@carrier]",
        "[default: beep]",
    ] {
        assert!(help.contains(default), "{default} missing from:\n{help}");
    }
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("[default: CN]"), "{help}");
}

/// Whether a README table names `--long` (as `` `--long` `` or `` `--long VALUE` ``).
fn in_table(table: &str, long: &str) -> bool {
    table.contains(&format!("`--{long}`")) || table.contains(&format!("`--{long} "))
}

/// Adding a `serve` option is one field plus one README line: this finds the line.
#[test]
fn every_flag_is_in_the_readme() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = |title: &str| {
        let start = readme
            .find(title)
            .unwrap_or_else(|| panic!("{title} in README"));
        let rest = &readme[start + title.len()..];
        rest[..rest.find("\n#").unwrap_or(rest.len())]
            .lines()
            .filter(|line| line.starts_with("| `--"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let serve_table = section("## `dialgate serve`");
    let global_table = section("## Database and configuration");
    let command = Cli::command();
    let serve = command.find_subcommand("serve").unwrap();
    let mut missing = Vec::new();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) else {
            continue;
        };
        let table = if arg.is_global_set() {
            &global_table
        } else {
            &serve_table
        };
        if !in_table(table, long) {
            missing.push(long);
        }
    }
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if !in_table(&global_table, long) {
            missing.push(long);
        }
    }
    assert!(
        missing.is_empty(),
        "flags missing from README's tables: {missing:?}"
    );
}

#[test]
fn inconsistent_settings_stop_the_start_with_what_to_fix() {
    serve_fails_with(&["--code-digits", "4"], "--code-digits needs --mode answer");
    serve_fails_with(&["--challenge-ttl", "20m"], "outside 10s..600s");
    serve_fails_with(&["--trusted-trunk", "carrier"], "write TECHNOLOGY/ENDPOINT");
    serve_fails_with(&["--dialin-number", "12"], "--dialin-number \"12\"");
    serve_fails_with(&["--signal-key", "short"], "at least 32 characters");
}

#[test]
fn the_cli_reads_the_temporary_password_key_of_the_serve_table_too() {
    let key = "00112233445566778899aabbccddeeff";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialgate.toml");
    std::fs::write(&config, format!("[serve]\ntemp_password_key = \"{key}\"\n")).unwrap();
    let cli = Cli::try_parse_from([
        "dialgate",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "migrate",
    ])
    .unwrap();
    let config = cli
        .global
        .config()
        .map_err(|e| e.error().to_string())
        .unwrap();
    let loaded = dialgate::cli::temp_password::KeyArgs::default()
        .load(&config)
        .map_err(|e| e.error().to_string())
        .unwrap();
    assert_eq!(hex::encode(loaded), key);
    assert!(!dir.path().join("temp-password.key").exists());
}
