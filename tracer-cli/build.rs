//! Builds the eBPF object (tracer-ebpf) with the pinned nightly and embeds it in `locktrace`.
//! The toolchain pin is the one line in `tracer-ebpf/bpf-toolchain`, read here and by `cargo xtask
//! setup` (which installs it); `LOCKTRACE_BPF_TOOLCHAIN` overrides it.

const DEFAULT_TOOLCHAIN: &str = include_str!("../tracer-ebpf/bpf-toolchain");

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LOCKTRACE_BPF_TOOLCHAIN");
    println!("cargo:rerun-if-changed=../tracer-ebpf/bpf-toolchain");
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
