//! The job runner: one supervisor for every named job of this replica.
//!
//! ```text
//! claim (lease for this runner, attempts + 1) ─▶ attempts over the cap? ─▶ GaveUp
//!        │                                       else run, renewing the lease every heartbeat
//!        ▼                                            │ lease lost: abandon (its new owner settles)
//!   settle, if this runner still holds the lease ◀────┘ Done │ Retry → RetryAt (backoff) or GaveUp
//!                                                            │ Abort
//! ```
//!
//! A job whose runner died (even by `kill -9`) is claimed again once its short lease runs out,
//! so it completes within a lease of the restart; a claim always counts an attempt, so a job
//! that kills its runner every time still stops at the cap. On cancellation the runner stops
//! claiming, lets running jobs finish (drains), and cuts them only after the drain timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::clock::{Clock, Millis, millis};
use crate::repo::RepoError;

/// What one run of a job came to.
#[derive(Debug)]
pub enum Outcome<T> {
    /// Finished; `T` is what the job type records.
    Done(T),
    /// A transient fault (store, database, network): try again later.
    Retry(String),
    /// Retrying cannot help (invalid input, a refusal): fail now.
    Abort(String),
}

/// What the runner decided, for the job type to record.
#[derive(Debug)]
pub enum Settlement<T> {
    /// Finished.
    Done(T),
    /// Try again at this time.
    RetryAt {
        /// Not before.
        at: Millis,
        /// The transient fault.
        reason: String,
    },
    /// Failed for good because retrying cannot help.
    Abort(String),
    /// Failed for good after `attempts` attempts.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last fault.
        reason: String,
    },
}

/// A claim held by one runner until a time.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The runner holding it.
    pub owner: Arc<str>,
    /// Until then, nobody else claims the job.
    pub until: Millis,
}

/// One named job type and where its jobs are kept. Jobs must be idempotent: after a crash, a
/// job runs again from the start.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// One claimed job.
    type Job: Send + Sync + 'static;
    /// What a finished job records.
    type Output: Send + 'static;

    /// The job type's name, for logs (`process-upload`, `deliver-webhook`).
    fn name(&self) -> &'static str;
    /// Attempts before giving up.
    fn max_attempts(&self) -> u32;
    /// Attempts started on `job`, this one included.
    fn attempts(&self, job: &Self::Job) -> u32;
    /// Take the oldest due job (or one whose lease ran out) under `lease`, counting an attempt.
    async fn claim(&self, now: Millis, lease: &Lease) -> Result<Option<Self::Job>, RepoError>;
    /// Extend the lease; `false` when another runner holds the job now.
    async fn renew(&self, job: &Self::Job, lease: &Lease) -> Result<bool, RepoError>;
    /// Do the work.
    async fn run(&self, job: &Self::Job) -> Outcome<Self::Output>;
    /// Record the settlement if `owner` still holds the job; `false` when it lost it.
    async fn settle(
        &self,
        job: Self::Job,
        settlement: Settlement<Self::Output>,
        owner: &str,
    ) -> Result<bool, RepoError>;
}

/// How the runner holds, renews and retries jobs.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    /// Lease of a claim (`AVATAR_JOB_LEASE`).
    pub lease: Duration,
    /// Renewal period while a job runs (`AVATAR_JOB_HEARTBEAT`).
    pub heartbeat: Duration,
    /// How often idle workers look for due jobs (they are also woken when a job is queued).
    pub poll: Duration,
    /// Retry delays (`AVATAR_JOB_RETRY_BASE`, `AVATAR_JOB_RETRY_MAX`).
    pub backoff: Backoff,
}

/// What every worker of a runner shares.
struct Shared {
    owner: Arc<str>,
    clock: Arc<dyn Clock>,
    settings: RunnerSettings,
    cancel: CancellationToken,
}

/// The runner: owns every worker task; stop it with [`Runner::drain`].
pub struct Runner {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Runner {
    /// A runner with a fresh random owner id.
    pub fn new(clock: Arc<dyn Clock>, settings: RunnerSettings) -> Self {
        let owner = format!("runner-{}", hex::encode(rand::random::<[u8; 8]>()));
        Self {
            shared: Arc::new(Shared {
                owner: Arc::from(owner),
                clock,
                settings,
                cancel: CancellationToken::new(),
            }),
            tasks: JoinSet::new(),
        }
    }

    /// This runner's id, as written into the leases it holds.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Run `workers` workers for `queue`; `wake` makes idle ones look at once.
    pub fn spawn<Q: Queue>(&mut self, queue: Arc<Q>, workers: usize, wake: Arc<Notify>) {
        for _ in 0..workers {
            let (shared, queue, wake) = (self.shared.clone(), queue.clone(), wake.clone());
            self.tasks
                .spawn(async move { shared.work(&*queue, &wake).await });
        }
    }

    /// Run `job` every `period` (first after one period) until cancelled; a run in progress is
    /// finished, not cut, when the runner drains.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, job: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.shared.cancel.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = cancel.cancelled() => break,
                }
                tracing::debug!(job = name, "periodic job running");
                job().await;
            }
        });
    }

    /// Claim and run one due job of `queue` now; `Ok(false)` when none is due.
    pub async fn run_one<Q: Queue>(&self, queue: &Q) -> Result<bool, RepoError> {
        self.shared.run_one(queue).await
    }

    /// Stop claiming, let running jobs finish for up to `timeout`, then cut the rest.
    pub async fn drain(mut self, timeout: Duration) {
        self.shared.cancel.cancel();
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, all_done).await.is_err() {
            tracing::warn!("jobs still running after the drain timeout; cutting them");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

impl Shared {
    fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            until: self
                .clock
                .now_millis()
                .saturating_add(millis(self.settings.lease)),
        }
    }

    async fn work<Q: Queue>(&self, queue: &Q, wake: &Notify) {
        while !self.cancel.is_cancelled() {
            match self.run_one(queue).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::error!(job = queue.name(), error = %e, "job queue unavailable"),
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
                () = self.cancel.cancelled() => break,
            }
        }
    }

    async fn run_one<Q: Queue>(&self, queue: &Q) -> Result<bool, RepoError> {
        let now = self.clock.now_millis();
        let Some(job) = queue.claim(now, &self.lease()).await? else {
            return Ok(false);
        };
        let attempts = queue.attempts(&job);
        let settlement = if attempts > queue.max_attempts() {
            // Claimed again and again after its runner was lost: stop here.
            Settlement::GaveUp {
                attempts: attempts.saturating_sub(1),
                reason: "the job's runner stopped while running it".into(),
            }
        } else {
            let outcome = tokio::select! {
                outcome = queue.run(&job) => outcome,
                () = self.heartbeat(queue, &job) => {
                    tracing::warn!(job = queue.name(), "lease lost; another runner took the job over");
                    return Ok(true);
                }
            };
            match outcome {
                Outcome::Done(output) => Settlement::Done(output),
                Outcome::Abort(reason) => Settlement::Abort(reason),
                Outcome::Retry(reason) if attempts < queue.max_attempts() => {
                    tracing::warn!(job = queue.name(), attempt = attempts, error = %reason, "job failed; retrying");
                    let delay = self.settings.backoff.after(attempts);
                    Settlement::RetryAt {
                        at: self.clock.now_millis().saturating_add(millis(delay)),
                        reason,
                    }
                }
                Outcome::Retry(reason) => Settlement::GaveUp { attempts, reason },
            }
        };
        if !queue.settle(job, settlement, &self.owner).await? {
            tracing::warn!(
                job = queue.name(),
                "lease lost before the outcome was recorded; its new owner settles it"
            );
        }
        Ok(true)
    }

    /// Renew the lease every heartbeat; returns only when the lease is lost.
    async fn heartbeat<Q: Queue>(&self, queue: &Q, job: &Q::Job) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        tick.tick().await;
        loop {
            tick.tick().await;
            match queue.renew(job, &self.lease()).await {
                Ok(true) => {}
                Ok(false) => return,
                // Keep working: the next beat may get through before the lease runs out.
                Err(e) => tracing::warn!(job = queue.name(), error = %e, "could not renew a lease"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::clock::ManualClock;

    /// An in-memory queue of jobs, each a number of attempts already made.
    struct Fake {
        due: Mutex<VecDeque<u32>>,
        max_attempts: u32,
        /// How long a run takes (tokio time).
        run_for: Duration,
        retry: bool,
        /// Whether renewals keep the lease.
        keep_lease: bool,
        renewals: AtomicUsize,
        started: Notify,
        settled: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(due: &[u32]) -> Self {
            Self {
                due: Mutex::new(due.iter().copied().collect()),
                max_attempts: 3,
                run_for: Duration::ZERO,
                retry: false,
                keep_lease: true,
                renewals: AtomicUsize::new(0),
                started: Notify::new(),
                settled: Mutex::new(Vec::new()),
            }
        }
        fn settled(&self) -> Vec<String> {
            self.settled.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl Queue for Fake {
        type Job = u32;
        type Output = ();
        fn name(&self) -> &'static str {
            "fake"
        }
        fn max_attempts(&self) -> u32 {
            self.max_attempts
        }
        fn attempts(&self, job: &u32) -> u32 {
            *job
        }
        async fn claim(&self, _: Millis, _: &Lease) -> Result<Option<u32>, RepoError> {
            Ok(self.due.lock().expect("lock").pop_front().map(|a| a + 1))
        }
        async fn renew(&self, _: &u32, _: &Lease) -> Result<bool, RepoError> {
            self.renewals.fetch_add(1, Ordering::SeqCst);
            Ok(self.keep_lease)
        }
        async fn run(&self, _: &u32) -> Outcome<()> {
            self.started.notify_one();
            tokio::time::sleep(self.run_for).await;
            if self.retry {
                Outcome::Retry("flaky".into())
            } else {
                Outcome::Done(())
            }
        }
        async fn settle(&self, _: u32, s: Settlement<()>, _: &str) -> Result<bool, RepoError> {
            let label = match s {
                Settlement::Done(()) => "done".to_owned(),
                Settlement::RetryAt { at, .. } => format!("retry-at:{at}"),
                Settlement::Abort(_) => "abort".to_owned(),
                Settlement::GaveUp { attempts, .. } => format!("gave-up:{attempts}"),
            };
            self.settled.lock().expect("lock").push(label);
            Ok(true)
        }
    }

    fn runner(clock: &ManualClock) -> Runner {
        Runner::new(
            Arc::new(clock.clone()),
            RunnerSettings {
                lease: Duration::from_secs(10),
                heartbeat: Duration::from_secs(3),
                poll: Duration::from_millis(250),
                backoff: Backoff {
                    base: Duration::from_secs(2),
                    max: Duration::from_secs(600),
                },
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_job_keeps_its_lease_by_heartbeats_and_is_settled_once() {
        let clock = ManualClock::new();
        let queue = Fake {
            run_for: Duration::from_secs(31),
            ..Fake::new(&[0])
        };
        assert!(runner(&clock).run_one(&queue).await.expect("ran"));
        assert_eq!(
            queue.renewals.load(Ordering::SeqCst),
            10,
            "every 3 s for 31 s"
        );
        assert_eq!(queue.settled(), ["done"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_runner_that_lost_its_lease_abandons_the_job_without_settling_it() {
        let clock = ManualClock::new();
        let queue = Fake {
            run_for: Duration::from_secs(60),
            keep_lease: false,
            ..Fake::new(&[0])
        };
        assert!(runner(&clock).run_one(&queue).await.expect("ran"));
        assert_eq!(queue.renewals.load(Ordering::SeqCst), 1);
        assert!(queue.settled().is_empty(), "{:?}", queue.settled());
    }

    #[tokio::test]
    async fn transient_faults_back_off_then_give_up_at_the_attempt_cap() {
        let clock = ManualClock::new();
        let now = clock.now_millis();
        let queue = Fake {
            retry: true,
            ..Fake::new(&[0, 2])
        };
        let runner = runner(&clock);
        runner.run_one(&queue).await.expect("first");
        runner.run_one(&queue).await.expect("last");
        let settled = queue.settled();
        let at: Millis = settled[0]
            .strip_prefix("retry-at:")
            .and_then(|t| t.parse().ok())
            .expect("a retry");
        assert!((now + 1_000..=now + 2_000).contains(&at), "{at} vs {now}");
        assert_eq!(settled[1], "gave-up:3");
    }

    #[tokio::test]
    async fn a_job_reclaimed_past_the_cap_is_given_up_without_running() {
        let clock = ManualClock::new();
        let queue = Fake::new(&[3]);
        runner(&clock).run_one(&queue).await.expect("ran");
        assert_eq!(queue.settled(), ["gave-up:3"]);
        assert_eq!(queue.renewals.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_the_running_job_finishes_and_nothing_new_is_claimed() {
        let clock = ManualClock::new();
        let queue = Arc::new(Fake {
            run_for: Duration::from_secs(20),
            ..Fake::new(&[0, 0])
        });
        let mut runner = runner(&clock);
        runner.spawn(queue.clone(), 1, Arc::new(Notify::new()));
        queue.started.notified().await;
        runner.drain(Duration::from_secs(60)).await;
        assert_eq!(queue.settled(), ["done"], "the first job finished");
        assert_eq!(queue.due.lock().expect("lock").len(), 1, "the second waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_still_running_after_the_drain_timeout_is_cut() {
        let clock = ManualClock::new();
        let queue = Arc::new(Fake {
            run_for: Duration::from_secs(3600),
            ..Fake::new(&[0])
        });
        let mut runner = runner(&clock);
        runner.spawn(queue.clone(), 1, Arc::new(Notify::new()));
        queue.started.notified().await;
        runner.drain(Duration::from_secs(5)).await;
        assert!(queue.settled().is_empty());
    }
}
