//! `fluxadmit bench memory` and `fluxadmit bench startup`.

use super::generate;
use super::load::{TempDir, Tls};
use anyhow::{Context as _, anyhow, bail};
use axum::body::Bytes;
use fluxadmit_core::state::Snapshot;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_rustls::TlsConnector;

/// VmRSS and VmHWM of a process (`None`: this one), in KiB.
pub fn rss_kib(pid: Option<u32>) -> anyhow::Result<(u64, u64)> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("{path}: no {name}"))?;
        let n = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim();
        n.parse()
            .with_context(|| format!("{path}: bad {name} {n:?}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// What `bench memory` measured.
#[derive(Debug, Clone)]
pub struct MemoryReport {
    pub objects: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub hwm_after_kib: u64,
    pub build: Duration,
}

impl MemoryReport {
    pub fn bytes_per_object(&self) -> f64 {
        (self.rss_after_kib.saturating_sub(self.rss_before_kib) * 1024) as f64
            / self.objects.max(1) as f64
    }

    pub fn markdown(&self) -> String {
        let mib = |k: u64| k as f64 / 1024.0;
        format!(
            "| objects in view | RSS before MiB | RSS after MiB | Δ MiB | bytes/object | peak (VmHWM) MiB | build time |\n\
             |--:|--:|--:|--:|--:|--:|--:|\n\
             | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.0} ms |\n",
            self.objects,
            mib(self.rss_before_kib),
            mib(self.rss_after_kib),
            mib(self.rss_after_kib.saturating_sub(self.rss_before_kib)),
            self.bytes_per_object(),
            mib(self.hwm_after_kib),
            self.build.as_secs_f64() * 1e3,
        )
    }
}

/// RSS of this process before and after building the policy set and a view of `objects`.
pub fn memory(objects: usize) -> anyhow::Result<MemoryReport> {
    let size = generate::ViewSize::of(objects);
    let (before, _) = rss_kib(None)?;
    let t = Instant::now();
    let snap = Snapshot {
        policies: generate::policies()?,
        view: generate::view(&size),
    };
    let build = t.elapsed();
    let (after, hwm) = rss_kib(None)?;
    let n = std::hint::black_box(&snap).view.len();
    Ok(MemoryReport {
        objects: n,
        rss_before_kib: before,
        rss_after_kib: after,
        hwm_after_kib: hwm,
        build,
    })
}

/// One `serve` start.
#[derive(Debug, Clone)]
pub struct StartupRun {
    /// From spawning the process to the first 200 on /readyz.
    pub ready: Duration,
    /// `startup_ms` as the server logged it (load + bind, measured in-process).
    pub logged_ms: Option<u64>,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// The generated `--state` directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub objects: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Writes the view of `objects` as multi-document YAML files of 1,000 objects each.
pub fn write_state(dir: &Path, objects: usize) -> anyhow::Result<StateDir> {
    std::fs::create_dir_all(dir)?;
    let size = generate::ViewSize::of(objects);
    let mut files = 0;
    let mut bytes = 0u64;
    let mut count: usize = 0;
    let mut buf = String::new();
    let mut err: Option<anyhow::Error> = None;
    let mut flush = |buf: &mut String, files: &mut usize| -> anyhow::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let path = dir.join(format!("part-{:04}.yaml", *files));
        std::fs::write(&path, buf.as_bytes()).with_context(|| format!("{}", path.display()))?;
        bytes += buf.len() as u64;
        *files += 1;
        buf.clear();
        Ok(())
    };
    generate::for_each_manifest(&size, |m| {
        if err.is_some() {
            return;
        }
        match serde_saphyr::to_string(&m) {
            Ok(s) => {
                buf.push_str("---\n");
                buf.push_str(&s);
            }
            Err(e) => err = Some(e.into()),
        }
        count += 1;
        if count.is_multiple_of(1_000)
            && let Err(e) = flush(&mut buf, &mut files)
        {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    flush(&mut buf, &mut files)?;
    Ok(StateDir {
        objects: count,
        files,
        bytes,
    })
}

/// `N` distinct free loopback ports: every listener is held until all are picked.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// Polls `/readyz` of a starting `serve` until it answers 200: the time since `start`. Fails
/// when the process exits first or `timeout` has passed since `start`.
pub async fn until_ready(
    child: &mut std::process::Child,
    addr: SocketAddr,
    connector: &TlsConnector,
    start: Instant,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if start.elapsed() > timeout {
            bail!("not ready within {timeout:?}");
        }
        if let Some(status) = child.try_wait()? {
            bail!("serve exited early: {status}");
        }
        if let Ok(Ok(200)) =
            tokio::time::timeout(Duration::from_secs(1), readyz(addr, connector)).await
        {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One GET /readyz on a new connection: the status code.
async fn readyz(addr: SocketAddr, connector: &TlsConnector) -> anyhow::Result<u16> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?.to_owned();
    let tls = connector.connect(name, tcp).await?;
    let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/readyz")
        .header(hyper::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    task.abort();
    Ok(status)
}

/// `startup_ms` from the server's "serving" log line (text or JSON, with or without ANSI).
fn logged_startup_ms(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("startup_ms"))?;
    // Drop ANSI escapes (ESC [ ... letter): their digits are not the value.
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let rest = plain.split("startup_ms").nth(1)?;
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    if start > 16 {
        return None;
    }
    rest.get(start..)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// The state, policies and certificates a `serve` start reads, in a temporary directory.
pub struct StartupFixture {
    pub tmp: TempDir,
    pub tls: Tls,
    pub state: StateDir,
    pub write: Duration,
}

impl StartupFixture {
    pub fn new(objects: usize) -> anyhow::Result<StartupFixture> {
        let tmp = TempDir::new("startup")?;
        let tls = Tls::generate(&tmp.path().join("certs"))?;
        for (file, text) in generate::policy_files() {
            let p = tmp.path().join("policies").join(file);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, text)?;
        }
        let t = Instant::now();
        let state = write_state(&tmp.path().join("state"), objects)?;
        Ok(StartupFixture {
            tmp,
            tls,
            state,
            write: t.elapsed(),
        })
    }

    /// Starts `exe serve` once, waits for /readyz, reads its RSS, and kills it.
    pub fn run_once(&self, exe: &Path, timeout: Duration) -> anyhow::Result<StartupRun> {
        let dir = self.tmp.path();
        let [port, metrics_port] = free_ports::<2>()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = dir.join(format!("serve-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let policies = format!(
            "{},{}",
            dir.join("policies").display(),
            dir.join("policies/examples").display()
        );
        let connector = self.tls.connector(b"http/1.1")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let start = Instant::now();
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--tls-cert")
            .arg(dir.join("certs/tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("certs/tls.key"))
            .arg("--policies")
            .arg(&policies)
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--log-level")
            .arg("info")
            .arg("--drain")
            .arg("0s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let outcome = rt.block_on(until_ready(&mut child, addr, &connector, start, timeout));
        let mem = rss_kib(Some(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
        let ready = outcome.map_err(|e| {
            let tail: String = logged.lines().rev().take(5).collect::<Vec<_>>().join("\n");
            anyhow!("{e}; server log tail:\n{tail}")
        })?;
        let (rss_kib, hwm_kib) = mem?;
        let logged_ms = logged_startup_ms(&logged);
        Ok(StartupRun {
            ready,
            logged_ms,
            rss_kib,
            hwm_kib,
        })
    }
}

/// The `fluxadmit` binary to start: `FLUXADMIT_BIN` if set, else the one cargo built beside
/// this benchmark binary (same target directory and profile).
pub fn fluxadmit_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("FLUXADMIT_BIN") {
        return Ok(p.into());
    }
    let me = std::env::current_exe().context("locating this benchmark's binary")?;
    let mut exe = me.with_file_name("fluxadmit");
    // A test binary runs from target/<profile>/deps; the binary is one level up.
    if !exe.is_file()
        && let Some(up) = me.parent().and_then(Path::parent)
    {
        exe = up.join("fluxadmit");
    }
    anyhow::ensure!(
        exe.is_file(),
        "{} not found: build it (`cargo build --release`) or set FLUXADMIT_BIN",
        exe.display()
    );
    Ok(exe)
}

/// Runs `serve` `runs` times against the same generated state.
pub fn startup(
    objects: usize,
    runs: usize,
    timeout: Duration,
) -> anyhow::Result<(StartupFixture, Vec<StartupRun>)> {
    let exe = fluxadmit_binary()?;
    eprintln!("writing a {objects}-object state directory");
    let fx = StartupFixture::new(objects)?;
    eprintln!(
        "  {} objects in {} files, {:.1} MiB, written in {:?}",
        fx.state.objects,
        fx.state.files,
        fx.state.bytes as f64 / 1048576.0,
        fx.write
    );
    let mut out = Vec::new();
    for i in 0..runs.max(1) {
        let r = fx.run_once(&exe, timeout)?;
        eprintln!(
            "  run {}: ready after {:?} (server logged {:?} ms), RSS {:.1} MiB",
            i + 1,
            r.ready,
            r.logged_ms,
            r.rss_kib as f64 / 1024.0
        );
        out.push(r);
    }
    Ok((fx, out))
}

/// The startup table.
pub fn startup_markdown(fx: &StartupFixture, runs: &[StartupRun]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "State: {} objects in {} YAML files ({:.1} MiB); policies: defaults + examples.\n\n\
         | run | spawn → /readyz 200 ms | server-logged startup_ms | RSS at ready MiB | peak RSS MiB |\n\
         |--:|--:|--:|--:|--:|\n",
        fx.state.objects,
        fx.state.files,
        fx.state.bytes as f64 / 1048576.0
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.1} | {:.1} |",
            i + 1,
            r.ready.as_secs_f64() * 1e3,
            r.logged_ms.map_or("–".into(), |m| m.to_string()),
            r.rss_kib as f64 / 1024.0,
            r.hwm_kib as f64 / 1024.0
        );
    }
    let mut ready: Vec<f64> = runs.iter().map(|r| r.ready.as_secs_f64() * 1e3).collect();
    ready.sort_by(f64::total_cmp);
    if let Some(m) = ready.get(ready.len() / 2) {
        let _ = writeln!(out, "\nMedian spawn → ready: {m:.0} ms.");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_ms_is_found_in_text_json_and_ansi_logs() {
        assert_eq!(
            logged_startup_ms("INFO serving addr=x startup_ms=412\n"),
            Some(412)
        );
        assert_eq!(
            logged_startup_ms(r#"{"startup_ms":37,"message":"serving"}"#),
            Some(37)
        );
        let ansi = "\u{1b}[3mstartup_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m508";
        assert_eq!(logged_startup_ms(ansi), Some(508));
        assert_eq!(logged_startup_ms("no such line"), None);
    }

    #[test]
    fn rss_is_read() {
        let (rss, hwm) = rss_kib(None).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }

    #[test]
    fn state_dir_round_trips_through_load_dir() {
        let tmp = TempDir::new("state-test").unwrap();
        let st = write_state(tmp.path(), 1_300).unwrap();
        assert_eq!(st.files, 2);
        let view = fluxadmit_core::cluster::load_dir(&[tmp.path().to_path_buf()]).unwrap();
        assert_eq!(view.len(), st.objects);
        assert_eq!(
            view.len(),
            generate::view(&generate::ViewSize::of(1_300)).len(),
            "same view as built in memory"
        );
    }
}
