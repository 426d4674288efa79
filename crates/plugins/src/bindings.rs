//! Host bindings generated from `plugins/wit/skiff-plugin.wit`.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../../plugins/wit",
});

pub use skiff::plugin::host;
pub use skiff::plugin::types;
