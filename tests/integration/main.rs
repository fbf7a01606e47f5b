//! Black-box tests: the real server on `127.0.0.1:0`, spoken to through raw
//! `TcpStream`s with read timeouts (a hang fails fast), through `ureq`, and
//! as a child process for the binary's own behaviour (signals, descriptor
//! exhaustion, the command line). One test binary, a module per area.

mod support;

mod access_log;
mod admin;
mod arrays;
mod bodies;
mod cache;
mod cli;
mod conditional;
mod deploy;
mod emfile;
mod expect;
mod front;
mod head;
mod http_client;
mod keepalive;
mod memory;
mod overload;
mod pipeline;
mod protocol_errors;
mod proxy;
mod proxy_cache;
mod shutdown;
mod slots;
mod slow_body;
mod slow_clients;
mod strictness;
mod upstream;
mod waiting;
