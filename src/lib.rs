#![deny(missing_docs)]
#![deny(unsafe_code)]
//! corral
pub mod access;
pub mod app;
pub mod config;
pub mod conn;
pub mod http;
pub mod metrics;
pub mod poller;
pub mod router;
pub mod server;

pub use http::{Body, Request, Response};
pub use router::{Handler, Router};
