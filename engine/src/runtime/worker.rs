//! One worker's loop: take requests from the mailbox, drive every job's state machine, submit,
//! sleep in the ring (or on the channel without io_uring) until a completion, a message or the
//! nearest timer, and dispatch completions back to their jobs.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::{Msg, Ready};
use crate::backend::{Backend, Done, Io};
use crate::buffers::BufPool;
use crate::error::{Error, ErrorKind};
use crate::metrics::WorkerMetrics;
use crate::ring::Ring;
use crate::sys::{self, PipePool};
use crate::transfer::job::{CopyJob, Op, Tag};

pub(crate) struct Config {
    pub id: usize,
    pub cpu: Option<usize>,
    pub backend: Backend,
    pub ring_entries: u32,
    pub buffers: usize,
    pub chunk: usize,
    pub rx: Receiver<Msg>,
    pub efd: Option<Arc<OwnedFd>>,
    pub metrics: Arc<WorkerMetrics>,
    pub active: Arc<AtomicUsize>,
    pub asleep: Arc<AtomicBool>,
    pub ready: Sender<Result<Ready, Error>>,
}

const WAKE: u32 = u32::MAX;

struct Worker {
    cfg: Config,
    io: Io<Tag>,
    jobs: Vec<Option<CopyJob>>,
    free: Vec<u32>,
    by_id: HashMap<u64, u32>,
    wake_armed: bool,
    shutting_down: bool,
    done: Vec<Done<Tag>>,
}

pub(crate) fn run(cfg: Config) {
    if let Some(cpu) = cfg.cpu {
        // Pinning is an optimisation; a cpuset that forbids it is not an error.
        let _ = sys::pin_to_cpu(cpu);
    }
    let io = match setup(&cfg) {
        Ok(io) => io,
        Err(e) => {
            let _ = cfg.ready.send(Err(e));
            return;
        }
    };
    let mut w = Worker {
        cfg,
        io,
        jobs: Vec::new(),
        free: Vec::new(),
        by_id: HashMap::new(),
        wake_armed: false,
        shutting_down: false,
        done: Vec::new(),
    };
    w.main_loop();
}

fn setup(cfg: &Config) -> Result<Io<Tag>, Error> {
    let pool = BufPool::new(cfg.buffers, cfg.chunk).map_err(|e| Error::io("allocate buffer slab", None, e))?;
    let pipes = PipePool::new(cfg.chunk.min(sys::pipe_max_size().unwrap_or(1 << 20)), 64);
    let io = match cfg.backend {
        Backend::Uring => {
            let ring = Ring::new(cfg.ring_entries, pool)
                .map_err(|e| Error::io("io_uring_setup", None, e).with_context("io_uring"))?;
            let ready = Ready { registered: ring.registered().clone(), setup: ring.setup.accepted.clone() };
            let _ = cfg.ready.send(Ok(ready));
            Io::new(Some(ring), None, pipes)
        }
        Backend::Syscall => {
            let _ = cfg.ready.send(Ok(Ready { registered: Err("syscall backend".into()), setup: Vec::new() }));
            Io::new(None, Some(pool), pipes)
        }
    };
    Ok(io)
}

impl Worker {
    fn main_loop(&mut self) {
        loop {
            self.arm_wake();
            let mut got_message = self.drain_mailbox();
            let now = Instant::now();
            self.drive_all(now);
            if self.shutting_down && self.jobs_empty() {
                break;
            }
            // Sleep only when nothing is runnable right now.
            let block = !got_message && !self.io.has_ready();
            let timeout = self.next_timer().map(|t| t.saturating_duration_since(now));
            if self.io.has_ring() {
                // Announce the sleep, then look at the mailbox once more (see Mailbox::send).
                let block = block && {
                    self.cfg.asleep.store(true, Ordering::SeqCst);
                    std::sync::atomic::fence(Ordering::SeqCst);
                    self.cfg.rx.is_empty()
                };
                let r = self.io.submit(block, timeout);
                self.cfg.asleep.store(false, Ordering::SeqCst);
                if let Err(e) = r {
                    self.fail_all(Error::io("io_uring_enter", None, e));
                }
            } else if block {
                let msg = match timeout {
                    Some(t) => match self.cfg.rx.recv_timeout(t) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => Some(Msg::Shutdown),
                    },
                    None => Some(self.cfg.rx.recv().unwrap_or(Msg::Shutdown)),
                };
                if let Some(m) = msg {
                    self.handle(m);
                    got_message = true;
                }
            }
            let _ = got_message;
            self.dispatch();
            if let Some(r) = self.io.ring() {
                let ov = u64::from(r.overflow());
                self.cfg.metrics.cq_overflow.store(ov, Ordering::Relaxed);
                self.cfg.metrics.ring_submitted.store(r.submitted, Ordering::Relaxed);
            }
        }
    }

    fn jobs_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn arm_wake(&mut self) {
        if self.wake_armed || self.shutting_down {
            return;
        }
        let (Some(efd), Some(ring)) = (self.cfg.efd.clone(), self.io.ring()) else {
            return;
        };
        if ring.read_word(Tag { job: WAKE, op: Op::Wake }, &efd).is_ok() {
            self.wake_armed = true;
        }
    }

    fn drain_mailbox(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.cfg.rx.try_recv() {
                Ok(m) => {
                    any = true;
                    self.handle(m);
                }
                Err(TryRecvError::Empty) => return any,
                Err(TryRecvError::Disconnected) => {
                    self.handle(Msg::Shutdown);
                    return any;
                }
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Copy(req) => {
                self.cfg.metrics.transfers_started.fetch_add(1, Ordering::Relaxed);
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.jobs.push(None);
                    (self.jobs.len() - 1) as u32
                });
                let id = req.shared.id;
                let mut job = CopyJob::new(*req, slot, self.cfg.id);
                if self.shutting_down || job.req.shared.cancelled.load(Ordering::SeqCst) {
                    job.abort(cancelled("copy"));
                }
                self.by_id.insert(id, slot);
                self.jobs[slot as usize] = Some(job);
                self.cfg.metrics.active.store(self.by_id.len() as u64, Ordering::Relaxed);
            }
            Msg::Cancel(id) => {
                if let Some(&slot) = self.by_id.get(&id) {
                    if let Some(j) = self.jobs[slot as usize].as_mut() {
                        j.abort(cancelled("copy"));
                    }
                }
            }
            Msg::Shutdown => {
                self.shutting_down = true;
                for j in self.jobs.iter_mut().flatten() {
                    j.abort(Error::new(ErrorKind::Cancelled, "copy").with_detail("engine shut down"));
                }
            }
        }
    }

    fn drive_all(&mut self, now: Instant) {
        for i in 0..self.jobs.len() {
            let Some(job) = self.jobs[i].as_mut() else {
                continue;
            };
            job.check_timers(now);
            job.drive(&mut self.io, now);
            if job.is_done() {
                self.retire(i);
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.jobs.iter().flatten().filter_map(CopyJob::wake_at).min()
    }

    fn dispatch(&mut self) {
        let mut done = std::mem::take(&mut self.done);
        self.io.poll(&mut done);
        let n = done.len() as u64;
        let now = Instant::now();
        let mut touched = Vec::new();
        for d in done.drain(..) {
            if d.tag.job == WAKE {
                self.wake_armed = false;
                continue;
            }
            let i = d.tag.job as usize;
            if let Some(job) = self.jobs.get_mut(i).and_then(Option::as_mut) {
                job.on_done(d, &mut self.io);
                touched.push(i);
            }
        }
        self.done = done;
        self.cfg.metrics.ops_completed.fetch_add(n, Ordering::Relaxed);
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            if let Some(job) = self.jobs[i].as_mut() {
                job.drive(&mut self.io, now);
                if job.is_done() {
                    self.retire(i);
                }
            }
        }
    }

    fn retire(&mut self, i: usize) {
        let Some(job) = self.jobs[i].take() else {
            return;
        };
        self.free.push(i as u32);
        self.by_id.remove(&job.req.shared.id);
        self.cfg.active.fetch_sub(1, Ordering::Relaxed);
        self.cfg.metrics.active.store(self.by_id.len() as u64, Ordering::Relaxed);
        match job.finish(self.cfg.backend, &mut self.io) {
            Some(bytes) => {
                self.cfg.metrics.transfers_ok.fetch_add(1, Ordering::Relaxed);
                self.cfg.metrics.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            None => {
                self.cfg.metrics.transfers_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn fail_all(&mut self, e: Error) {
        let msg = e.to_string();
        for j in self.jobs.iter_mut().flatten() {
            j.abort(Error::new(ErrorKind::Io, "io_uring_enter").with_detail(msg.clone()));
        }
        // Give the kernel a moment before the next attempt instead of spinning on a broken ring.
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn cancelled(op: &'static str) -> Error {
    Error::new(ErrorKind::Cancelled, op)
}
