//! The deployment artifacts (Dockerfile, the compose profiles, Prometheus and Grafana, the
//! Kubernetes manifests) cannot run on a machine without a Docker engine or a cluster. These
//! tests parse them and check what would otherwise break only in production: every command
//! they run parses with the real CLI, every metric they chart is one the code exports, every
//! probe points at a path the process serves, and no secret value is written down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use etl::cli::{Cli, Command};
use etl::kafka::sink::{SinkOptions, longest_stop};
use etl::telemetry::metrics::{HttpMetrics, Metrics, ModelMetrics, ProduceMetrics};
use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|err| panic!("reading {relative}: {err}"))
}

/// One YAML document, merge keys (`<<: *anchor`) applied as Docker Compose applies them.
fn yaml(relative: &str) -> Value {
    let mut value: Value = serde_yaml::from_str(&read(relative)).unwrap();
    // An alias copies its node unmerged: a merge of a mapping that merges itself needs a second
    // pass (and so on), as Compose's parser resolves them all.
    for _ in 0..4 {
        value.apply_merge().unwrap();
    }
    value
}

/// Every document of every YAML file under `deploy/k8s`, with the file it came from.
fn k8s_documents() -> Vec<(String, Value)> {
    let dir = root().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if !value.is_null() {
                documents.push((file.file_name().unwrap().to_string_lossy().into(), value));
            }
        }
    }
    documents
}

fn k8s_kind<'a>(documents: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

/// The pod spec of a Deployment, Job or CronJob.
fn pod_spec(workload: &Value) -> &Value {
    match workload["kind"].as_str().unwrap() {
        "CronJob" => &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &workload["spec"]["template"]["spec"],
    }
}

/// Every container and init container of every workload in deploy/k8s, named `file/container`.
fn k8s_containers(documents: &[(String, Value)]) -> Vec<(String, &Value)> {
    let mut containers = Vec::new();
    for (file, document) in documents {
        let spec = pod_spec(document);
        for list in ["initContainers", "containers"] {
            for container in spec[list].as_sequence().into_iter().flatten() {
                let name = format!("{file}/{}", container["name"].as_str().unwrap());
                containers.push((name, container));
            }
        }
    }
    containers
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `args` as the `etl` ENTRYPOINT gets them, parsed by the real command line.
fn parse_etl(args: &[String]) -> Cli {
    Cli::try_parse_from(std::iter::once("etl".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|err| panic!("`etl {}` does not parse: {err}", args.join(" ")))
}

/// Where a long-running etl command serves `/metrics`, if it does.
fn metrics_addr(cli: &Cli) -> Option<SocketAddr> {
    match &cli.command {
        Command::KafkaToPostgres(args) => args.metrics_addr,
        Command::BuildModels(args) if args.every.is_some() || args.cron.is_some() => {
            args.metrics_addr
        }
        Command::Serve(args) => Some(args.addr),
        Command::Produce(args) => args.metrics_addr,
        _ => None,
    }
}

#[test]
fn dockerfile_builds_in_one_stage_and_runs_etl_as_non_root_in_a_slim_one() {
    let dockerfile = read("Dockerfile");
    // Instructions, continuation lines joined, comments dropped.
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (op.to_uppercase(), rest.trim().to_string())
        })
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {} FROM", stages.len());
    let builder = &instructions[stages[0]].1;
    assert!(
        builder.starts_with("rust:"),
        "builder on a Rust image: {builder}"
    );
    let builder_name = builder.split_whitespace().last().unwrap();
    let last = &instructions[*stages.last().unwrap()..];
    let runtime = &last[0].1;
    assert!(
        runtime.contains("-slim"),
        "small runtime image: FROM {runtime}"
    );
    let copies_from_builder = last.iter().any(|(op, rest)| {
        op == "COPY"
            && rest
                .split_whitespace()
                .any(|word| word.strip_prefix("--from=") == Some(builder_name))
            && rest.contains("etl")
    });
    assert!(
        copies_from_builder,
        "the runtime stage copies the binary from the builder stage `{builder_name}`"
    );
    // The build compiles the one binary, with the lock file's versions.
    assert!(
        instructions
            .iter()
            .any(|(op, rest)| op == "RUN" && rest.contains("cargo build --release --locked")),
        "cargo build --release --locked"
    );
    // Migrations are compiled in: the builder needs them, the runtime does not.
    assert!(
        read("src/db/migrate.rs").contains("embed_migrations!(\"migrations\")"),
        "migrations are no longer embedded: ship them in the runtime image"
    );
    assert!(
        instructions[..stages[1]]
            .iter()
            .any(|(op, rest)| op == "COPY" && rest.starts_with("migrations")),
        "the builder copies migrations/"
    );
    // build-models reads the models folder at run time, relative to the working directory.
    let workdir = last
        .iter()
        .rev()
        .find(|(op, _)| op == "WORKDIR")
        .map(|(_, dir)| dir.clone())
        .expect("the runtime stage sets WORKDIR");
    assert!(
        last.iter().any(|(op, rest)| op == "COPY"
            && rest.split_whitespace().nth_back(1) == Some(etl::models::DEFAULT_MODELS_DIR)
            && rest.ends_with(&format!("./{}", etl::models::DEFAULT_MODELS_DIR))),
        "the runtime stage copies models/ into {workdir}"
    );
    let user = last
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, user)| user.clone())
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "root" && uid != "0",
        "the runtime runs as a non-root user, not {user}"
    );
    let entrypoint = last
        .iter()
        .rev()
        .find(|(op, _)| op == "ENTRYPOINT")
        .map(|(_, e)| e.clone())
        .expect("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint)
        .unwrap_or_else(|_| panic!("ENTRYPOINT in exec form: {entrypoint}"));
    assert_eq!(entrypoint, ["etl"]);

    let ignored = read(".dockerignore");
    for local in ["target/", ".local/", "data/", ".env", ".git/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == local),
            "{local} stays out of the build context"
        );
    }
}

/// The compose file's services: name → service, merges applied.
fn compose_services() -> BTreeMap<String, Value> {
    let compose = yaml("kafka-docker-compose.yml");
    compose["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn profiles(service: &Value) -> Vec<String> {
    if service["profiles"].is_null() {
        Vec::new()
    } else {
        strings(&service["profiles"])
    }
}

#[test]
fn compose_profiles_add_the_app_and_observability_and_leave_just_up_alone() {
    let services = compose_services();
    // `just up` starts these: no profile, so they start as before.
    for base in ["kafka", "postgres", "kafdrop"] {
        assert!(
            profiles(&services[base]).is_empty(),
            "{base} must keep starting without a profile"
        );
    }
    let mut commands: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, service) in &services {
        if profiles(service).contains(&"app".to_string()) {
            let args = strings(&service["command"]);
            parse_etl(&args);
            commands.insert(name, args);
        }
    }
    let running = |subcommand: &str| -> Vec<&str> {
        commands
            .iter()
            .filter(|(_, args)| args[0] == subcommand)
            .map(|(name, _)| *name)
            .collect()
    };
    assert_eq!(running("produce").len(), 1, "one producer: {commands:?}");
    let sinks = running("kafka-to-postgres");
    assert_eq!(sinks.len(), 2, "two sinks: {commands:?}");
    let groups: BTreeSet<String> = sinks
        .iter()
        .map(|s| match parse_etl(&commands[s]).command {
            Command::KafkaToPostgres(args) => {
                // A KAFKA_GROUP in the service's environment wins over the default.
                services[*s]["environment"]["KAFKA_GROUP"]
                    .as_str()
                    .map_or(args.topics.group, String::from)
            }
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        groups.len(),
        1,
        "the sinks share one consumer group: {groups:?}"
    );
    assert_eq!(running("serve").len(), 1, "the API: {commands:?}");
    let schedulers = running("build-models");
    assert_eq!(schedulers.len(), 1, "the model scheduler: {commands:?}");
    let Command::BuildModels(scheduler) = parse_etl(&commands[schedulers[0]]).command else {
        unreachable!()
    };
    assert!(
        scheduler.every.is_some() || scheduler.cron.is_some(),
        "the scheduler builds on a schedule"
    );
    for observer in ["prometheus", "grafana"] {
        assert_eq!(profiles(&services[observer]), ["observability"]);
    }
}

/// Prometheus's scrape targets, `host:port`.
fn scrape_targets() -> BTreeSet<String> {
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_sequence().unwrap() {
        for config in job["static_configs"].as_sequence().unwrap() {
            targets.extend(strings(&config["targets"]));
        }
    }
    targets
}

#[test]
fn prometheus_scrapes_every_etl_process_that_serves_metrics() {
    let services = compose_services();
    let targets = scrape_targets();
    let mut scraped = 0;
    let mut unscraped_long_running = Vec::new();
    for (name, service) in &services {
        if !profiles(service).contains(&"app".to_string()) {
            continue;
        }
        let cli = parse_etl(&strings(&service["command"]));
        match metrics_addr(&cli) {
            Some(addr) => {
                let target = format!("{name}:{}", addr.port());
                assert!(
                    targets.contains(&target),
                    "{name} serves /metrics on {addr} but Prometheus does not scrape {target}: {targets:?}"
                );
                assert!(
                    addr.ip().is_unspecified(),
                    "{name} must listen on 0.0.0.0 to be scraped from another container, not {addr}"
                );
                scraped += 1;
            }
            None if service["restart"] != "no" => unscraped_long_running.push(name.clone()),
            None => {}
        }
    }
    assert_eq!(
        scraped, 5,
        "the producer, two sinks, the API and the scheduler"
    );
    // Anything long-running without /metrics is a gap in the dashboard.
    assert!(
        unscraped_long_running.is_empty(),
        "{unscraped_long_running:?} run without /metrics"
    );
    // Prometheus loads the alert rules from where the compose file mounts them.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let mounts = strings(&services["prometheus"]["volumes"]);
    for rule_file in strings(&prometheus["rule_files"]) {
        assert!(
            mounts
                .iter()
                .any(|m| m.split(':').nth(1) == Some(rule_file.as_str())),
            "{rule_file} is not mounted into Prometheus: {mounts:?}"
        );
    }
}

/// Every series name the code exports: counters with `_total`, histograms with their
/// `_bucket`, `_sum` and `_count`, from the registries `/metrics` renders.
/// A labelled family renders nothing before its first sample, so each gets one here, through
/// the code's own handles (a new family missing below shows up as "not exported", never the
/// other way round).
fn exported_series() -> BTreeSet<String> {
    use etl::telemetry::metrics::{PartitionLabel, StageLabel, TestStatusLabel};
    let sink = Metrics::new();
    sink.sink.reject("not_json");
    sink.sink
        .lag
        .get_or_create(&PartitionLabel {
            topic: "transactions".into(),
            partition: 0,
        })
        .set(0);
    sink.sink
        .errors
        .get_or_create(&StageLabel { stage: "write" })
        .inc();
    let http = HttpMetrics::new();
    http.observe("GET", "/healthz", 200, 0.001);
    let models = ModelMetrics::new();
    models.record_no_build("busy");
    models
        .test_failures
        .get_or_create(&TestStatusLabel { status: "fail" })
        .inc();
    let texts = [
        sink.render(),
        http.render(),
        models.render(),
        ProduceMetrics::new().render(),
    ];
    let mut names = BTreeSet::new();
    for text in texts {
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

/// The `etl_…` metric names a PromQL expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\betl_[a-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn dashboard_and_alerts_use_only_metrics_the_code_exports() {
    let exported = exported_series();
    // Guard against a registry that renders nothing: the check below would pass vacuously.
    assert!(
        exported.contains("etl_sink_consumed_messages_total")
            && exported.contains("etl_models_run_duration_seconds_bucket"),
        "{exported:?}"
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/etl.json")).unwrap();
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    assert_eq!(datasource["url"], "http://prometheus:9090");
    let uid = datasource["uid"].as_str().unwrap();
    let mut charted = BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], uid, "panel {title}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], uid, "panel {title}");
            for name in metric_names(target["expr"].as_str().unwrap()) {
                assert!(
                    exported.contains(&name),
                    "panel {title} charts {name}, which no etl process exports"
                );
                charted.insert(name, title.to_string());
            }
        }
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "etl_produce_delivered_messages_total",
        "etl_sink_consumed_messages_total",
        "etl_sink_lag_messages",
        "etl_sink_end_to_end_latency_seconds_bucket",
        "etl_sink_rejected_messages_total",
        "etl_models_run_duration_seconds_bucket",
        "etl_models_test_failures_total",
    ] {
        assert!(charted.contains_key(needed), "no panel charts {needed}");
    }

    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut rules = 0;
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            for name in metric_names(rule["expr"].as_str().unwrap()) {
                assert!(
                    exported.contains(&name),
                    "alert {alert} uses {name}, which no etl process exports"
                );
            }
            // Every alert is explained in the operations guide.
            assert!(
                read("docs/OPERATIONS.md").contains(alert),
                "docs/OPERATIONS.md does not explain {alert}"
            );
            rules += 1;
        }
    }
    assert!(rules > 0);

    // Grafana finds the provisioning and the dashboards where the compose file mounts them.
    let provider = yaml("deploy/grafana/provisioning/dashboards/etl.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let services = compose_services();
    let mounts = strings(&services["grafana"]["volumes"]);
    for (host, container) in [
        ("./deploy/grafana/provisioning", "/etc/grafana/provisioning"),
        ("./deploy/grafana/dashboards", path),
    ] {
        assert!(
            mounts
                .iter()
                .any(|m| m.starts_with(&format!("{host}:{container}"))),
            "{host} is not mounted at {container}: {mounts:?}"
        );
        assert!(root().join(host).is_dir(), "{host} does not exist");
    }
}

#[test]
fn every_etl_command_in_the_k8s_manifests_parses() {
    let documents = k8s_documents();
    let containers = k8s_containers(&documents);
    assert!(containers.len() >= 5, "{}", containers.len());
    for (name, container) in containers {
        assert_eq!(container["image"], "etl", "{name} runs the etl image");
        assert!(
            container["command"].is_null(),
            "{name}: the image's ENTRYPOINT is etl; give args only"
        );
        parse_etl(&strings(&container["args"]));
    }
}

#[test]
fn k8s_sink_replicas_fit_the_stream_topics_partitions() {
    let documents = k8s_documents();
    let sink = k8s_kind(&documents, "Deployment", "etl-sink");
    let replicas = sink["spec"]["replicas"].as_i64().unwrap();
    assert_eq!(replicas, 3);
    // The partitions the setup Job's `etl topics create` makes, read by the CLI's own parser
    // (its default or the flag the Job passes).
    let setup = k8s_kind(&documents, "Job", "etl-setup");
    let creates = pod_spec(setup)["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|c| match parse_etl(&strings(&c["args"])).command {
            Command::Topics(etl::cli::topics::Command::Create(args)) => Some(args),
            _ => None,
        })
        .expect("the setup Job creates the topics");
    assert!(
        replicas <= i64::from(creates.topic_partitions),
        "{replicas} sinks for {} partitions: the extra ones would idle",
        creates.topic_partitions
    );
    // A rolling update must not add members beyond the partitions either.
    assert_eq!(
        sink["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0,
        "no surge"
    );
}

#[test]
fn k8s_grace_period_outlasts_the_sinks_stop() {
    let documents = k8s_documents();
    let sink = k8s_kind(&documents, "Deployment", "etl-sink");
    let grace = pod_spec(sink)["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let stop = longest_stop(&SinkOptions::default());
    assert!(
        grace > stop.as_secs(),
        "grace period {grace}s, but the sink may take {stop:?} to stop"
    );
    // The compose file's sinks get the same time.
    for (name, service) in compose_services() {
        if service["command"][0] == "kafka-to-postgres" {
            let period = service["stop_grace_period"].as_str().unwrap_or("10s");
            let period = etl::cli::produce::parse_duration(period).unwrap();
            assert!(
                period > stop,
                "{name}: stop_grace_period {period:?} ≤ {stop:?}"
            );
        }
    }
}

/// `(path, port)` of an HTTP probe, the port resolved through the container's named ports.
fn probe_target(container: &Value, probe: &str) -> (String, u16) {
    let get = &container[probe]["httpGet"];
    let path = get["path"]
        .as_str()
        .unwrap_or_else(|| panic!("{probe} is not an HTTP probe"))
        .to_string();
    let port = match &get["port"] {
        Value::Number(n) => n.as_u64().unwrap() as u16,
        Value::String(name) => container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}"))
            as u16,
        other => panic!("port {other:?}"),
    };
    (path, port)
}

#[tokio::test]
async fn k8s_probes_point_at_paths_and_ports_the_processes_serve() {
    let documents = k8s_documents();
    // The sink's endpoints, served as the sink serves them.
    let cancel = tokio_util::sync::CancellationToken::new();
    let (bound, server) = etl::http::ops::serve(
        "127.0.0.1:0".parse().unwrap(),
        etl::http::ops::router(Metrics::new(), Vec::new()),
        cancel.clone(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    // The API's routes, from its OpenAPI document.
    let api_paths: BTreeSet<String> = {
        use utoipa::OpenApi as _;
        let document = etl::http::openapi::ApiDoc::openapi();
        document.paths.paths.keys().cloned().collect()
    };

    for (name, container) in [("etl-sink", "sink"), ("etl-api", "api")] {
        let deployment = k8s_kind(&documents, "Deployment", name);
        let container = pod_spec(deployment)["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|c| c["name"] == container)
            .unwrap();
        let cli = parse_etl(&strings(&container["args"]));
        let served = metrics_addr(&cli).expect("the process serves HTTP");
        for probe in ["readinessProbe", "livenessProbe"] {
            let (path, port) = probe_target(container, probe);
            assert_eq!(
                port,
                served.port(),
                "{name} {probe} checks port {port}, the process listens on {served}"
            );
            if name == "etl-sink" {
                let status = client
                    .get(format!("http://{bound}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(
                    status, 200,
                    "{name} {probe}: the sink does not serve {path}"
                );
            } else {
                assert!(
                    api_paths.contains(&path),
                    "{name} {probe}: etl serve has no {path}: {api_paths:?}"
                );
            }
        }
    }
    cancel.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn the_model_scheduler_serves_its_metrics_and_probes() {
    let metrics = ModelMetrics::new();
    metrics.record_no_build("busy");
    let render = {
        let metrics = metrics.clone();
        std::sync::Arc::new(move || metrics.render())
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (bound, server) = etl::http::ops::serve(
        "127.0.0.1:0".parse().unwrap(),
        etl::http::ops::router_rendering(render, Vec::new()),
        cancel.clone(),
    )
    .await
    .unwrap();
    let text = reqwest::get(format!("http://{bound}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"etl_models_runs_total{outcome="busy"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE etl_models_run_duration_seconds histogram"),
        "{text}"
    );
    for path in ["/healthz", "/readyz"] {
        let status = reqwest::get(format!("http://{bound}{path}"))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
    cancel.cancel();
    server.await.unwrap();
}

/// Environment variables whose values are secrets: those whose values the CLI hides in its
/// help (DATABASE_URL with its password, KAFKA_PASSWORD, ETL_API_TOKEN …), the SASL user,
/// and anything named like a credential.
fn is_secret(name: &str, hidden: &BTreeSet<String>) -> bool {
    hidden.contains(name)
        || name == "KAFKA_USERNAME"
        || ["PASSWORD", "TOKEN", "SECRET", "CREDENTIAL"]
            .iter()
            .any(|word| name.contains(word))
}

fn hidden_env_vars() -> BTreeSet<String> {
    fn walk(command: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if arg.is_hide_env_values_set()
                && let Some(env) = arg.get_env()
            {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out
}

#[test]
fn k8s_secrets_are_referenced_never_embedded() {
    let hidden = hidden_env_vars();
    for expected in ["DATABASE_URL", "KAFKA_PASSWORD", "ETL_API_TOKEN"] {
        assert!(
            hidden.contains(expected),
            "{expected} not hidden: {hidden:?}"
        );
    }
    let documents = k8s_documents();
    for (file, document) in &documents {
        assert_ne!(
            document["kind"], "Secret",
            "{file} embeds a Secret: reference it, create it outside the repository"
        );
        if document["kind"] == "ConfigMap" {
            for key in document["data"].as_mapping().unwrap().keys() {
                let key = key.as_str().unwrap();
                assert!(!is_secret(key, &hidden), "{file}: {key} in a ConfigMap");
            }
        }
    }
    let mut referenced = 0;
    for (name, container) in k8s_containers(&documents) {
        for var in container["env"].as_sequence().into_iter().flatten() {
            let var_name = var["name"].as_str().unwrap();
            if !is_secret(var_name, &hidden) {
                continue;
            }
            assert!(
                var["value"].is_null(),
                "{name}: {var_name} has its value written down"
            );
            assert!(
                var["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "{name}: {var_name} must come from a secretKeyRef"
            );
            referenced += 1;
        }
        // envFrom may only bring ConfigMaps: a secretRef would hide which keys are secrets.
        for source in container["envFrom"].as_sequence().into_iter().flatten() {
            assert!(
                source["configMapRef"].is_mapping(),
                "{name}: envFrom {source:?}"
            );
        }
        // Whoever connects to PostgreSQL gets DATABASE_URL from the Secret.
        let vars: Vec<&str> = container["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(vars.contains(&"DATABASE_URL"), "{name} has no DATABASE_URL");
    }
    assert!(referenced >= 5, "{referenced}");
}

#[test]
fn k8s_cronjob_schedules_are_valid_and_do_not_overlap() {
    let documents = k8s_documents();
    let cronjobs: Vec<&Value> = documents
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "CronJob")
        .collect();
    assert!(!cronjobs.is_empty());
    let mut scopes = BTreeSet::new();
    for cronjob in cronjobs {
        let name = cronjob["metadata"]["name"].as_str().unwrap();
        let schedule = cronjob["spec"]["schedule"].as_str().unwrap();
        // Kubernetes takes the five standard fields; croner (what --cron uses) also takes six.
        assert_eq!(
            schedule.split_whitespace().count(),
            5,
            "{name}: `{schedule}` is not a five-field cron expression"
        );
        etl::models::Schedule::cron(schedule)
            .unwrap_or_else(|err| panic!("{name}: `{schedule}`: {err}"));
        assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid", "{name}");
        let container = &pod_spec(cronjob)["containers"][0];
        let Command::BuildModels(args) = parse_etl(&strings(&container["args"])).command else {
            panic!("{name} does not run build-models");
        };
        assert!(
            args.every.is_none() && args.cron.is_none(),
            "{name}: the CronJob is the schedule; the process builds once"
        );
        scopes.insert(format!(
            "{:?}",
            args.test_scope.expect("an explicit --test-scope")
        ));
    }
    // Frequent builds test what changed, a daily one everything.
    assert_eq!(
        scopes,
        BTreeSet::from(["All".to_string(), "Changed".to_string()])
    );
}

/// The file the tests read must exist where the docs say.
#[test]
fn operations_guide_and_readme_cover_deployment() {
    let guide = read("docs/OPERATIONS.md");
    for topic in [
        "etl topics lag",
        "etl_sink_lag_messages",
        "etl dlq replay",
        "secretKeyRef",
        "--full-tests-every",
    ] {
        assert!(
            guide.contains(topic),
            "docs/OPERATIONS.md does not mention {topic}"
        );
    }
    let readme = read("README.md");
    for topic in [
        "sasl_ssl",
        "sslmode",
        "--test-scope changed",
        "docs/OPERATIONS.md",
    ] {
        assert!(readme.contains(topic), "README.md does not mention {topic}");
    }
    assert!(Path::new(&root().join("deploy/k8s/kustomization.yaml")).is_file());
}
