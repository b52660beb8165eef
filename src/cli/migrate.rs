//! `dialgate migrate`: apply pending database migrations.

use super::{Failure, GlobalArgs};
use crate::store::{OpenOptions, Store};

pub fn run(global: &GlobalArgs) -> Result<(), Failure> {
    let config = global.config()?;
    let options = OpenOptions {
        migrate: false,
        ..OpenOptions::default()
    };
    let store =
        Store::open(&config.database_url, &options).map_err(|e| Failure::System(e.into()))?;
    let applied = store.migrate().map_err(|e| Failure::System(e.into()))?;
    let report = serde_json::json!({
        "database": config.database_url.to_string(),
        "applied": applied,
    });
    global.emit(&report, |_| {
        if applied.is_empty() {
            format!("{}: up to date", config.database_url)
        } else {
            format!("{}: applied {}", config.database_url, applied.join(", "))
        }
    });
    Ok(())
}
