//! Blocking work (a store call, a few syscalls) from async code.

/// Run `f`, which blocks briefly, without stalling the async scheduler. On
/// the multi-threaded runtime it runs right here, this worker's other tasks
/// handed to another thread (`block_in_place`): handing it to the blocking
/// pool and back costs two thread wake-ups (50-100 µs each for an idle
/// vCPU on our VMs), more than most such work. Elsewhere (a current-thread
/// runtime: tests, tools) it goes to the blocking pool.
pub async fn in_place<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, tokio::task::JoinError> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => Ok(tokio::task::block_in_place(f)),
        _ => tokio::task::spawn_blocking(f).await,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_the_calling_thread_on_the_multi_threaded_runtime() {
        let here = std::thread::current().id();
        assert_eq!(super::in_place(move || std::thread::current().id()).await.unwrap(), here);
    }

    #[tokio::test]
    async fn goes_to_the_blocking_pool_on_a_current_thread_runtime() {
        let here = std::thread::current().id();
        assert_ne!(super::in_place(move || std::thread::current().id()).await.unwrap(), here);
    }
}
