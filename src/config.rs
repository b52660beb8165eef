//! One configuration: flags and `DIALGATE_*` variables (read by clap) win over the TOML
//! file given with `--config`, which wins over the defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{
    phone::Region,
    store::{DatabaseUrl, StoreError},
};

/// The `--config` file. Unknown keys are refused so a typo does not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub default_region: Option<String>,
    pub currency: Option<String>,
    pub max_document_bytes: Option<usize>,
    pub migrate_on_start: Option<bool>,
    /// `[serve]`: every `dialgate serve` flag, by the flag's name with underscores.
    #[serde(default)]
    pub serve: ServeFile,
}

/// The `[serve]` table; each key is the `dialgate serve` flag of the same name.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    pub agi_listen: Option<std::net::SocketAddr>,
    pub http_listen: Option<std::net::SocketAddr>,
    pub agi_allow: Option<Vec<String>>,
    pub max_connections: Option<u32>,
    pub env_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub grace_period: Option<String>,
    pub dialin_numbers: Option<Vec<String>>,
    pub trusted_trunks: Option<Vec<String>>,
    pub mode: Option<crate::dialin::verify::Mode>,
    pub code_digits: Option<u8>,
    pub challenge_ttl: Option<String>,
    pub session_ttl: Option<String>,
    pub node_url: Option<String>,
    pub signal_key: Option<String>,
    pub insecure_cookies: Option<bool>,
    pub login_limit_per_ip: Option<u32>,
    pub login_limit_per_account: Option<u32>,
    pub login_limit_window: Option<String>,
    pub temp_password_key: Option<String>,
    pub temporary_only_payments: Option<bool>,
    pub ami_address: Option<String>,
    pub ami_username: Option<String>,
    pub ami_secret: Option<String>,
    pub callback_channel: Option<String>,
    pub callback_context: Option<String>,
    pub callback_exten: Option<String>,
    pub callback_caller_id: Option<String>,
    pub callback_timeout: Option<String>,
    pub callback_prompt: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] StoreError),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// Settings every command shares, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub data_dir: PathBuf,
    pub default_region: Region,
    pub currency: String,
    pub max_document_bytes: usize,
    pub migrate_on_start: bool,
    /// The file's `[serve]` table, for `dialgate serve` to merge under its flags.
    pub serve_file: ServeFile,
}

/// What the command line (or environment) said; `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub default_region: Option<String>,
    pub no_migrate: bool,
}

/// `$XDG_DATA_HOME/dialgate`, else `~/.local/share/dialgate`, else `./dialgate-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("dialgate");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/dialgate"),
        None => PathBuf::from("dialgate-data"),
    }
}

impl Config {
    pub fn resolve(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.config_file {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let data_dir = overrides
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir);
        let database_url = match overrides.database_url.clone().or(file.database_url) {
            Some(url) => DatabaseUrl::parse(&url)?,
            None => DatabaseUrl::default_in(&data_dir),
        };
        let region_text = overrides
            .default_region
            .clone()
            .or(file.default_region)
            .unwrap_or_else(|| "CN".into());
        let default_region: Region = region_text
            .parse()
            .map_err(|e: crate::phone::UnknownRegion| ConfigError::Invalid(e.to_string()))?;
        let currency = file.currency.unwrap_or_else(|| "CNY".into()).to_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(ConfigError::Invalid(format!(
                "currency {currency:?} is not an ISO 4217 code such as CNY or USD"
            )));
        }
        Ok(Config {
            database_url,
            data_dir,
            default_region,
            currency,
            max_document_bytes: file
                .max_document_bytes
                .unwrap_or(crate::auth::documents::DEFAULT_MAX_DOCUMENT_BYTES),
            migrate_on_start: !overrides.no_migrate && file.migrate_on_start.unwrap_or(true),
            serve_file: file.serve,
        })
    }
}
