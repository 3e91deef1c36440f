//! The guest SDK for Weir plugins: it owns the wit-bindgen bindings so that a plugin is one
//! small file, a type implementing [`Plugin`] plus one [`export_plugin!`] line.
//!
//! ```ignore
//! use weir_plugin::{Config, Error, Plugin, Record};
//!
//! struct Upper;
//!
//! impl Plugin for Upper {
//!     fn init(_config: &Config) -> Result<Self, Error> {
//!         Ok(Upper)
//!     }
//!     fn transform(&self, record: Record) -> Result<Vec<Record>, Error> {
//!         let mut json = record.json()?;
//!         json["name"] = weir_plugin::json::str_at(&json, "/name")?.to_uppercase().into();
//!         Ok(vec![record.with_json(&json)?])
//!     }
//! }
//!
//! weir_plugin::export_plugin!(Upper);
//! ```

pub mod arena;
pub mod batch;
pub mod config;
pub mod copy;
pub mod error;
pub mod json;
mod json_in;
pub mod json_out;
pub mod log;
pub mod record;
mod swar;
#[cfg(test)]
mod test_random;
mod utf8;
mod vector;

#[doc(hidden)]
pub mod guest;

pub use config::Config;
pub use error::{Error, ErrorKind};
pub use record::Record;

/// The generated bindings of the `batch-transformer` world: each batch crosses the boundary as
/// one buffer each way, in the encoding of [`batch`]. Plugins never need these directly.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "batch-transformer",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "weir_plugin::bindings",
    });
}

/// A record transformer. One value is built per plugin instance by [`Plugin::init`] and then
/// asked to transform every record that instance sees.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from the pipeline's config. Return [`Error::config`] naming the key
    /// when the config is unusable: the host then refuses to run this plugin version.
    fn init(config: &Config) -> Result<Self, Error>;

    /// Whether `transform` runs on a per-call scratch arena ([`arena`]): every allocation of a
    /// call (the input batch included) is a pointer bump, released all at once when the host
    /// next calls in. Much faster for per-record JSON work, and safe only for a plugin that
    /// keeps nothing a `transform` call allocated: no `RefCell`/`Mutex` fields that gain
    /// owned data during `transform`, no lazily filled statics (`OnceLock`, `LazyLock`) first
    /// touched there. Build such state in [`Plugin::init`], which never runs on the arena.
    const ARENA: bool = false;

    /// Transforms one record into zero, one or many records. An `Err` affects this record only:
    /// the host sends it to the dead-letter destination with the error's message.
    fn transform(&self, record: Record) -> Result<Vec<Record>, Error>;
}

/// Exports a [`Plugin`] implementation as the component's `batch-transformer` world.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __WeirGuest;

        impl $crate::bindings::Guest for __WeirGuest {
            fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                $crate::guest::init::<$plugin>(&config)
            }

            fn transform_batch(batch: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8> {
                $crate::guest::transform::<$plugin>(&batch)
            }
        }

        $crate::bindings::export!(__WeirGuest with_types_in $crate::bindings);
    };
}
