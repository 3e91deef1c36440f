//! The subcommands, one module each; `anyhow` is used here and nowhere in the library. What
//! only a subcommand needs lives here too, out of the library that `weir run` uses: the
//! benchmarks' measurements (`measure`, which alone builds `user-profile` natively as the
//! baseline), the plugin builder (`plugin_build`, which drives cargo, componentize-py or
//! componentize-js) and the author's loop around it (`plugin_new`, `plugin_test`, `plugin_dev`).

pub mod admin;
pub mod bench;
pub mod logging;
pub mod measure;
pub mod plugin;
pub mod plugin_build;
pub mod plugin_dev;
pub mod plugin_new;
pub mod plugin_publish;
pub mod plugin_rollout;
pub mod plugin_test;
pub mod progress;
pub mod replay;
pub mod run;
#[macro_use]
pub mod stdout;
pub mod tap;
