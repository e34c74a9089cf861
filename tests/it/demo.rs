//! `etl demo` (what `just demo` runs) on a database and topics of the test's own: its summary
//! adds up, and a second run lands new transactions while loading no batch file twice.

use crate::helpers::{TestDb, TestTopic, run_etl};

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_summary_adds_up_and_a_second_run_loads_no_file_twice() {
    let db = TestDb::empty().await;
    let (stream, dead_letters, anomalies) = (
        TestTopic::new(3).await,
        TestTopic::new(1).await,
        TestTopic::new(1).await,
    );
    let data = tempfile::tempdir().unwrap();
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let args = [
        "demo",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--models-dir",
        models,
        "--users",
        "300",
        "--transactions",
        "1000",
        "--stream",
        "3000",
        "--topic",
        &stream.name,
        "--dlq-topic",
        &dead_letters.name,
        "--anomalies-topic",
        &anomalies.name,
        "--group",
        &format!("it-demo-{}", stream.name),
    ];
    let (ok, out, err) = run_etl(&args, Some(&db.url));
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("3000 produced = ") && out.contains(": adds up"),
        "{out}"
    );
    let first = landed(&out);
    assert!(
        out.contains("exactly the kinds and counts the generator injected"),
        "{out}"
    );
    assert!(
        out.contains("Batch    6 file(s) loaded, 0 already"),
        "{out}"
    );
    assert!(out.contains(", 0 failed; tests: "), "{out}");
    assert!(out.contains("Top 5 merchants on "), "{out}");

    // The same batch files again (same seed): nothing loaded twice. A new stream: new rows.
    let (ok, out, err) = run_etl(&args, Some(&db.url));
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("Batch    0 file(s) loaded, 6 already"),
        "{out}"
    );
    assert!(out.contains(": adds up"), "{out}");
    let second = landed(&out);
    assert!(first > 2_800 && second > 2_800, "{first}, {second}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions_sink")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, first + second);
}

/// The rows the summary says landed: "N produced = L landed + …".
fn landed(summary: &str) -> i64 {
    summary
        .split(" produced = ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no landed count in {summary}"))
}
