//! Everything that competes: ferry's modes (in-process, one engine), buffered copy loops,
//! std::io::copy, mmap + write, and the external tools (cp, dd, fio). Each run returns a
//! `Sample`; the caller verifies the destination before the sample counts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry::{Engine, Mode, Options, TreeOptions};

use crate::sys;

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub bytes: u64,
    pub files: u64,
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss_kib: u64,
    pub latency: Option<ferry::Latency>,
    pub backend: String,
    pub mode: String,
}

/// What a contender is asked to do.
pub enum Task<'a> {
    /// Copy one file. `in_place`: overwrite the existing destination without truncating it.
    File { src: &'a Path, dst: &'a Path, in_place: bool, direct: bool },
    /// Copy these files to these destinations, all at once.
    Many { pairs: &'a [(PathBuf, PathBuf)] },
    /// Copy a tree.
    Tree { src: &'a Path, dst: &'a Path },
    /// Send `src` over `streams` loopback TCP connections (each gets `src`'s bytes), to
    /// receivers that hash what arrives.
    Send { src: &'a Path, streams: usize, hash: u128 },
    /// Receive `src`'s bytes, sent by in-process senders over `streams` connections, into files
    /// `dst_dir/recv-N`.
    Recv { src: &'a Path, dst_dir: &'a Path, streams: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Contender {
    Ferry {
        mode: Mode,
        fallback: bool,
    },
    /// ferry cp -r, temp + rename per file (the default) or in place.
    FerryTree {
        in_place: bool,
    },
    StdCopy,
    RwLoop(usize),
    MmapWrite,
    Cp,
    CpR,
    Dd(usize),
    Fio {
        bs: usize,
        qd: usize,
    },
    Memcpy,
    /// The sendfile(2) loop a C server would write.
    SendfileLoop,
    /// iperf3 over loopback, `zero_copy` = -Z (sendfile): the network ceiling.
    Iperf {
        zero_copy: bool,
    },
}

impl Contender {
    pub fn name(&self) -> String {
        match self {
            Contender::Ferry { mode, fallback: false } => format!("ferry {mode}"),
            Contender::Ferry { mode, fallback: true } => format!("ferry {mode} (fallback backend)"),
            Contender::FerryTree { in_place: false } => "ferry cp -r".into(),
            Contender::FerryTree { in_place: true } => "ferry cp -r --in-place".into(),
            Contender::StdCopy => "std::io::copy".into(),
            Contender::RwLoop(b) => format!("read/write {}K", b / 1024),
            Contender::MmapWrite => "mmap + write".into(),
            Contender::Cp => "cp".into(),
            Contender::CpR => "cp -r".into(),
            Contender::Dd(b) => format!("dd bs={}", human(*b)),
            Contender::Fio { bs, qd } => format!("fio io_uring bs={} qd={qd} (limit)", human(*bs)),
            Contender::Memcpy => "memcpy (limit)".into(),
            Contender::SendfileLoop => "sendfile loop".into(),
            Contender::Iperf { zero_copy: true } => "iperf3 -Z (limit)".into(),
            Contender::Iperf { zero_copy: false } => "iperf3 (limit)".into(),
        }
    }

    /// Limit rows move no file and are not verified; they show the physical ceiling.
    pub fn is_limit(&self) -> bool {
        matches!(self, Contender::Fio { .. } | Contender::Memcpy | Contender::Iperf { .. })
    }

    /// External tools present on this machine?
    pub fn available(&self) -> bool {
        let tool = match self {
            Contender::Cp | Contender::CpR => "cp",
            Contender::Dd(_) => "dd",
            Contender::Fio { .. } => "fio",
            Contender::Iperf { .. } => "iperf3",
            _ => return true,
        };
        Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    pub fn run(&self, task: &Task<'_>, engines: &Engines, scratch: &Path) -> Result<Sample> {
        sys::reset_peak_rss();
        let before = sys::self_usage();
        let t0 = Instant::now();
        let mut s = match (self, task) {
            (Contender::Ferry { mode, fallback }, Task::File { src, dst, in_place, direct }) => {
                let e = if *fallback { &engines.syscall } else { &engines.uring };
                let opts = Options { mode: *mode, in_place: *in_place, direct: *direct, ..Options::default() };
                let r = e.copy_wait(*src, *dst, opts)?;
                Sample {
                    bytes: r.bytes,
                    files: 1,
                    latency: Some(r.latency),
                    backend: r.backend.to_string(),
                    mode: r.mode.to_string(),
                    ..Sample::default()
                }
            }
            (Contender::Ferry { mode, fallback }, Task::Many { pairs }) => {
                let e = if *fallback { &engines.syscall } else { &engines.uring };
                let ts: Vec<_> = pairs
                    .iter()
                    .map(|(s, d)| {
                        e.copy(
                            ferry::Source::file(s),
                            ferry::Sink::file(d),
                            Options { mode: *mode, ..Options::default() },
                        )
                    })
                    .collect::<Result<_, _>>()?;
                let mut s = Sample { files: pairs.len() as u64, backend: e.backend().to_string(), ..Sample::default() };
                for t in ts {
                    let r = t.wait()?;
                    s.bytes += r.bytes;
                    s.mode = r.mode.to_string();
                }
                s
            }
            (Contender::FerryTree { in_place }, Task::Tree { src, dst }) => {
                let opts = TreeOptions {
                    file: Options { in_place: *in_place, ..Options::default() },
                    ..TreeOptions::default()
                };
                let r = engines.uring.copy_tree(src, dst, &opts, |_| {})?;
                let modes: Vec<_> = r.modes.keys().map(|m| m.to_string()).collect();
                Sample {
                    bytes: r.totals.bytes,
                    files: r.totals.files,
                    backend: r.backend.to_string(),
                    mode: modes.join("+"),
                    ..Sample::default()
                }
            }
            (Contender::StdCopy, Task::File { src, dst, .. }) => {
                let mut r = File::open(src)?;
                let mut w = File::create(dst)?;
                let n = std::io::copy(&mut r, &mut w)?;
                Sample { bytes: n, files: 1, ..Sample::default() }
            }
            (Contender::RwLoop(bs), Task::File { src, dst, in_place, direct }) => {
                let n = rw_loop(src, dst, *bs, *in_place, *direct)?;
                Sample { bytes: n, files: 1, ..Sample::default() }
            }
            (Contender::RwLoop(bs), Task::Many { pairs }) => {
                let bytes = std::thread::scope(|sc| {
                    let hs: Vec<_> =
                        pairs.iter().map(|(s, d)| sc.spawn(move || rw_loop(s, d, *bs, false, false))).collect();
                    hs.into_iter().map(|h| h.join().expect("copy thread")).sum::<std::io::Result<u64>>()
                })?;
                Sample { bytes, files: pairs.len() as u64, ..Sample::default() }
            }
            (Contender::MmapWrite, Task::File { src, dst, .. }) => {
                let f = File::open(src)?;
                let mut w = File::create(dst)?;
                let len = f.metadata()?.len();
                if len > 0 {
                    // SAFETY: the benchmark owns the source file and nothing truncates it while mapped.
                    let m = unsafe { memmap2::Mmap::map(&f)? };
                    w.write_all(&m)?;
                }
                Sample { bytes: len, files: 1, ..Sample::default() }
            }
            (Contender::Cp, Task::File { src, dst, .. }) => {
                external(Command::new("cp").arg(src).arg(dst), file_len(src)?, 1)?
            }
            (Contender::Cp, Task::Many { pairs }) => {
                let children: Vec<_> = pairs
                    .iter()
                    .map(|(s, d)| Command::new("cp").arg(s).arg(d).stdout(Stdio::null()).spawn())
                    .collect::<Result<_, _>>()?;
                let mut s = Sample { files: pairs.len() as u64, ..Sample::default() };
                for (c, (src, _)) in children.into_iter().zip(pairs.iter()) {
                    let (ok, u) = sys::wait_child(c)?;
                    if !ok {
                        bail!("cp failed");
                    }
                    s.cpu += u.cpu;
                    s.peak_rss_kib = s.peak_rss_kib.max(u.max_rss_kib);
                    s.bytes += file_len(src)?;
                }
                s
            }
            (Contender::CpR, Task::Tree { src, dst }) => {
                let mut s = external(Command::new("cp").arg("-r").arg(src).arg(dst), 0, 0)?;
                s.files = count_files(dst);
                s
            }
            (Contender::Dd(bs), Task::File { src, dst, in_place, direct }) => {
                let mut c = Command::new("dd");
                c.arg(format!("if={}", src.display())).arg(format!("of={}", dst.display())).arg(format!("bs={bs}"));
                if *in_place {
                    c.arg("conv=notrunc");
                }
                if *direct {
                    c.args(["iflag=direct", "oflag=direct"]);
                }
                external(&mut c, file_len(src)?, 1)?
            }
            (Contender::Fio { bs, qd }, Task::File { src, direct, .. }) => fio(src, scratch, *bs, *qd, *direct)?,
            (Contender::Memcpy, Task::File { src, .. }) => memcpy_limit(file_len(src)?),
            (c, Task::Send { src, streams, hash }) => net_send(c, engines, src, *streams, *hash)?,
            (c, Task::Recv { src, dst_dir, streams }) => net_recv(c, engines, src, dst_dir, *streams)?,
            (c, _) => bail!("{} does not run this workload", c.name()),
        };
        if s.wall.is_zero() {
            s.wall = t0.elapsed();
        }
        if s.cpu.is_zero() {
            let after = sys::self_usage();
            s.cpu = after.cpu.saturating_sub(before.cpu);
            s.peak_rss_kib = sys::peak_rss_kib();
        }
        Ok(s)
    }
}

pub struct Engines {
    pub uring: Engine,
    pub syscall: Engine,
}

fn human(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{}M", b >> 20)
    } else {
        format!("{}K", b >> 10)
    }
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p).with_context(|| p.display().to_string())?.len())
}

fn count_files(p: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// The classic loop: read `bs` bytes, write them, repeat. With `direct`, an aligned buffer.
fn rw_loop(src: &Path, dst: &Path, bs: usize, in_place: bool, direct: bool) -> std::io::Result<u64> {
    let flags = if direct { libc::O_DIRECT } else { 0 };
    let r = OpenOptions::new().read(true).custom_flags(flags).open(src)?;
    let w = OpenOptions::new().write(true).create(true).truncate(!in_place).custom_flags(flags).open(dst)?;
    // Over-allocate and align by hand so O_DIRECT accepts the buffer.
    let mut raw = vec![0u8; bs + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[off..off + bs];
    let len = r.metadata()?.len();
    let mut pos = 0u64;
    loop {
        let n = r.read_at(buf, pos)?;
        if n == 0 {
            break;
        }
        let wn = if direct { n.next_multiple_of(4096) } else { n };
        w.write_all_at(&buf[..wn], pos)?;
        pos += n as u64;
    }
    if direct || in_place {
        w.set_len(len)?;
    }
    Ok(pos)
}

fn external(cmd: &mut Command, bytes: u64, files: u64) -> Result<Sample> {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("spawn")?;
    let (ok, u) = sys::wait_child(child)?;
    if !ok {
        bail!("{cmd:?} failed");
    }
    Ok(Sample { bytes, files, cpu: u.cpu, peak_rss_kib: u.max_rss_kib, ..Sample::default() })
}

/// fio reading the source and writing a scratch file of the same size at once, io_uring, same
/// block size and depth as ferry: the I/O ceiling a copy could reach. Not a copy: not verified.
fn fio(src: &Path, scratch: &Path, bs: usize, qd: usize, direct: bool) -> Result<Sample> {
    let len = file_len(src)?;
    let out = scratch.join("fio-out");
    let job = format!(
        "[global]\nioengine=io_uring\ndirect={}\nbs={bs}\niodepth={qd}\nsize={len}\ngroup_reporting=1\n\
         [read]\nrw=read\nfilename={}\n[write]\nrw=write\nfilename={}\n",
        u8::from(direct),
        src.display(),
        out.display()
    );
    let jobfile = scratch.join("copy.fio");
    std::fs::write(&jobfile, job)?;
    let child = Command::new("fio")
        .arg("--output-format=json")
        .arg(&jobfile)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = String::new();
    let mut child = child;
    child.stdout.take().expect("piped").read_to_string(&mut stdout)?;
    let (ok, u) = sys::wait_child(child)?;
    let _ = std::fs::remove_file(&out);
    if !ok {
        bail!("fio failed");
    }
    let v: serde_json::Value = serde_json::from_str(&stdout).context("fio JSON")?;
    let job = &v["jobs"][0];
    let p99 = job["read"]["clat_ns"]["percentile"]["99.000000"].as_u64().unwrap_or(0);
    let lat = ferry::Latency {
        count: job["read"]["total_ios"].as_u64().unwrap_or(0),
        p50_ns: job["read"]["clat_ns"]["percentile"]["50.000000"].as_u64().unwrap_or(0),
        p99_ns: p99,
        p999_ns: job["read"]["clat_ns"]["percentile"]["99.900000"].as_u64().unwrap_or(0),
        max_ns: job["read"]["clat_ns"]["max"].as_u64().unwrap_or(0),
    };
    Ok(Sample {
        bytes: len,
        files: 1,
        cpu: u.cpu,
        peak_rss_kib: u.max_rss_kib,
        latency: Some(lat),
        backend: "fio".into(),
        ..Sample::default()
    })
}

/// Single-threaded memcpy of `len` bytes through a 64 MiB buffer pair: the memory-bandwidth
/// ceiling of a page-cache copy on this machine.
fn memcpy_limit(len: u64) -> Sample {
    let chunk = 64 << 20;
    let a = vec![1u8; chunk];
    let mut b = vec![0u8; chunk];
    // Fault both buffers in before the clock starts: the row measures copying, not page faults.
    b.copy_from_slice(&a);
    let t0 = Instant::now();
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        b[..n].copy_from_slice(&a[..n]);
        std::hint::black_box(&mut b);
        left -= n as u64;
    }
    Sample { bytes: len, files: 1, wall: t0.elapsed(), ..Sample::default() }
}

/// Writes a deterministic, incompressible file quickly.
pub fn make_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut f = File::create(path)?;
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// xxh3-128 of a file's bytes.
pub fn hash_file(path: &Path) -> Result<u128> {
    let mut f = File::open(path).with_context(|| format!("verify {}", path.display()))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.digest128())
}

/// Loopback connections: (client side, server side).
fn tcp_pairs(n: usize) -> Result<Vec<(std::net::TcpStream, std::net::TcpStream)>> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    (0..n)
        .map(|_| {
            let c = std::net::TcpStream::connect(addr)?;
            let (s, _) = l.accept()?;
            Ok((c, s))
        })
        .collect()
}

fn hash_stream(mut s: std::net::TcpStream) -> std::io::Result<(u128, u64)> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Ok((h.digest128(), n));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// File -> socket: `streams` connections, each carrying the whole file, verified by the
/// receiving threads' hashes.
fn net_send(c: &Contender, engines: &Engines, src: &Path, streams: usize, want: u128) -> Result<Sample> {
    if let Contender::Iperf { zero_copy } = c {
        return iperf(src, streams, *zero_copy);
    }
    let pairs = tcp_pairs(streams)?;
    let len = file_len(src)?;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (client, server) in pairs {
        receivers.push(std::thread::spawn(move || hash_stream(server)));
        senders.push(client);
    }
    let mut s = Sample { files: streams as u64, bytes: len * streams as u64, ..Sample::default() };
    match c {
        Contender::Ferry { mode, fallback } => {
            let jobs = senders.into_iter().map(|sock| (ferry::Source::file(src), ferry::Sink::socket(sock)));
            ferry_all(engines, *mode, *fallback, jobs, &mut s)?;
        }
        Contender::RwLoop(bs) => {
            std::thread::scope(|sc| -> Result<()> {
                let hs: Vec<_> = senders
                    .into_iter()
                    .map(|mut sock| {
                        sc.spawn(move || -> std::io::Result<()> {
                            let mut f = File::open(src)?;
                            let mut buf = vec![0u8; *bs];
                            loop {
                                let n = f.read(&mut buf)?;
                                if n == 0 {
                                    return Ok(());
                                }
                                sock.write_all(&buf[..n])?;
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().expect("sender thread")?;
                }
                Ok(())
            })?;
        }
        Contender::SendfileLoop => {
            std::thread::scope(|sc| -> Result<()> {
                let hs: Vec<_> =
                    senders.into_iter().map(|sock| sc.spawn(move || sys::sendfile_all(&sock, src, len))).collect();
                for h in hs {
                    h.join().expect("sender thread")?;
                }
                Ok(())
            })?;
        }
        c => bail!("{} does not send to sockets", c.name()),
    }
    for r in receivers {
        let (h, n) = r.join().expect("receiver thread")?;
        if h != want || n != len {
            bail!("VERIFY FAILED: {} delivered {n} bytes that differ from the source", c.name());
        }
    }
    Ok(s)
}

/// Starts every transfer at once on one engine, waits for all, and notes mode, backend and
/// latency in `s`.
fn ferry_all(
    engines: &Engines,
    mode: Mode,
    fallback: bool,
    jobs: impl Iterator<Item = (ferry::Source, ferry::Sink)>,
    s: &mut Sample,
) -> Result<()> {
    let e = if fallback { &engines.syscall } else { &engines.uring };
    let ts: Vec<_> =
        jobs.map(|(src, dst)| e.copy(src, dst, Options { mode, ..Options::default() })).collect::<Result<_, _>>()?;
    for t in ts {
        let r = t.wait()?;
        s.mode = r.mode.to_string();
        s.backend = r.backend.to_string();
        s.latency = Some(r.latency);
    }
    Ok(())
}

/// Socket -> file: in-process senders stream the (cached) source over `streams` connections
/// with sendfile; the caller verifies every received file.
fn net_recv(c: &Contender, engines: &Engines, src: &Path, dst_dir: &Path, streams: usize) -> Result<Sample> {
    let pairs = tcp_pairs(streams)?;
    let len = file_len(src)?;
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (client, server) in pairs {
        let src = src.to_path_buf();
        senders.push(std::thread::spawn(move || sys::sendfile_all(&client, &src, len)));
        receivers.push(server);
    }
    let dsts: Vec<PathBuf> = (0..streams).map(|i| dst_dir.join(format!("recv-{i}"))).collect();
    let mut s = Sample { files: streams as u64, bytes: len * streams as u64, ..Sample::default() };
    match c {
        Contender::Ferry { mode, fallback } => {
            let jobs =
                receivers.into_iter().zip(&dsts).map(|(sock, d)| (ferry::Source::socket(sock), ferry::Sink::file(d)));
            ferry_all(engines, *mode, *fallback, jobs, &mut s)?;
        }
        Contender::RwLoop(bs) => {
            std::thread::scope(|sc| -> Result<()> {
                let hs: Vec<_> = receivers
                    .into_iter()
                    .zip(&dsts)
                    .map(|(mut sock, d)| {
                        sc.spawn(move || -> std::io::Result<()> {
                            let mut f = File::create(d)?;
                            let mut buf = vec![0u8; *bs];
                            loop {
                                let n = sock.read(&mut buf)?;
                                if n == 0 {
                                    return Ok(());
                                }
                                f.write_all(&buf[..n])?;
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().expect("receiver thread")?;
                }
                Ok(())
            })?;
        }
        c => bail!("{} does not receive from sockets", c.name()),
    }
    for h in senders {
        h.join().expect("sender thread")?;
    }
    Ok(s)
}

/// iperf3 client and one-off server on loopback; `-Z -F` sends the file with sendfile. A limit
/// row: iperf3 discards what it receives, so nothing is verified.
fn iperf(src: &Path, streams: usize, zero_copy: bool) -> Result<Sample> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let total = file_len(src)? * streams as u64;
    let mut args: Vec<String> = vec![
        "-c".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-n".into(),
        total.to_string(),
        "-P".into(),
        streams.to_string(),
        "-J".into(),
    ];
    if zero_copy {
        args.extend(["-Z".into(), "-F".into(), src.display().to_string()]);
    }
    let mut out = None;
    for _ in 0..50 {
        let o = Command::new("iperf3").args(&args).stderr(Stdio::null()).output()?;
        if o.status.success() {
            out = Some(o);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    let out = out.context("iperf3 client never connected")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let secs = v["end"]["sum_sent"]["seconds"].as_f64().unwrap_or(0.0);
    let bytes = v["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    if secs <= 0.0 || bytes == 0 {
        bail!("iperf3 reported nothing");
    }
    let cpu = v["end"]["cpu_utilization_percent"]["host_total"].as_f64().unwrap_or(0.0) / 100.0 * secs;
    Ok(Sample {
        bytes,
        files: streams as u64,
        wall: Duration::from_secs_f64(secs),
        cpu: Duration::from_secs_f64(cpu),
        backend: "iperf3".into(),
        ..Sample::default()
    })
}
