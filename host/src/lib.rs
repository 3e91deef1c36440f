//! Weir: a stream processor whose IO is native Rust and whose transforms are WebAssembly
//! components. This library is the `weir` binary's engine room; `main.rs` is only the CLI.

pub mod admin;
pub mod app;
pub mod config;
pub mod connectors;
pub mod generator;
pub mod metrics;
pub mod observe;
pub mod pipeline;
pub mod progress;
pub mod record;
pub mod registry;
pub mod runtime;
pub mod secret;
