//! A test plugin that exports `init` but not `transform`: the host must reject it as not
//! implementing the `transformer` world when it is deployed.

mod bindings {
    wit_bindgen::generate!({
        world: "transformer",
        path: "wit",
    });
}

/// Accepts any config and can do nothing else.
pub struct MissingExport;

impl bindings::Guest for MissingExport {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(MissingExport with_types_in bindings);
