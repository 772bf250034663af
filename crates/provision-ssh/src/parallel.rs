//! Bounded parallelism over hosts: run one async closure per item, at most `parallelism` at a time.

use std::future::Future;

use futures::StreamExt as _;

/// Runs `work` for every item with at most `parallelism` futures in flight (at least one) and returns the
/// results in the order of `items`, whatever order they finished in.
pub async fn run_bounded<I, T, F, Fut, R>(items: I, parallelism: usize, work: F) -> Vec<R>
where
    I: IntoIterator<Item = T>,
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    let work = &work;
    let mut indexed: Vec<(usize, R)> = futures::stream::iter(items.into_iter().enumerate())
        .map(|(index, item)| async move { (index, work(item).await) })
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    indexed.sort_by_key(|(index, _)| *index);
    indexed.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn keeps_order_and_bounds_concurrency() {
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let results = run_bounded(0..20u64, 3, |n| {
            let in_flight = &in_flight;
            let peak = &peak;
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Later items finish first, to prove the reordering.
                tokio::time::sleep(Duration::from_millis(20 - n)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                n * 2
            }
        })
        .await;
        assert_eq!(results, (0..20).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn zero_parallelism_still_runs() {
        let results = run_bounded(vec!["a", "b"], 0, |s| async move { s.len() }).await;
        assert_eq!(results, vec![1, 1]);
    }
}
