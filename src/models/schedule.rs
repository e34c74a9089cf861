//! Building on a schedule (`--every 5m`, `--cron "*/5 * * * *"`) under a PostgreSQL advisory
//! lock, so that two schedulers, even on two machines, never build at the same time.
//!
//! The lock is session-level and held on a connection of its own, detached from the pool: if
//! the process dies mid-build, the server drops the session and with it the lock. A tick whose
//! lock is taken is skipped ("another scheduler is building"); a failed build is logged and
//! the next tick still comes.

use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::results::RunSummary;
use super::{BuildOptions, ModelError, Progress, TestScope, build_with_progress};

/// How often a scheduler that tests only the changed rows runs every test in full anyway: once
/// a day catches what changed-scope tests cannot see (parents that lost keys, rows rewritten in
/// place) at the cost of one full test run.
pub const DEFAULT_FULL_TESTS_EVERY: Duration = Duration::from_secs(86_400);

/// The test scope of one scheduled tick at `now`. `requested` all means all, every tick.
/// Requested changed: all when no full run happened yet in this process (`last_full` none) or
/// the last one is `full_every` or more ago, else changed. `full_every` none: changed, always.
pub fn tick_test_scope(
    requested: TestScope,
    full_every: Option<Duration>,
    last_full: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> TestScope {
    let (TestScope::Changed, Some(every)) = (requested, full_every) else {
        return requested;
    };
    match last_full {
        Some(last) if (now - last).to_std().unwrap_or_default() < every => TestScope::Changed,
        _ => TestScope::All,
    }
}

/// Advisory lock key of model builds ("etl_mdls" in ASCII); one per database.
pub const BUILD_LOCK_KEY: i64 = 0x6574_6c5f_6d64_6c73;

/// When builds happen.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// At a fixed rate from the first run; ticks missed while a build ran long are skipped.
    Every(Duration),
    /// At each matching minute, in the machine's local time zone.
    Cron(Box<croner::Cron>),
}

impl Schedule {
    pub fn cron(expression: &str) -> Result<Self, ModelError> {
        use std::str::FromStr as _;
        croner::Cron::from_str(expression)
            .map(|c| Self::Cron(Box::new(c)))
            .map_err(|e| ModelError::BadCron {
                expression: expression.to_string(),
                message: e.to_string(),
            })
    }

    /// How long to wait at `now` for the next tick, the previous one having started at `last`.
    pub fn delay(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
        match self {
            Self::Every(every) => {
                let every = (*every).max(Duration::from_millis(1));
                let elapsed = (now - last).to_std().unwrap_or_default();
                let periods = elapsed.as_nanos() / every.as_nanos() + 1;
                let next = every.as_nanos() * periods;
                Duration::from_nanos(u64::try_from(next - elapsed.as_nanos()).unwrap_or(u64::MAX))
            }
            Self::Cron(cron) => {
                let local = now.with_timezone(&Local);
                match cron.find_next_occurrence(&local, false) {
                    Ok(next) => (next.with_timezone(&Utc) - now)
                        .to_std()
                        .unwrap_or_default(),
                    // No next match (e.g. 30 February): check again in a day.
                    Err(_) => Duration::from_secs(86_400),
                }
            }
        }
    }
}

/// What one attempt under the lock did.
#[derive(Debug)]
pub enum LockedBuild {
    Built(RunSummary),
    /// Another process holds the lock; nothing was built.
    Busy,
}

/// Builds while holding the build lock. With `wait` false a held lock returns
/// [`LockedBuild::Busy`] at once; with `wait` true it waits for the lock.
pub async fn build_locked(
    pool: &PgPool,
    options: &BuildOptions,
    progress: &dyn Progress,
    wait: bool,
) -> Result<LockedBuild, ModelError> {
    let mut lock = pool
        .acquire()
        .await
        .map_err(ModelError::database(
            "opening the connection that holds the build lock",
        ))?
        .detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(BUILD_LOCK_KEY)
        .fetch_one(&mut lock)
        .await
        .map_err(ModelError::database("taking the build lock"))?;
    if !got {
        if !wait {
            let _ = lock.close().await;
            return Ok(LockedBuild::Busy);
        }
        tracing::info!("another build holds the lock; waiting for it to finish");
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(BUILD_LOCK_KEY)
            .execute(&mut lock)
            .await
            .map_err(ModelError::database("waiting for the build lock"))?;
    }
    let outcome = build_with_progress(pool, options, progress).await;
    release(lock).await;
    outcome.map(LockedBuild::Built)
}

/// Unlocks and closes; closing alone would release the lock too.
async fn release(mut lock: PgConnection) {
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(BUILD_LOCK_KEY)
        .execute(&mut lock)
        .await;
    let _ = lock.close().await;
}

/// Builds on `schedule` until `cancel` fires. `on_tick` sees each tick's outcome (the CLI
/// prints the summary); failures are logged and do not stop the loop. A build in progress
/// when `cancel` fires is abandoned: its open transactions roll back, and every swap is atomic.
pub async fn run_scheduled(
    pool: &PgPool,
    options: &BuildOptions,
    schedule: &Schedule,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    on_tick: impl FnMut(&Result<LockedBuild, ModelError>),
) {
    run_scheduled_with(pool, options, schedule, None, cancel, progress, on_tick).await;
}

/// [`run_scheduled`], with `options.test_scope` changed turned into a full test run at least
/// every `full_tests_every` (see [`tick_test_scope`]).
pub async fn run_scheduled_with(
    pool: &PgPool,
    options: &BuildOptions,
    schedule: &Schedule,
    full_tests_every: Option<Duration>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    mut on_tick: impl FnMut(&Result<LockedBuild, ModelError>),
) {
    let mut last_full: Option<DateTime<Utc>> = None;
    loop {
        let started = Utc::now();
        let test_scope = tick_test_scope(options.test_scope, full_tests_every, last_full, started);
        let tick_options = BuildOptions {
            test_scope,
            ..options.clone()
        };
        tracing::info!(test_scope = test_scope.as_str(), "scheduled build starting");
        let outcome = tokio::select! {
            () = cancel.cancelled() => break,
            outcome = build_locked(pool, &tick_options, progress, false) => outcome,
        };
        // A full run counts once it built, failing tests included (they ran in full); a tick that
        // errored or found the lock taken tries again next time.
        if test_scope == TestScope::All && matches!(outcome, Ok(LockedBuild::Built(_))) {
            last_full = Some(started);
        }
        match &outcome {
            Ok(LockedBuild::Busy) => {
                tracing::info!("another scheduler is building, skipping this tick");
            }
            Ok(LockedBuild::Built(summary)) if summary.success() => {
                tracing::info!(run_id = %summary.run_id, nodes = summary.results.len(), "scheduled build succeeded");
            }
            Ok(LockedBuild::Built(summary)) => {
                let failed = summary
                    .results
                    .iter()
                    .filter(|r| r.status.is_failure())
                    .count();
                tracing::error!(run_id = %summary.run_id, failed, "scheduled build had failures; the next tick still comes");
            }
            Err(error) => {
                tracing::error!(%error, "scheduled build failed; the next tick still comes");
            }
        }
        on_tick(&outcome);
        let delay = schedule.delay(started, Utc::now());
        tracing::info!(next_in_s = delay.as_secs(), "waiting for the next tick");
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("scheduler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_keeps_a_fixed_rate() {
        let every = Schedule::Every(Duration::from_secs(300));
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let after_20s = start + chrono::Duration::seconds(20);
        assert_eq!(every.delay(start, after_20s), Duration::from_secs(280));
        // A build longer than the period skips the missed tick.
        let after_7m = start + chrono::Duration::seconds(420);
        assert_eq!(every.delay(start, after_7m), Duration::from_secs(180));
    }

    #[test]
    fn changed_scope_runs_in_full_first_and_then_once_per_period() {
        let day = Some(Duration::from_secs(86_400));
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let at = |seconds| start + chrono::Duration::seconds(seconds);
        // The first tick of a scheduler has no full run behind it.
        assert_eq!(
            tick_test_scope(TestScope::Changed, day, None, start),
            TestScope::All
        );
        // Within the day: changed only; a day after the last full run, and later: all again.
        let last = Some(start);
        assert_eq!(
            tick_test_scope(TestScope::Changed, day, last, at(300)),
            TestScope::Changed
        );
        assert_eq!(
            tick_test_scope(TestScope::Changed, day, last, at(86_399)),
            TestScope::Changed
        );
        assert_eq!(
            tick_test_scope(TestScope::Changed, day, last, at(86_400)),
            TestScope::All
        );
        assert_eq!(
            tick_test_scope(TestScope::Changed, day, last, at(200_000)),
            TestScope::All
        );
        // A clock that went back is no reason for a full run.
        assert_eq!(
            tick_test_scope(TestScope::Changed, day, last, at(-60)),
            TestScope::Changed
        );
        // No period: changed always; requested all: all always.
        assert_eq!(
            tick_test_scope(TestScope::Changed, None, None, start),
            TestScope::Changed
        );
        assert_eq!(
            tick_test_scope(TestScope::All, day, last, at(300)),
            TestScope::All
        );
    }

    #[test]
    fn cron_waits_for_the_next_match() {
        let cron = Schedule::cron("*/5 * * * *").unwrap();
        // Every time zone's offset is a whole number of 5 minutes, so the local */5 ticks are
        // the UTC ones.
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 2, 30).unwrap();
        assert_eq!(cron.delay(now, now), Duration::from_secs(150));
        // A tick that is due now is not run again at once: the next one is 5 minutes away.
        let on_tick = Utc.with_ymd_and_hms(2025, 1, 1, 0, 5, 0).unwrap();
        assert_eq!(cron.delay(on_tick, on_tick), Duration::from_secs(300));
        assert!(Schedule::cron("not cron").is_err());
    }
}
