//! A test plugin built for `weir:plugin@0.2.0`, a contract version the host does not support: the
//! host must reject it by name when it is deployed. Otherwise it is a pass-through.

mod bindings {
    wit_bindgen::generate!({
        world: "transformer",
        path: "wit",
    });
}

use bindings::weir::plugin::types::{Error, Record};

/// Passes every record through.
pub struct WrongVersion;

impl bindings::Guest for WrongVersion {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn transform(batch: Vec<Record>) -> Vec<Result<Vec<Record>, Error>> {
        batch.into_iter().map(|record| Ok(vec![record])).collect()
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(WrongVersion with_types_in bindings);
