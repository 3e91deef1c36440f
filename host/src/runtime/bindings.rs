//! The only place `bindgen!` runs: host-side types and glue for the `transformer` world.

wasmtime::component::bindgen!({
    world: "transformer",
    path: "../wit",
});
