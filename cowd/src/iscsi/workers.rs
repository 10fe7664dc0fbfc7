//! A pool of threads that run one connection's commands: grown on demand up to a limit,
//! drained and joined when the connection ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// The workers of one connection.
#[derive(Debug)]
pub struct Workers {
    tx: Option<mpsc::Sender<Job>>,
    rx: Arc<std::sync::Mutex<mpsc::Receiver<Job>>>,
    idle: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
    max: usize,
    name: String,
}

impl Workers {
    /// A pool of at most `max` threads named `name`.
    pub fn new(max: usize, name: &str) -> Workers {
        let (tx, rx) = mpsc::channel();
        Workers {
            tx: Some(tx),
            rx: Arc::new(std::sync::Mutex::new(rx)),
            idle: Arc::new(AtomicUsize::new(0)),
            threads: Vec::new(),
            max: max.max(1),
            name: name.to_owned(),
        }
    }

    /// Runs `job` on a worker, starting one if none is idle and the limit allows.
    pub fn submit(&mut self, job: impl FnOnce() + Send + 'static) {
        if self.idle.load(Ordering::Acquire) == 0 && self.threads.len() < self.max {
            let rx = self.rx.clone();
            let idle = self.idle.clone();
            let spawned = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || worker(&rx, &idle));
            match spawned {
                Ok(t) => self.threads.push(t),
                // The threads there are will get to the job.
                Err(e) => tracing::warn!(error = %e, "cannot start a worker thread"),
            }
        }
        if let Some(tx) = &self.tx {
            // Fails only without receivers: run it here rather than lose it.
            if let Err(mpsc::SendError(job)) = tx.send(Box::new(job)) {
                job();
            }
        }
    }

    /// Lets the workers finish every job submitted, then joins them.
    pub fn finish(mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(rx: &std::sync::Mutex<mpsc::Receiver<Job>>, idle: &AtomicUsize) {
    loop {
        idle.fetch_add(1, Ordering::AcqRel);
        let job = rx.lock().map(|r| r.recv());
        idle.fetch_sub(1, Ordering::AcqRel);
        match job {
            Ok(Ok(job)) => job(),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_job_runs_before_finish_returns() {
        let sum = Arc::new(AtomicU64::new(0));
        let mut w = Workers::new(4, "test-worker");
        for i in 1..=1000u64 {
            let sum = sum.clone();
            w.submit(move || {
                sum.fetch_add(i, Ordering::Relaxed);
            });
        }
        assert!(w.threads.len() <= 4);
        w.finish();
        assert_eq!(sum.load(Ordering::Relaxed), 500_500);
    }
}
