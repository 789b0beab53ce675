//! Builds the eBPF programs in `probe-ebpf` (nightly, `-Z build-std=core`, bpf-linker) and leaves
//! the object in OUT_DIR, where `attach.rs` embeds it. `cargo xtask setup` installs the toolchain.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // probe-ebpf is not a build-dependency (it only builds for bpfel), so tell cargo what to watch.
    for dir in ["probe-ebpf", "probe-common"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    if std::process::Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        anyhow::bail!("bpf-linker not found on PATH: run `cargo xtask setup` first");
    }
    let ebpf = root.join("probe-ebpf");
    let package = aya_build::Package {
        name: "probe-ebpf",
        root_dir: ebpf.to_str().expect("UTF-8 path"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
