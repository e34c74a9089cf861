//! Secrets stay secret: the producer, the sink, `build-models` and `serve` run as processes with a
//! database password, a Kafka SASL password and an API token set, each fails once (a database
//! that is not there, a broker that refuses the SASL handshake), and none of the three secrets
//! appears in a log line, an error, an HTTP answer, `/metrics` or any `--help`.
//!
//! Logs run at `debug`, the most a person would turn on while chasing a problem.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::CommandFactory;
use etl::generate::files::write_month;
use etl::generate::monthly::{Month, MonthlyOptions};
use indicatif::ProgressBar;
use tempfile::TempDir;
use uuid::Uuid;

use crate::helpers::{TestDb, services};

/// How long one process may take to fail; a debug build on a busy machine is slow.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

/// Nothing listens on port 1: "wrong host" without waiting for a DNS timeout.
const NOWHERE: &str = "127.0.0.1:1";

struct Secrets {
    db_password: String,
    kafka_password: String,
    api_token: String,
}

impl Secrets {
    fn new(db_password: String) -> Self {
        Self {
            db_password,
            kafka_password: format!("kafka-pw-{}", Uuid::new_v4().simple()),
            api_token: format!("api-token-{}", Uuid::new_v4().simple()),
        }
    }

    fn assert_absent(&self, what: &str, text: &str) {
        for (name, secret) in [
            ("database password", &self.db_password),
            ("Kafka SASL password", &self.kafka_password),
            ("API token", &self.api_token),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "the {name} appears in {what}:\n{text}"
            );
        }
    }

    /// The `etl` binary with every secret in its environment: the database URL (password
    /// included), SASL over plaintext with a password (the local broker has no SASL listener, so
    /// it refuses the handshake), the password again through `KAFKA_CONFIG`, and the API token.
    fn command(&self, database_url: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_etl"));
        command
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", &services().kafka_brokers)
            .env("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
            .env("KAFKA_SASL_MECHANISM", "PLAIN")
            .env("KAFKA_USERNAME", "etl-secrets-test")
            .env("KAFKA_PASSWORD", &self.kafka_password)
            .env(
                "KAFKA_CONFIG",
                format!("sasl.password={}", self.kafka_password),
            )
            .env("ETL_API_TOKEN", &self.api_token)
            .env("RUST_LOG", "debug")
            .env_remove("ETL_LOG_FORMAT")
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// `url` with `password` in its user info, unless it has a password already: then that one is
/// the secret (a server that checks passwords needs the real one).
fn with_password(url: &str, password: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').unwrap_or(("postgres", rest));
    match userinfo.split_once(':') {
        Some((_, existing)) => (url.to_string(), existing.to_string()),
        None => (
            format!("{scheme}://{userinfo}:{password}@{host}"),
            password.to_string(),
        ),
    }
}

/// `url` pointed at a port where nothing listens, the password kept.
fn nowhere(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, after) = rest.rsplit_once('@').expect("user info");
    let path = after.find('/').map_or("", |i| &after[i..]);
    format!("{scheme}://{userinfo}@{NOWHERE}{path}")
}

/// Everything a process wrote, and whether it succeeded.
struct Ran {
    success: bool,
    output: String,
}

/// Runs `command` to its exit (killed after [`PROCESS_TIMEOUT`], which fails the test).
fn run_to_exit(what: &str, mut command: Command) -> Ran {
    let child = command.spawn().expect("starting etl");
    let pid = child.id();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match exited.recv_timeout(PROCESS_TIMEOUT) {
        Ok(output) => output.expect("waiting for etl"),
        Err(_) => {
            signal(pid, "-KILL");
            panic!("{what} did not exit within {PROCESS_TIMEOUT:?}");
        }
    };
    Ran {
        success: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn signal(pid: u32, which: &str) {
    let _ = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status();
}

/// Collects a pipe on a thread of its own; the text arrives when the pipe closes.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn no_help_text_shows_a_secret() {
    let secrets = Secrets::new(format!("db-pw-{}", Uuid::new_v4().simple()));
    let url = format!("postgres://etl:{}@db.example.com/etl", secrets.db_password);
    let mut paths: Vec<Vec<String>> = vec![Vec::new()];
    let mut stack = vec![(Vec::new(), etl::cli::Cli::command())];
    while let Some((path, command)) = stack.pop() {
        for sub in command.get_subcommands() {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_string());
            paths.push(sub_path.clone());
            stack.push((sub_path, sub.clone()));
        }
    }
    assert!(paths.len() > 20, "{paths:?}");
    for path in paths {
        let mut command = secrets.command(&url);
        command.args(&path).arg("--help");
        let ran = run_to_exit(&format!("etl {} --help", path.join(" ")), command);
        assert!(ran.success, "etl {} --help: {}", path.join(" "), ran.output);
        // The variables are there, with their values hidden.
        assert!(ran.output.contains("KAFKA_CONFIG"), "{}", ran.output);
        secrets.assert_absent(&format!("`etl {} --help`", path.join(" ")), &ran.output);
    }
}

#[test]
fn commands_that_cannot_reach_the_database_say_so_without_its_password() {
    let (url, db_password) = with_password(
        &services().database_url,
        &format!("db-pw-{}", Uuid::new_v4().simple()),
    );
    let secrets = Secrets::new(db_password);
    let url = nowhere(&url);
    for args in [
        &["migrate"][..],
        &["kafka-to-postgres", "--topic", "it-secrets-nowhere"],
        &["build-models"],
        &["serve", "--addr", "127.0.0.1:0"],
        &["load-batch", "--dir", "."],
    ] {
        let what = format!("etl {}", args.join(" "));
        let mut command = secrets.command(&url);
        command.args(args);
        let ran = run_to_exit(&what, command);
        assert!(!ran.success, "{what} succeeded without a database");
        assert!(
            ran.output.contains("cannot connect to PostgreSQL"),
            "{what}: {}",
            ran.output
        );
        secrets.assert_absent(&what, &ran.output);
    }
}

/// A password with characters a URL should have percent-encoded (people paste them raw) makes
/// the URL unusable; the error about it still hides the password.
#[test]
fn a_url_that_does_not_parse_is_refused_without_its_password() {
    for password in ["db/pw", "db?pw", "db@pw"] {
        let password = format!("{password}-{}", Uuid::new_v4().simple());
        let secrets = Secrets::new(password.clone());
        for url in [
            format!("postgres://postgres:{password}@{NOWHERE}/etl"),
            format!("postgres://postgres:{password}@127.0.0.1:notaport/etl"),
            format!("host=127.0.0.1 port=1 user=postgres password={password}"),
        ] {
            let mut command = secrets.command(&url);
            command.arg("migrate");
            let ran = run_to_exit("etl migrate", command);
            assert!(!ran.success, "{url}: {}", ran.output);
            secrets.assert_absent(&format!("etl migrate with {url:?}"), &ran.output);
        }
    }
}

#[test]
fn a_producer_and_a_sink_refused_by_the_broker_say_so_without_the_password() {
    // The runtime outlives the database's pool, which it drops.
    let runtime = tokio_runtime();
    let db = runtime.block_on(TestDb::migrated());
    let (url, db_password) = with_password(&db.url, &format!("db-pw-{}", Uuid::new_v4().simple()));
    let secrets = Secrets::new(db_password);
    let users = TempDir::new().unwrap();
    write_month(
        users.path(),
        &MonthlyOptions {
            month: Month::new(2025, 1).unwrap(),
            users: 5,
            transactions: 0,
            seed: 1,
            invalid_ratio: 0.0,
        },
        &ProgressBar::hidden(),
    )
    .unwrap();
    let topic = format!("it-secrets-{}", Uuid::new_v4().simple());

    let mut produce = secrets.command(&url);
    produce
        .args([
            "produce",
            "--count",
            "3",
            "--flush-timeout",
            "5s",
            "--topic",
        ])
        .arg(&topic)
        .arg("--users-dir")
        .arg(users.path())
        .args(["-X", "message.timeout.ms=3000", "-X"])
        .arg(format!("sasl.password={}", secrets.kafka_password));
    let produce = run_to_exit("etl produce", produce);
    assert!(!produce.success, "produce succeeded: {}", produce.output);
    secrets.assert_absent("etl produce", &produce.output);

    // The sink reaches the database, then gives up on a broker that refuses it.
    let mut sink = secrets.command(&url);
    sink.args(["kafka-to-postgres", "--topic"]).arg(&topic);
    let sink = run_to_exit("etl kafka-to-postgres", sink);
    assert!(!sink.success, "the sink succeeded: {}", sink.output);
    // A plaintext broker answers a SASL handshake by closing the connection: librdkafka reports
    // that as an authentication failure or, when the close wins the race, as a transport failure.
    assert!(
        sink.output.contains("Authentication") || sink.output.contains("cannot reach Kafka"),
        "{}",
        sink.output
    );
    secrets.assert_absent("etl kafka-to-postgres", &sink.output);
}

#[test]
fn serve_with_a_refusing_broker_keeps_the_secrets_out_of_answers_metrics_and_logs() {
    let runtime = tokio_runtime();
    let db = runtime.block_on(TestDb::migrated());
    let (url, db_password) = with_password(&db.url, &format!("db-pw-{}", Uuid::new_v4().simple()));
    let secrets = Secrets::new(db_password);
    let mut server: Child = secrets
        .command(&url)
        .args(["serve", "--addr", "127.0.0.1:0", "--kafka-timeout", "2s"])
        .spawn()
        .expect("starting etl serve");
    let pid = server.id();
    let stderr = drain(server.stderr.take().unwrap());
    // The first line on stdout names the address: the server answers from then on.
    let (lines, first_lines) = mpsc::channel();
    let stdout = server.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let banner = first_lines
        .recv_timeout(PROCESS_TIMEOUT)
        .unwrap_or_else(|_| {
            signal(pid, "-KILL");
            panic!("etl serve did not start within {PROCESS_TIMEOUT:?}");
        });
    let base = banner
        .split_whitespace()
        .find_map(|w| w.strip_suffix('/').filter(|w| w.starts_with("http://")))
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_string();

    let answers = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        for path in [
            "/health",
            "/healthz",
            "/readyz",
            "/api/stream",
            "/api/dashboard",
            "/anomalies",
        ] {
            let response = client.get(format!("{base}{path}")).send().await.unwrap();
            answers.push((path.to_string(), response.text().await.unwrap()));
        }
        let event = serde_json::json!({
            "tx_id": Uuid::new_v4(), "user_id": Uuid::new_v4(), "amount": 12.5,
            "currency": "USD", "merchant": "Shop", "category": "gaming",
            "timestamp": "2025-08-15T10:30:00Z", "status": "approved",
            "payment_method": "credit_card",
        });
        for token in ["wrong-token", secrets.api_token.as_str()] {
            // The right token gets as far as Kafka, which refuses: an error answer.
            let response = client
                .post(format!("{base}/events"))
                .bearer_auth(token)
                .json(&event)
                .send()
                .await
                .unwrap();
            assert!(!response.status().is_success(), "{}", response.status());
            answers.push((
                format!("POST /events ({token})"),
                response.text().await.unwrap(),
            ));
        }
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
        answers.push(("/metrics".to_string(), metrics.text().await.unwrap()));
        answers
    });
    signal(pid, "-TERM");
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(server.wait());
    });
    if exited.recv_timeout(PROCESS_TIMEOUT).is_err() {
        signal(pid, "-KILL");
        panic!("etl serve did not stop on SIGTERM");
    }
    let logs = stderr.join().unwrap();

    for (what, body) in &answers {
        secrets.assert_absent(what, body);
    }
    let health = &answers[0].1;
    assert!(health.contains("kafka"), "{health}");
    assert!(
        answers
            .iter()
            .any(|(w, b)| w == "/metrics" && b.contains("# EOF"))
    );
    assert!(
        logs.contains("DEBUG"),
        "logs are not at debug level: {logs}"
    );
    secrets.assert_absent("the logs of etl serve", &logs);
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}
