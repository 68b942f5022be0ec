//! Builds the eBPF object (tracer-ebpf) with the pinned nightly and embeds it in `locktrace`.
//! The toolchain pin lives in `xtask` (`cargo xtask setup` installs it); it reaches us through
//! `LOCKTRACE_BPF_TOOLCHAIN` so there is one place to change it.

const DEFAULT_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LOCKTRACE_BPF_TOOLCHAIN");
    let toolchain =
        std::env::var("LOCKTRACE_BPF_TOOLCHAIN").unwrap_or_else(|_| DEFAULT_TOOLCHAIN.to_owned());
    let metadata = aya_build::Package {
        name: "tracer-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([metadata], aya_build::Toolchain::Custom(&toolchain)).map_err(|e| {
        anyhow::anyhow!(
            "building the eBPF object failed ({e:#}); run `cargo xtask setup` to install the pinned \
             toolchain ({toolchain} with rust-src) and bpf-linker"
        )
    })
}
