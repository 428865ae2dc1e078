//! A running `netmon run`: started, waited for, stopped the way an admin
//! stops it (SIGTERM), with everything it logged.
use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc},
    thread,
    time::{Duration, Instant},
};

/// How long netmon may take to attach before a run gives up. Generous: it
/// is a hang detector, not a speed assertion (under TCG in the kernel
/// matrix, loading the programs takes seconds).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `netmon run`; killed if the caller fails before stopping it.
pub struct Netmon {
    child: Child,
    /// stderr: the log.
    log: Lines,
    /// stdout: what `--follow` prints.
    out: Lines,
    ready: mpsc::Receiver<()>,
}

/// Lines a child wrote, collected by a thread as they come.
type Lines = Arc<Mutex<Vec<String>>>;

/// Collects `stream`'s lines into the returned [`Lines`], calling
/// `on_line` on each first.
fn collect(
    stream: impl std::io::Read + Send + 'static,
    on_line: impl Fn(&str) + Send + 'static,
) -> Lines {
    let lines = Lines::default();
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            on_line(&line);
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Netmon {
    /// `binary run --output OUTPUT --mode MODE EXTRA...`, for callers that
    /// change the child's environment before [`Netmon::spawn`].
    pub fn command(
        binary: impl AsRef<OsStr>,
        output: &Path,
        mode: &str,
        extra: &[&str],
    ) -> Command {
        let mut command = Command::new(binary);
        command
            .args(["run", "--output"])
            .arg(output)
            .args(["--mode", mode])
            .args(extra);
        command
    }

    pub fn start(binary: impl AsRef<OsStr>, output: &Path, mode: &str, extra: &[&str]) -> Self {
        Self::spawn(Self::command(binary, output, mode, extra))
    }

    /// Starts `command`, collecting its stderr and stdout line by line.
    pub fn spawn(command: Command) -> Self {
        Self::spawn_with_stdout(command, Stdio::piped())
    }

    /// Starts `command` with `stdout` as its stdout, collected only if it
    /// is a pipe made here ([`Stdio::piped`]); stderr is collected always.
    pub fn spawn_with_stdout(mut command: Command, stdout: Stdio) -> Self {
        let mut child = command
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netmon");
        let (tx, ready) = mpsc::channel();
        let log = collect(child.stderr.take().unwrap(), move |line| {
            if line.contains("ready:") {
                let _ = tx.send(());
            }
        });
        let out = child
            .stdout
            .take()
            .map_or_else(Lines::default, |stdout| collect(stdout, |_| {}));
        Self {
            child,
            log,
            out,
            ready,
        }
    }

    /// Starts netmon and waits until it has attached and scanned.
    pub fn ready(binary: impl AsRef<OsStr>, output: &Path, mode: &str) -> Self {
        let netmon = Self::start(binary, output, mode, &[]);
        if let Err(err) = netmon.wait_ready() {
            panic!("netmon --mode {mode} {err}");
        }
        netmon
    }

    /// Waits for the `ready:` line; the error carries the log so far.
    pub fn wait_ready(&self) -> Result<(), String> {
        self.ready
            .recv_timeout(READY_TIMEOUT)
            .map_err(|_| format!("did not get ready:\n{}", self.log()))
    }

    /// The child's pid, for signals and /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Every line written to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status and everything it logged.
    pub fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        // Let the reader thread see EOF.
        thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }

    /// Waits for a netmon that is expected to exit on its own.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }
}

impl Drop for Netmon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mode netmon says it runs in (its `mode: ...` line), if it got that
/// far.
pub fn chosen_mode(log: &str) -> Option<&str> {
    log.lines()
        .find_map(|line| line.split_once("] mode: ").map(|(_, mode)| mode.trim()))
}

/// netmon's reasons for every rung it skipped, one `skipped MODE: why`
/// per rung, joined for a result line's note.
pub fn skip_reasons(log: &str) -> String {
    log.lines()
        .filter_map(|line| {
            line.split_once("] skipped ")
                .map(|(_, why)| format!("skipped {why}"))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// `GET /metrics` from `netmon run --metrics ADDR`, with an Accept header
/// if given: (head, body). Panics unless the answer is 200 OK.
pub fn scrape(addr: &str, accept: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    (head.to_owned(), body.to_owned())
}

/// A hang detector for [`eventually`], not a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `condition` until it gives a value, and returns that; after
/// [`PATIENCE`], panics with `what` it waited for and `context()` (a log,
/// a scrape).
pub fn eventually<T>(
    what: &str,
    mut condition: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "gave up waiting for {what}:\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Taken by a test that runs a workload under netmon, for as long as it
/// holds the guard. `cargo xtask test` runs tests one at a time; plain
/// `cargo test` runs a file's tests in parallel, where a busy machine lets
/// a workload close its listener before proc mode has seen it, and the
/// accepted connections pass for outbound ones.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    // A test that failed holding it leaves nothing to undo.
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}
