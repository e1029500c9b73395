//! `tka`: the Tailscale Kubernetes Auth CLI. A thin entry point over [`tka::cli`].

fn main() -> std::process::ExitCode {
    tka::cli::main()
}
