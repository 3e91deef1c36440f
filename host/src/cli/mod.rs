//! The subcommands, one module each; `anyhow` is used here and nowhere in the library.

pub mod bench;
pub mod logging;
pub mod plugin;
pub mod run;
pub mod tap;
