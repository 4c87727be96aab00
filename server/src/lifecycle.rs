//! Process-level concerns: file-descriptor limits, logging, the pid file, daemon mode and the
//! signals that start a graceful shutdown.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use crate::config::Config;

/// File descriptors kept back from WebSocket connections: listeners, static files being
/// served, log and pid files, the runtime's own.
const FD_RESERVE: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so the server can hold as many connections
/// as the operating system allows, and returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    }
}

/// The soft `RLIMIT_NOFILE` in force (0 when it cannot be read).
pub fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur
}

/// Connections the process can hold without running out of file descriptors.
pub fn connections_for_fd_limit(fd_limit: u64) -> u64 {
    fd_limit.saturating_sub(FD_RESERVE).max(2)
}

/// WebSocket sessions allowed by default: fewer than the connections, so that with every
/// session taken the server still accepts connections to answer 503 to further upgrades and to
/// serve health checks, metrics and pages. One in twenty connections (at least 16) is kept
/// for that.
pub fn sessions_for_connections(connections: u64) -> u64 {
    let reserve = (connections / 20).max(16).min(connections / 2);
    connections - reserve
}

/// Starts env_logger: `RUST_LOG` wins when set, otherwise `--log-level`.
pub fn init_logging(config: &Config) {
    let mut builder = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            builder.parse_filters(&spec);
        }
        _ => {
            builder.filter_level(config.log_level.as_filter());
        }
    }
    builder.format_timestamp_millis().init();
}

/// Why the process could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("pid file {path}: {source}")]
    PidFile { path: String, source: io::Error },
    #[error("another switchboard holds the pid file {path}{holder}; refusing to start")]
    AlreadyRunning { path: String, holder: String },
    #[error("log file {path}: {source}")]
    LogFile { path: String, source: io::Error },
    #[error("cannot run in the background: {0}")]
    Daemon(io::Error),
}

/// A locked pid file; the lock lasts as long as the process (it is released when the process
/// exits, however it exits), and the file is removed on a normal exit.
pub struct PidFile {
    file: File,
    path: PathBuf,
}

impl PidFile {
    /// Opens and locks the pid file. It is locked before the daemon forks (the lock belongs to
    /// the open file, which the child inherits), so a second instance is refused in the
    /// terminal it was started from, with a clear message, not in a log nobody reads.
    pub fn lock(path: &Path) -> Result<PidFile, LifecycleError> {
        let shown = path.display().to_string();
        let pid_error = |source| LifecycleError::PidFile {
            path: shown.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(pid_error)?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                let holder = std::fs::read_to_string(path)
                    .ok()
                    .map(|pid| pid.trim().to_owned())
                    .filter(|pid| !pid.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(LifecycleError::AlreadyRunning {
                    path: shown,
                    holder,
                });
            }
            return Err(pid_error(err));
        }
        Ok(PidFile {
            file,
            path: path.to_owned(),
        })
    }

    /// Writes this process's PID (after forking, so it is the daemon's).
    pub fn write_pid(&mut self) -> Result<(), LifecycleError> {
        let shown = self.path.display().to_string();
        let write = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        };
        write(&mut self.file).map_err(|source| LifecycleError::PidFile {
            path: shown,
            source,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends standard error (the log) to `path`, appending. Standard output goes there too.
pub fn redirect_log(path: &Path) -> Result<(), LifecycleError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LifecycleError::LogFile {
            path: path.display().to_string(),
            source,
        })?;
    // SAFETY: dup2 onto the standard descriptors; `file` stays valid for the call.
    unsafe {
        libc::dup2(file.as_raw_fd(), libc::STDOUT_FILENO);
        libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO);
    }
    Ok(())
}

/// Detaches into the background, as libwebsockets' `lws_daemonize` does: fork (the parent exits
/// 0 at once), start a new session without a controlling terminal, and point stdin at
/// /dev/null (stdout and stderr at the log, see [`redirect_log`]). It must run before any
/// thread starts: only the calling thread survives a fork. The working directory is kept, so
/// relative paths (`--static-dir ./static`) mean what they meant when the server was started.
pub fn daemonize() -> Result<(), LifecycleError> {
    // SAFETY: called while the process has one thread; the child continues normally.
    match unsafe { libc::fork() } {
        -1 => return Err(LifecycleError::Daemon(io::Error::last_os_error())),
        0 => {}
        _ => std::process::exit(0),
    }
    // SAFETY: plain system calls on the new child process.
    unsafe {
        if libc::setsid() == -1 {
            return Err(LifecycleError::Daemon(io::Error::last_os_error()));
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, libc::STDIN_FILENO);
            libc::close(null);
        }
    }
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment [`ShutdownSignals::install`] returns.
///
/// Installed before the server says it is listening (and before it writes its pid file), so that
/// a signal sent as soon as it is up starts the graceful shutdown instead of killing the process
/// with the pid file left behind.
pub struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers (needs the runtime).
    pub fn install() -> io::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// SIGHUP, caught from the moment this returns (see `tls::reload_on_hangup` for what it does);
/// installed with the shutdown signals, so it never ends the process.
pub fn hangups() -> io::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_leave_room_for_http() {
        assert_eq!(connections_for_fd_limit(256), 192);
        assert_eq!(sessions_for_connections(192), 176);
        assert_eq!(sessions_for_connections(1_000_000), 950_000);
        assert_eq!(sessions_for_connections(10), 5);
    }
}
