//! dialgate's FastAGI scripts, built on the AGI protocol layer.

pub mod confirm;
pub mod ping;
pub mod verify;

use crate::agi::Router;

/// The router `dialgate serve` answers with.
pub fn router() -> Router {
    Router::new().route("ping", ping::ping)
}
