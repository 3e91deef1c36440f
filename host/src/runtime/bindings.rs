//! The only place `bindgen!` runs: host-side types and glue for the `transformer` world, and
//! for the `batch-transformer` world (module [`batch`]), which shares its `host` interface.

wasmtime::component::bindgen!({
    world: "transformer",
    path: "../wit",
    // The batch handed to a plugin borrows the host's records (`RecordParam<'_>`): lowering
    // copies their bytes into the guest's memory straight from the host's buffers.
    ownership: Borrowing {
        duplicate_if_necessary: true
    },
});

/// The `batch-transformer` world: one buffer each way (see `weir_plugin::batch`).
pub mod batch {
    wasmtime::component::bindgen!({
        world: "batch-transformer",
        path: "../wit",
        // The same `host` interface as `transformer`'s: one implementation, linked once.
        with: {
            "weir:plugin/host": super::weir::plugin::host,
        },
    });
}

/// The version of the `weir:plugin` package in wit/, the only one this host links. A component
/// built against another version names it in its imports, which is how its rejection says so.
pub const CONTRACT_VERSION: &str = "0.1.1";

#[cfg(test)]
mod tests {
    #[test]
    fn the_contract_version_is_the_one_in_wit() {
        let wit = include_str!("../../../wit/plugin.wit");
        let package = format!("package weir:plugin@{};", super::CONTRACT_VERSION);
        assert!(wit.contains(&package), "wit/plugin.wit lacks `{package}`");
    }
}
