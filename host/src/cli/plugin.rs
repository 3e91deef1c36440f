//! `weir plugin build` and `weir plugin list`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use weir::plugin_build::build_plugin;
use weir::registry::PluginRegistry;

/// Builds the plugin crate at `path` into `registry`.
pub fn build(path: &Path, registry: &Path) -> anyhow::Result<ExitCode> {
    let built = build_plugin(path, registry)?;
    println!(
        "built plugin {} -> {} ({} KiB)",
        built.name,
        built.path.display(),
        built.size.div_ceil(1024)
    );
    Ok(ExitCode::SUCCESS)
}

/// Lists the plugins in `registry`.
pub fn list(registry: &Path) -> anyhow::Result<ExitCode> {
    let entries = PluginRegistry::new(registry)
        .list()
        .with_context(|| format!("listing plugins; create {} or pass --plugins DIR", registry.display()))?;
    if entries.is_empty() {
        println!("no plugins in {}; build one with `weir plugin build PATH`", registry.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<14} {:>10}  PATH", "NAME", "VERSION", "SIZE");
    for entry in entries {
        println!(
            "{:<24} {:<14} {:>7} KiB  {}",
            entry.name,
            entry.version,
            entry.size.div_ceil(1024),
            entry.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
