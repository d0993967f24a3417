//! A real `tandem` process for tests that need one (signals, `kill -9`, its log output).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `tandem` process whose standard error is collected line by line.
pub struct Bin {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Bin {
    /// Starts `tandem serve` on 127.0.0.1:0 (unless `args` says otherwise) with a SQLite file
    /// of its own (unless `args` names a database).
    pub fn start(args: &[&str]) -> Bin {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.env_remove("DATABASE_URL")
            .env_remove("NO_COLOR")
            .env_remove("TANDEM_ADMIN_TOKEN")
            .env_remove("TANDEM_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !args.contains(&"--addr") {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        if !args.contains(&"--database-url") {
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            cmd.args(["--database-url", &url]);
        }
        cmd.args(args);
        let mut child = cmd.spawn().expect("start tandem");
        let stderr = child.stderr.take().expect("stderr");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        Bin {
            child,
            lines,
            reader: Some(reader),
            _dir: dir,
        }
    }

    pub fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until a line satisfies `f`; returns what `f` extracted.
    pub async fn wait_line<T>(&self, what: &str, f: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.lines.lock().expect("lines").iter().find_map(|l| f(l)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address from the "listening on ADDR" line.
    pub async fn addr(&self) -> SocketAddr {
        self.wait_line("listening line", |l| {
            let rest = &l[l.find("listening on ")? + "listening on ".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_hexdigit() || ".:[]".contains(c)))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .await
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (SIGKILL after 30 s); returns whether it succeeded.
    pub async fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("tandem did not exit:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: the process dies at once, with no shutdown of any kind.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT (no drain) and wait.
    pub async fn stop(&mut self) -> bool {
        self.signal("INT");
        self.wait_exit().await
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
