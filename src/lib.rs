//! dialgate: a real phone line as a login factor. See ARCHITECTURE.md for the module map.
pub mod agi;
pub mod cli;
pub mod dialin;
pub mod phone;
