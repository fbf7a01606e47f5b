#![deny(missing_docs)]
#![deny(unsafe_code)]
//! corral
pub mod http;
pub mod poller;
pub mod router;
