//! One configuration: flags and `DIALGATE_*` variables (read by clap) win over the TOML
//! file given with `--config`, which wins over the defaults (clap's `default_value`s).
//!
//! Each config table has one options struct whose fields derive both clap and serde:
//! [`GlobalOptions`] (the top level) here, `cli::serve::ServeOptions` (`[serve]`) beside
//! its command. A config key is the field's name, which is the flag's name with
//! underscores. [`Given`] records which options the user gave; [`Given::over`] lays them
//! over the file's table, field by field, with one generic merge.

use std::{
    collections::BTreeSet,
    fmt,
    marker::PhantomData,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use clap::{parser::ValueSource, ArgMatches, Args, FromArgMatches};
use serde::{
    de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
    Deserialize, Deserializer, Serialize, Serializer,
};

use crate::{
    phone::Region,
    store::{DatabaseUrl, StoreError},
};

/// The region of phone numbers written without a country code.
pub const DEFAULT_REGION: &str = "CN";
/// The currency new accounts hold when the file names none.
pub const DEFAULT_CURRENCY: &str = "CNY";

/// The top-level settings every command shares: flags (global) and top-level file keys.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlobalOptions {
    /// `mysql://USER:PASSWORD@HOST:PORT/DB`, `sqlite://PATH` or a file path.
    /// Default: dialgate.sqlite3 in the data directory.
    #[arg(
        long,
        global = true,
        env = "DIALGATE_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Where dialgate keeps its files (default $XDG_DATA_HOME/dialgate or
    /// ~/.local/share/dialgate).
    #[arg(long, global = true, env = "DIALGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Region for phone numbers written without a country code (ISO 3166, e.g. CN, US).
    #[arg(
        long,
        global = true,
        env = "DIALGATE_DEFAULT_REGION",
        default_value = DEFAULT_REGION
    )]
    pub default_region: Option<String>,

    /// Do not apply database migrations at start (run `dialgate migrate` instead).
    #[arg(long, global = true, env = "DIALGATE_NO_MIGRATE")]
    pub no_migrate: bool,

    /// File only: the ISO 4217 currency of new accounts (default [`DEFAULT_CURRENCY`]).
    #[arg(skip)]
    pub currency: Option<String>,

    /// File only: the largest ID scan or photo accepted, in bytes.
    #[arg(skip)]
    pub max_document_bytes: Option<usize>,

    /// File only: `false` is `--no-migrate`.
    #[arg(skip)]
    pub migrate_on_start: Option<bool>,

    /// The `[serve]` table, read by `dialgate serve` into its own options.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub serve: Option<IgnoredAny>,
}

/// A duration written the human way (`30s`, `5m`, `12h`) in flags, variables and the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub std::time::Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|e| format!("{e} (write e.g. 30s, 5m, 2h)"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }
}

impl From<HumanDuration> for std::time::Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

/// A value of a clap `ValueEnum` as written on the command line (for `default_value`).
pub fn enum_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Options as clap parsed them (flags, `DIALGATE_*` variables, else clap's defaults),
/// with the names of those the user gave.
#[derive(Debug, Clone, Default)]
pub struct Given<T> {
    pub options: T,
    given: BTreeSet<String>,
}

impl<T> std::ops::Deref for Given<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.options
    }
}

impl<T> Given<T> {
    /// Options nobody gave: the file and then the defaults decide.
    pub fn defaults(options: T) -> Given<T> {
        Given {
            options,
            given: BTreeSet::new(),
        }
    }

    fn record(&mut self, matches: &ArgMatches) {
        for id in matches.ids() {
            if matches!(
                matches.value_source(id.as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                self.given.insert(id.as_str().to_string());
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned> Given<T> {
    /// The options with every value the user did not give taken from `file` when it sets
    /// it, else left at clap's default: flags and variables > file > defaults.
    pub fn over(self, file: Option<&T>) -> Result<T, ConfigError> {
        let Some(file) = file else {
            return Ok(self.options);
        };
        let invalid = |e: serde_json::Error| ConfigError::Invalid(format!("options: {e}"));
        let mut merged = serde_json::to_value(&self.options).map_err(invalid)?;
        let serde_json::Value::Object(file) = serde_json::to_value(file).map_err(invalid)? else {
            return Ok(self.options);
        };
        if let serde_json::Value::Object(merged) = &mut merged {
            for (key, value) in file {
                // A file without the key deserialises it as null (unset) or false (an
                // unset switch, which is clap's default as well).
                if !value.is_null() && !self.given.contains(&key) {
                    merged.insert(key, value);
                }
            }
        }
        serde_json::from_value(merged).map_err(invalid)
    }
}

impl<T: FromArgMatches> FromArgMatches for Given<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Given::defaults(T::from_arg_matches(matches)?);
        given.record(matches);
        Ok(given)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.options.update_from_arg_matches(matches)?;
        self.record(matches);
        Ok(())
    }
}

impl<T: Args> Args for Given<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        T::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        T::augment_args_for_update(cmd)
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
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

/// The `--config` file, read once; each command reads the tables it knows.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(ConfigFile::from_text(path, text))
    }

    /// A file already read (`path` only names it in errors). Used by `load` and by the
    /// fuzz targets.
    pub fn from_text(path: impl Into<PathBuf>, text: String) -> ConfigFile {
        ConfigFile {
            path: path.into(),
            text,
        }
    }

    fn error(&self, e: impl fmt::Display) -> ConfigError {
        ConfigError::Parse {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The top level as `T` (whose `deny_unknown_fields` refuses unknown keys).
    pub fn top<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| self.error(e))
    }

    /// The table `[name]` as `T`, `None` when the file has none. `renamed` lists
    /// (old key, key) pairs still accepted (by a serde alias on the field) with a warning.
    pub fn table<T: DeserializeOwned>(
        &self,
        name: &'static str,
        renamed: &[(&str, &str)],
    ) -> Result<Option<T>, ConfigError> {
        let seed = Section::<T> {
            name,
            wanted: PhantomData,
        };
        let table = seed
            .deserialize(toml::Deserializer::new(&self.text))
            .map_err(|e| self.error(e))?;
        if table.is_some() {
            let raw: toml::Table = toml::from_str(&self.text).map_err(|e| self.error(e))?;
            let keys = raw.get(name).and_then(toml::Value::as_table);
            for (old, new) in renamed {
                if keys.is_some_and(|keys| keys.contains_key(*old)) {
                    tracing::warn!(
                        "config file {}: [{name}] {old} is deprecated, write {new}",
                        self.path.display()
                    );
                }
            }
        }
        Ok(table)
    }
}

/// Deserialises one table of a document and skips the rest, so errors inside it keep
/// their line and column.
struct Section<T> {
    name: &'static str,
    wanted: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Section<T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Section<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut table = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                table = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(table)
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
    /// The `--config` file, for commands to read their own tables from.
    pub file: Option<Arc<ConfigFile>>,
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
    /// Flags and variables over the `--config` file (if any) over the defaults.
    pub fn load(given: Given<GlobalOptions>, file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = file.map(ConfigFile::load).transpose()?;
        let options = given.over(file.as_ref().map(ConfigFile::top).transpose()?.as_ref())?;
        let mut config = Config::resolve(&options)?;
        config.file = file.map(Arc::new);
        Ok(config)
    }

    /// Settings from merged options (no file of their own).
    pub fn resolve(options: &GlobalOptions) -> Result<Config, ConfigError> {
        let data_dir = options.data_dir.clone().unwrap_or_else(default_data_dir);
        let database_url = match &options.database_url {
            Some(url) => DatabaseUrl::parse(url)?,
            None => DatabaseUrl::default_in(&data_dir),
        };
        let default_region: Region = options
            .default_region
            .as_deref()
            .unwrap_or(DEFAULT_REGION)
            .parse()
            .map_err(|e: crate::phone::UnknownRegion| ConfigError::Invalid(e.to_string()))?;
        let currency = options
            .currency
            .as_deref()
            .unwrap_or(DEFAULT_CURRENCY)
            .to_uppercase();
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
            max_document_bytes: options
                .max_document_bytes
                .unwrap_or(crate::auth::documents::DEFAULT_MAX_DOCUMENT_BYTES),
            migrate_on_start: !options.no_migrate && options.migrate_on_start.unwrap_or(true),
            file: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, PartialEq, Args, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        #[arg(long, default_value = "7")]
        count: Option<u32>,
        #[arg(long, value_delimiter = ',')]
        names: Option<Vec<String>>,
        #[arg(long)]
        on: bool,
        #[arg(long, default_value = "1m")]
        wait: Option<HumanDuration>,
    }

    fn parse(args: &[&str]) -> Given<Demo> {
        let command = Demo::augment_args(clap::Command::new("demo"));
        let matches = command
            .try_get_matches_from(std::iter::once("demo").chain(args.iter().copied()))
            .unwrap();
        Given::<Demo>::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn durations_read_and_print_the_human_way() {
        let d: HumanDuration = "1h 30m".parse().unwrap();
        assert_eq!(d.0, std::time::Duration::from_secs(5400));
        assert_eq!(d.to_string(), "1h 30m");
        assert!("soon".parse::<HumanDuration>().unwrap_err().contains("30s"));
        let back: HumanDuration = serde_json::from_value(serde_json::to_value(d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn given_options_beat_the_file_which_beats_the_defaults() {
        let file: Demo = toml::from_str("count = 3\nnames = [\"a\"]\non = true").unwrap();
        let merged = parse(&[]).over(Some(&file)).unwrap();
        assert_eq!(
            merged,
            Demo {
                wait: Some("1m".parse().unwrap()),
                ..file.clone()
            }
        );

        let merged = parse(&["--count", "9", "--names", "b,c"])
            .over(Some(&file))
            .unwrap();
        assert_eq!(merged.count, Some(9));
        assert_eq!(merged.names, Some(vec!["b".into(), "c".into()]));
        assert!(merged.on);

        // No file: clap's defaults.
        let merged = parse(&[]).over(None).unwrap();
        assert_eq!(merged.count, Some(7));
        assert_eq!(merged.names, None);
        assert!(!merged.on);
    }
}
