//! `tka shell` (Unix only): log in, run a subshell with `KUBECONFIG` set, log out when it exits.
//!
//! - The kubeconfig is exec-mode, so kubectl refreshes tokens through `tka credential` however long the shell
//!   lives; nothing in this process has to keep running for that.
//! - The child shares our terminal (no new pty): an interactive shell takes the terminal's foreground, so
//!   keystrokes, Ctrl-C and window resizes reach it directly. SIGWINCH is still forwarded for children that
//!   did not take the foreground (`--command`), TSTP/TTIN/TTOU are passed on (and this process stops itself
//!   after the child, so job control in the outer shell works), and TERM/INT/QUIT/HUP end the child: SIGTERM,
//!   SIGKILL after 250 ms.
//! - `-c` is the global `--config` flag, so the command is `--command CMD` (or everything after `--`).
//! - The exit code is the child's (128 + signal when it was killed). If the logout afterwards fails, that is
//!   reported on stderr and the child's code is still returned: the shell's result is what scripts look at.

use std::ffi::OsString;
use std::time::Duration;

use tokio::process::Child;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::error::{CliError, Exit};
use super::login::{LoginOptions, login_for_shell};
use super::logout::logout;
use super::settings::{Settings, env_var};

/// Grace period between SIGTERM and SIGKILL.
const KILL_AFTER: Duration = Duration::from_millis(250);

/// What runs inside.
#[derive(Debug, Clone, PartialEq)]
pub enum Run {
    /// `$SHELL` (default `/bin/sh`), interactive.
    Shell,
    /// `$SHELL -c CMD`.
    Script(String),
    /// A program and its arguments, run directly (`tka shell -- kubectl get pods`).
    Argv(Vec<String>),
}

pub async fn shell(s: &Settings, o: &LoginOptions, run: Run) -> Result<(), CliError> {
    if env_var("TKA_SHELL").is_some() {
        return Err(CliError::usage("already inside `tka shell`")
            .advice("exit this shell first, or use `tka login` here"));
    }
    let entries = tokio::select! {
        r = login_for_shell(s, o) => r?,
        _ = tokio::signal::ctrl_c() => return Err(CliError::interrupted()),
    };
    let kubeconfig = std::env::join_paths(&entries)
        .map_err(|e| CliError::other(format!("cannot build KUBECONFIG: {e}")))?;
    let shell = env_var("SHELL").unwrap_or_else(|| "/bin/sh".into());
    let (program, args) = match run {
        Run::Shell => (shell, Vec::new()),
        Run::Script(c) => (shell, vec!["-c".to_string(), c]),
        Run::Argv(mut argv) => {
            let program = argv.remove(0);
            (program, argv)
        }
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args);
    let ps1 = std::env::var_os("PS1").unwrap_or_else(|| OsString::from("$ "));
    let mut prompt = OsString::from("(tka) ");
    prompt.push(ps1);
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("PS1", prompt)
        .env("TKA_SHELL", "1");
    let status = match cmd.spawn() {
        Ok(child) => supervise(child).await,
        Err(e) => Err(CliError::other(format!("cannot start {program}: {e}"))
            .advice("check SHELL, or the program after `--`")),
    };
    if !s.quiet {
        eprintln!("Leaving tka shell: signing out");
    }
    if let Err(e) = logout(s, false, false).await {
        eprintln!("{e}");
    }
    let code = status?;
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::new(Exit::Child(code), ""))
    }
}

/// Waits for the child, forwarding signals; returns its exit code.
async fn supervise(mut child: Child) -> Result<u8, CliError> {
    let pid = child.id().map(|p| p as libc::pid_t);
    let listen = |k: SignalKind| {
        signal(k).map_err(|e| CliError::other(format!("cannot install signal handlers: {e}")))
    };
    let mut term = listen(SignalKind::terminate())?;
    let mut int = listen(SignalKind::interrupt())?;
    let mut quit = listen(SignalKind::quit())?;
    let mut hup = listen(SignalKind::hangup())?;
    let mut winch = listen(SignalKind::window_change())?;
    let mut tstp = listen(SignalKind::from_raw(libc::SIGTSTP))?;
    let mut ttin = listen(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut ttou = listen(SignalKind::from_raw(libc::SIGTTOU))?;
    let send = |sig: libc::c_int| {
        if let Some(pid) = pid {
            // SAFETY: kill(2) with our own child's pid; no memory is involved.
            unsafe { libc::kill(pid, sig) };
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| CliError::other(format!("waiting for the shell: {e}")))?;
                return Ok(exit_code(status));
            }
            _ = first(&mut term, &mut int, &mut quit, &mut hup) => {
                send(libc::SIGTERM);
                if tokio::time::timeout(KILL_AFTER, child.wait()).await.is_err() {
                    send(libc::SIGKILL);
                }
            }
            _ = winch.recv() => send(libc::SIGWINCH),
            _ = tstp.recv() => suspend(&send, libc::SIGTSTP),
            _ = ttin.recv() => suspend(&send, libc::SIGTTIN),
            _ = ttou.recv() => suspend(&send, libc::SIGTTOU),
        }
    }
}

/// Passes a stop signal to the child, stops this process like the default action would, and continues the
/// child when the outer shell continues us.
fn suspend(send: &dyn Fn(libc::c_int), sig: libc::c_int) {
    send(sig);
    // SAFETY: raise(3) on our own process; execution resumes here after SIGCONT.
    unsafe { libc::raise(libc::SIGSTOP) };
    send(libc::SIGCONT);
}

async fn first(a: &mut Signal, b: &mut Signal, c: &mut Signal, d: &mut Signal) {
    tokio::select! {
        _ = a.recv() => {}
        _ = b.recv() => {}
        _ = c.recv() => {}
        _ = d.recv() => {}
    }
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    }
}
