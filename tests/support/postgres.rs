//! A throwaway PostgreSQL cluster for the tests and benchmarks that need a real database.
//!
//! The first call to [`cluster`] in a process runs `initdb` in a fresh temporary directory and
//! starts a server that listens on a unix socket inside it and on no TCP address at all, so
//! nothing outside the test can reach it and no port can collide. Each test takes a database
//! of its own ([`Cluster::fresh_database`]). The cluster is stopped, and its directory
//! removed, when the process that started it exits: a small watcher process waits for that.
//!
//! The server binaries come from `HOOKGATE_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package, which `.ci/run` installs).
//! As root (CI) the server runs as the `postgres` user, as PostgreSQL requires.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// One running cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The process's cluster, started on first use with PostgreSQL's durable defaults (fsync on),
/// so the benchmarks measure what production pays.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(Cluster::start)
}

fn server_binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOOKGATE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries: install Debian's postgresql package \
             (apt-get install postgresql) or set HOOKGATE_PG_BIN to a directory with initdb"
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `program args…` as the user the server runs as, and panics with its output on failure.
fn run_as_server_user(program: &Path, args: &[&str]) {
    let mut command = if is_root() {
        let line = std::iter::once(program.to_str().expect("a UTF-8 path"))
            .chain(args.iter().copied())
            .map(|word| format!("'{word}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut su = Command::new("su");
        su.args(["postgres", "-s", "/bin/sh", "-c", &line]);
        su
    } else {
        let mut direct = Command::new(program);
        direct.args(args);
        direct
    };
    let output = command.output().expect("start a PostgreSQL program");
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Cluster {
    fn start() -> Self {
        let bin = server_binaries();
        let dir = tempfile::Builder::new()
            .prefix("hookgate-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        // The server user must be able to create its data directory and socket here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .expect("open the directory to the server user");
        let data = dir.join("data");
        let data_text = data.to_str().expect("a UTF-8 path");
        run_as_server_user(
            &bin.join("initdb"),
            &[
                "-D",
                data_text,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nmax_connections = 200\n\
             log_min_duration_statement = 200\nlog_autovacuum_min_duration = 0\n\
             log_checkpoints = on\nlog_lock_waits = on\n",
            dir.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut file| std::io::Write::write_all(&mut file, conf.as_bytes()))
            .expect("write the cluster's settings");
        let log = dir.join("server.log");
        run_as_server_user(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data_text,
                "-l",
                log.to_str().expect("a UTF-8 path"),
                "-w",
                "start",
            ],
        );
        let cluster = Self { dir, bin };
        cluster.stop_when_this_process_exits();
        cluster
    }

    fn stop_when_this_process_exits(&self) {
        let stop = format!(
            "'{}' -D '{}' stop -m immediate",
            self.bin.join("pg_ctl").display(),
            self.dir.join("data").display()
        );
        let stop = if is_root() {
            format!("su postgres -s /bin/sh -c \"{stop}\"")
        } else {
            stop
        };
        let watcher = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        #[allow(
            clippy::zombie_processes,
            reason = "the watcher outlives this process by design: it stops the cluster after we exit"
        )]
        Command::new("sh")
            .args(["-c", &watcher])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the cluster's watcher");
    }

    /// A connection URL for database `name` on this cluster's socket.
    pub fn url(&self, name: &str) -> String {
        format!("host={} user=postgres dbname={name}", self.dir.display())
    }

    /// Creates an empty database for one test and returns its URL.
    pub async fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = self.connect("postgres").await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        self.url(&name)
    }

    /// A plain connection (outside any pool) to database `name`, for inspecting it.
    pub async fn connect(&self, name: &str) -> tokio_postgres::Client {
        connect(&self.url(name)).await
    }

    /// What the server logged that explains a slow moment: statements over 200 ms,
    /// autovacuum runs, checkpoints and lock waits.
    #[allow(dead_code, reason = "the delivery bench prints it, the tests do not")]
    pub fn slow_moments(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        log.lines()
            .filter(|line| {
                ["duration:", "automatic", "checkpoint", "still waiting"]
                    .iter()
                    .any(|mark| line.contains(mark))
            })
            .map(str::to_owned)
            .collect()
    }

    /// The server's process id (its children are the backends), from `postmaster.pid`.
    #[allow(dead_code, reason = "the pg_queue bench uses it, the tests do not")]
    pub fn postmaster_pid(&self) -> u32 {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .expect("the server's pid file");
        pid_file
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .expect("a pid on the first line")
    }
}

/// A plain connection to `url`, driven on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to {url}: {err}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}
