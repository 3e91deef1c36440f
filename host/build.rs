//! Links the `weir` executable with packed relative relocations where the platform has them.
//!
//! A position-independent executable carries one relocation record per pointer in its
//! read-only data (about 66,000 for weir, 1.6 MB), and the dynamic loader reads every one at
//! start. Packed (`DT_RELR`, glibc 2.36 and binutils 2.38 or later) they take 19 KB, so the
//! process maps 1.4 MiB fewer pages of its own file (docs/performance.md, twenty-eighth session).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if target_os == "linux" && target_env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
