//! `kafka-docker-compose.yml` cannot run on machines without a Docker engine, so this test keeps
//! it honest: the services, ports and variable names must match what the local path uses.

use std::path::Path;

use serde_yaml::Value;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn services_ports_and_variables_match_the_local_path() {
    let compose: Value = serde_yaml::from_str(&read("kafka-docker-compose.yml")).unwrap();
    let services = &compose["services"];

    let kafka = &services["kafka"];
    assert!(
        kafka["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:")
    );
    assert_eq!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft, no ZooKeeper"
    );
    assert_eq!(
        strings(&kafka["ports"]),
        ["127.0.0.1:${KAFKA_PORT:-9092}:9092"]
    );
    assert!(
        kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
            .as_str()
            .unwrap()
            .contains("${KAFKA_HOST:-127.0.0.1}:${KAFKA_PORT:-9092}")
    );

    let postgres = &services["postgres"];
    assert!(
        postgres["image"]
            .as_str()
            .unwrap()
            .starts_with("postgres:15")
    );
    assert_eq!(
        strings(&postgres["ports"]),
        ["127.0.0.1:${POSTGRES_PORT:-5432}:5432"]
    );
    assert_eq!(
        postgres["environment"]["POSTGRES_USER"],
        "${POSTGRES_USER:-postgres}"
    );
    assert_eq!(
        postgres["environment"]["POSTGRES_DB"],
        "${POSTGRES_DB:-etl}"
    );

    let kafdrop = &services["kafdrop"];
    assert_eq!(
        strings(&kafdrop["ports"]),
        ["127.0.0.1:${KAFDROP_PORT:-9000}:9000"]
    );
    assert_eq!(kafdrop["environment"]["KAFKA_BROKERCONNECT"], "kafka:29092");

    // The local path reads the same names with the same defaults.
    let script = read("scripts/services.sh");
    for default in [
        "POSTGRES_PORT=${POSTGRES_PORT:-5432}",
        "POSTGRES_USER=${POSTGRES_USER:-postgres}",
        "POSTGRES_DB=${POSTGRES_DB:-etl}",
        "KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}",
        "KAFKA_PORT=${KAFKA_PORT:-9092}",
        "KAFDROP_PORT=${KAFDROP_PORT:-9000}",
    ] {
        assert!(
            script.contains(default),
            "scripts/services.sh lacks {default}"
        );
    }
    // And every variable the compose file reads is documented for users.
    let example = read(".env.example");
    for name in [
        "POSTGRES_PORT",
        "POSTGRES_USER",
        "POSTGRES_DB",
        "KAFKA_HOST",
        "KAFKA_PORT",
        "KAFDROP_PORT",
    ] {
        assert!(example.contains(name), ".env.example lacks {name}");
    }
}
