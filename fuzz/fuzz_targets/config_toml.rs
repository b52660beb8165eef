//! The `--config` TOML file as every command reads it: the top level into
//! `GlobalOptions`, laid over the defaults (`Given::over`) and resolved (`Config::resolve`:
//! database URL, region, currency), then `[serve]` into `ServeOptions` (with the renamed
//! keys) and `ServeSettings::resolve` (addresses, durations, limits, trunks, numbers,
//! AMI, call-back texts). Errors are fine; panics are not.
#![no_main]

use std::sync::Arc;

use dialgate::cli::serve::{ServeOptions, ServeSettings, RENAMED_KEYS};
use dialgate::config::{Config, ConfigFile, Given, GlobalOptions};
use libfuzzer_sys::fuzz_target;

/// Keeps `ServeSettings::resolve` off the disk (without a key it creates one in the data
/// directory).
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = ConfigFile::from_text("fuzz.toml", text.to_string());
    let serve = file.table::<ServeOptions>("serve", RENAMED_KEYS);
    let Ok(top) = file.top::<GlobalOptions>() else {
        return;
    };
    let defaults = GlobalOptions {
        default_region: Some("CN".into()),
        data_dir: Some("/nonexistent/dialgate-fuzz".into()),
        ..GlobalOptions::default()
    };
    let Ok(options) = Given::defaults(defaults).over(Some(&top)) else {
        return;
    };
    let Ok(mut config) = Config::resolve(&options) else {
        return;
    };
    config.file = Some(Arc::new(file));
    let Ok(Some(_)) = serve else {
        return;
    };
    let Ok(mut serve) = ServeOptions::layered(Given::defaults(ServeOptions::default()), &config)
    else {
        return;
    };
    if serve.temp_password_key.is_none() {
        serve.temp_password_key = Some(KEY.into());
    }
    let _ = ServeSettings::resolve(serve, &config);
});
