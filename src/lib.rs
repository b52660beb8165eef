//! dialgate: a real phone line as a login factor. See ARCHITECTURE.md for the module map.
pub mod agi;
pub mod ami;
pub mod auth;
pub mod cli;
pub mod config;
pub mod dialin;
pub mod gateway;
pub mod lines;
pub mod metrics;
pub mod phone;
pub mod rt;
pub mod store;
pub mod time;
