//! Binary sizes: the release binaries this benchmark runs (dynamically linked), and the static ones the
//! image ships, built exactly as tests/image/check.sh builds them (into target/static, incremental).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

fn mib(path: &Path) -> Option<f64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
}

pub fn run(build_static: bool) -> Value {
    let dynamic = json!({
        "tka-server": mib(&crate::footprint::server_bin()),
        "tka": mib(Path::new(env!("CARGO_BIN_EXE_tka"))),
    });
    if !build_static {
        return json!({"release": dynamic});
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let triple = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc names its host");
    let dir = root.join("target/static");
    eprintln!("building the static binaries into {} ...", dir.display());
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "--bins",
            "--target",
            &triple,
        ])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .expect("cargo build");
    assert!(built.success(), "static build failed");
    let bin = dir.join(&triple).join("release");
    json!({
        "release": dynamic,
        "static": {
            "tka-server": mib(&bin.join("tka-server")),
            "tka": mib(&bin.join("tka")),
        },
    })
}
