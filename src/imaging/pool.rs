//! The image worker pool: every decode, resize and encode of the service runs here, on tokio's
//! blocking threads, at most `workers` at once (a semaphore), so CPU-bound work never starves
//! the async runtime nor exceeds the configured workers. Serving and upload jobs share one pool.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::ImagingError;

/// Why pooled image work produced nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// The work ran and failed.
    #[error(transparent)]
    Imaging(#[from] ImagingError),
    /// The blocking task panicked or was cancelled, or the pool is closed.
    #[error("image task failed")]
    Task,
}

/// A bounded pool for image work. Cheap to clone (clones share the bound).
#[derive(Clone, Debug)]
pub struct ImagePool {
    /// One permit per concurrent task.
    permits: Arc<Semaphore>,
}

impl ImagePool {
    /// A pool running at most `workers` tasks at once (at least one).
    pub fn new(workers: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(workers.max(1))),
        }
    }

    /// Run `work` on the blocking pool once a permit is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ImagingError> + Send + 'static,
    ) -> Result<T, PoolError> {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Task)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| PoolError::Task)?
            .map_err(PoolError::Imaging)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn no_more_tasks_run_at_once_than_the_pool_has_workers() {
        let pool = ImagePool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks = (0..8).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            pool.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::yield_now();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
        });
        for result in futures::future::join_all(tasks).await {
            result.expect("ran");
        }
        assert!(most.load(Ordering::SeqCst) <= 2);
    }

    #[tokio::test]
    async fn a_failing_task_reports_its_imaging_error_and_a_panic_is_a_task_error() {
        let pool = ImagePool::new(1);
        let failed = pool.run(|| Err::<(), _>(ImagingError::Unsupported)).await;
        assert!(matches!(
            failed,
            Err(PoolError::Imaging(ImagingError::Unsupported))
        ));
        let panicked = pool
            .run(|| -> Result<(), ImagingError> { panic!("boom") })
            .await;
        assert!(matches!(panicked, Err(PoolError::Task)));
    }
}
