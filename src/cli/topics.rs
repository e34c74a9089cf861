//! `etl topics create | delete | list | tail | lag`

use std::io::Write;
use std::time::Duration;

use clap::Subcommand;

use crate::kafka::admin::{self, CreateOutcome, TopicSpec};
use crate::kafka::lag::group_lag;
use crate::kafka::tail::{TailOptions, TailedMessage, tail};
use crate::shutdown;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create topics; without names, the topics etl uses (stream, dead letters, anomalies).
    /// Existing topics are left as they are, so this is safe to repeat.
    Create(CreateArgs),
    /// Delete topics and every message in them (a topic that does not exist is no error).
    Delete(DeleteArgs),
    /// List topics with their partitions, leaders and offsets.
    List(ListArgs),
    /// Print messages (key, headers, value): the newest ones, or from the beginning.
    Tail(TailArgs),
    /// Show how far a consumer group's committed offsets trail each partition's end.
    Lag(LagArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Topics to create. Without any, creates --topic, --dlq-topic and --anomalies-topic.
    pub names: Vec<String>,
    /// Partitions of each named topic
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// The transaction stream topic
    #[arg(long, env = "KAFKA_TOPIC", default_value = crate::kafka::config::DEFAULT_TOPIC)]
    pub topic: String,
    /// Partitions of the stream topic
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_partitions: i32,
    /// Dead-letter topic for invalid messages
    #[arg(long, env = "KAFKA_DLQ_TOPIC", default_value = crate::kafka::config::DEFAULT_DLQ_TOPIC)]
    pub dlq_topic: String,
    /// Topic the anomaly relay publishes to
    #[arg(long, env = "KAFKA_ANOMALIES_TOPIC", default_value = crate::kafka::config::DEFAULT_ANOMALIES_TOPIC)]
    pub anomalies_topic: String,
    /// Copies of each partition: 1 for a single local broker; managed clusters usually want 3
    #[arg(long, env = "KAFKA_TOPIC_REPLICATION", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub replication_factor: i32,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Topics to delete
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this topic
    pub topic: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Topic to read
    #[arg(env = "KAFKA_TOPIC", default_value = crate::kafka::config::DEFAULT_TOPIC)]
    pub topic: String,
    /// Start at the oldest retained message instead of the newest
    #[arg(long)]
    pub from_beginning: bool,
    /// How many messages: the newest N (default 10), or the first N with --from-beginning
    #[arg(long, short = 'n')]
    pub max: Option<usize>,
    /// Keep printing new messages until Ctrl-C
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object per message instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LagArgs {
    /// Consumer group
    #[arg(long, env = "KAFKA_GROUP", default_value = crate::kafka::config::DEFAULT_GROUP)]
    pub group: String,
    /// Only this topic (shows its partitions even where the group never committed)
    #[arg(long)]
    pub topic: Option<String>,
}

impl Command {
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let kafka = global.kafka();
        match self {
            Command::Create(args) => {
                let specs = args.specs();
                for (topic, outcome) in admin::create_topics(&kafka, &specs).await? {
                    let what = match outcome {
                        CreateOutcome::Created => "created",
                        CreateOutcome::AlreadyExisted => "exists",
                    };
                    println!("{topic}: {what}");
                }
            }
            Command::Delete(args) => {
                for topic in &args.names {
                    admin::delete_topic(&kafka, topic).await?;
                    println!("{topic}: deleted");
                }
            }
            Command::List(args) => {
                let topics = admin::describe_topics(&kafka, args.topic.as_deref()).await?;
                println!(
                    "{:<32} {:>9} {:>6} {:>12} {:>12} {:>12}",
                    "TOPIC", "PARTITION", "LEADER", "LOW", "HIGH", "MESSAGES"
                );
                for t in &topics {
                    for p in &t.partitions {
                        println!(
                            "{:<32} {:>9} {:>6} {:>12} {:>12} {:>12}",
                            t.name,
                            p.id,
                            p.leader,
                            p.low,
                            p.high,
                            p.high - p.low
                        );
                    }
                }
                if topics.is_empty() {
                    println!("(no topics; `etl topics create` creates the ones etl uses)");
                }
            }
            Command::Tail(args) => {
                let options = TailOptions {
                    topic: args.topic,
                    from_beginning: args.from_beginning,
                    max: args.max,
                    follow: args.follow,
                    idle_timeout: Duration::from_secs(15),
                };
                let json = args.json;
                let mut stdout = std::io::stdout();
                let mut print = |m: &TailedMessage| {
                    if json {
                        writeln!(stdout, "{}", m.render_json())
                    } else {
                        writeln!(stdout, "{}", m.render_text())
                    }
                };
                let emitted = tail(&kafka, &options, shutdown::on_signal(), &mut print).await?;
                if emitted == 0 {
                    eprintln!("{}: no messages", options.topic);
                }
            }
            Command::Lag(args) => {
                let rows = group_lag(&kafka, &args.group, args.topic.as_deref()).await?;
                println!(
                    "{:<20} {:<32} {:>9} {:>12} {:>12} {:>10}",
                    "GROUP", "TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"
                );
                let dash = || "-".to_string();
                for r in &rows {
                    println!(
                        "{:<20} {:<32} {:>9} {:>12} {:>12} {:>10}",
                        args.group,
                        r.topic,
                        r.partition,
                        r.committed.map_or_else(dash, |c| c.to_string()),
                        r.high,
                        r.lag().map_or_else(dash, |l| l.to_string())
                    );
                }
                let total: i64 = rows.iter().filter_map(|r| r.lag()).sum();
                println!("total lag: {total}");
            }
        }
        Ok(())
    }
}

impl CreateArgs {
    fn specs(&self) -> Vec<TopicSpec> {
        let specs = if self.names.is_empty() {
            vec![
                TopicSpec::new(&self.topic, self.topic_partitions),
                TopicSpec::new(&self.dlq_topic, 1),
                TopicSpec::new(&self.anomalies_topic, 1),
            ]
        } else {
            self.names
                .iter()
                .map(|n| TopicSpec::new(n, self.partitions))
                .collect()
        };
        specs
            .into_iter()
            .map(|s| s.with_replication(self.replication_factor))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command as Top};

    fn create(args: &[&str]) -> super::CreateArgs {
        let cli = Cli::try_parse_from(["etl", "topics", "create"].iter().chain(args)).unwrap();
        let Top::Topics(super::Command::Create(args)) = cli.command else {
            unreachable!()
        };
        args
    }

    #[test]
    fn every_topic_gets_the_replication_factor_asked_for() {
        let specs = create(&["--replication-factor", "3"]).specs();
        assert_eq!(specs.len(), 3);
        assert!(specs.iter().all(|s| s.replication == 3), "{specs:?}");
        let named = create(&["a", "b", "--replication-factor", "2"]).specs();
        assert!(named.iter().all(|s| s.replication == 2), "{named:?}");
        // The single local broker takes nothing else.
        assert!(create(&[]).specs().iter().all(|s| s.replication == 1));
    }
}
