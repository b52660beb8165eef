//! The domain: passwords, accounts and enrollment, audit. Uses `store` and `phone`;
//! knows nothing of AGI, AMI or HTTP.

pub mod accounts;
pub mod audit;
pub mod balance;
pub mod conditions;
pub mod credentials;
pub mod documents;
pub mod login;
pub mod passwords;
pub mod payments;
pub mod signal;
pub mod temp_passwords;
