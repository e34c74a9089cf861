//! `etl bench plan`: how long discovery, rendering, the DAG and selection take for a generated
//! project of N models (no database involved).
//!
//! The project looks like ours, scaled: a sources.yml over the landing tables, a seed, staging
//! views on sources (10 %), intermediate tables (40 %) and marts (50 %, some incremental with
//! an `is_incremental()` block) that ref 1–4 earlier models, tags, vars, and a schema.yml with
//! not_null/unique on every model plus accepted_values and relationships tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::models::{BuildOptions, ModelError, plan};

#[derive(Debug, Clone)]
pub struct PlanBenchOptions {
    pub models: usize,
    /// Timed plans; the median is reported.
    pub runs: usize,
    pub seed: u64,
    /// Where the project is written; a fresh temporary folder when none.
    pub dir: Option<PathBuf>,
}

impl Default for PlanBenchOptions {
    fn default() -> Self {
        Self {
            models: 100,
            runs: 15,
            seed: 42,
            dir: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlanBenchReport {
    pub models: usize,
    pub nodes: usize,
    pub runs: usize,
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl std::fmt::Display for PlanBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plan of {} models ({} nodes with seeds and tests): median {:.1} ms over {} runs \
             (min {:.1} ms, max {:.1} ms); target ≤ 200 ms",
            self.models,
            self.nodes,
            self.median.as_secs_f64() * 1e3,
            self.runs,
            self.min.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
        )
    }
}

/// Generates the project, plans it `runs` times (after one warm-up) and reports the times.
pub fn run(options: &PlanBenchOptions) -> Result<PlanBenchReport, ModelError> {
    let dir = options.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("etl-bench-plan-{}", uuid::Uuid::new_v4().simple()))
    });
    let result = (|| {
        generate_project(&dir, options.models, options.seed).map_err(|source| {
            ModelError::Write {
                path: dir.clone(),
                source,
            }
        })?;
        let build = BuildOptions {
            models_dir: dir.clone(),
            ..BuildOptions::default()
        };
        let nodes = plan(&build)?.order.len();
        let mut times = Vec::with_capacity(options.runs);
        for _ in 0..options.runs.max(1) {
            let clock = Instant::now();
            let planned = plan(&build)?;
            times.push(clock.elapsed());
            std::hint::black_box(planned);
        }
        times.sort();
        Ok(PlanBenchReport {
            models: options.models,
            nodes,
            runs: times.len(),
            median: times[times.len() / 2],
            min: times[0],
            max: times[times.len() - 1],
        })
    })();
    if options.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Writes a project of `models` models under `dir` (see the module documentation).
pub fn generate_project(dir: &Path, models: usize, seed: u64) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for sub in ["staging", "intermediate", "marts", "seeds", "tests"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(
        dir.join("sources.yml"),
        "version: 2\nsources:\n  - name: raw\n    schema: public\n    tables:\n\
         \x20     - name: transactions_sink\n      - name: transactions_batch_raw\n      - name: users_raw\n",
    )?;
    std::fs::write(
        dir.join("seeds/currency_rates.csv"),
        "currency_code,rate_to_usd\nUSD,1.0\nEUR,1.08\nGBP,1.27\nCAD,0.73\nAUD,0.66\n",
    )?;
    let staging = (models / 10).max(1);
    let intermediate = models * 4 / 10;
    let mut names: Vec<String> = Vec::with_capacity(models);
    let mut schema = String::from("version: 2\nmodels:\n");
    let tables = ["transactions_sink", "transactions_batch_raw", "users_raw"];
    for i in 0..models {
        let (folder, name) = if i < staging {
            ("staging", format!("stg_{i:03}"))
        } else if i < staging + intermediate {
            ("intermediate", format!("int_{i:03}"))
        } else {
            ("marts", format!("mart_{i:03}"))
        };
        let mut sql = String::new();
        if i < staging {
            let table = tables[i % tables.len()];
            let _ = write!(
                sql,
                "{{{{ config(materialized='view', tags=['staging']) }}}}\n\
                 select tx_id as id, user_id, amount, currency, merchant, category\n\
                 from {{{{ source('raw', '{table}') }}}}\n\
                 where amount <> 0\n"
            );
        } else {
            let parents = rng.random_range(1..=4usize.min(names.len()));
            let mut chosen: Vec<&String> = Vec::with_capacity(parents);
            while chosen.len() < parents {
                let pick = &names[rng.random_range(0..names.len())];
                if !chosen.contains(&pick) {
                    chosen.push(pick);
                }
            }
            let incremental = folder == "marts" && rng.random_range(0..3) == 0;
            let config = if incremental {
                "{{ config(materialized='incremental', unique_key='id', tags=['marts', 'hourly']) }}"
            } else if folder == "marts" {
                "{{ config(materialized='table', tags=['marts']) }}"
            } else {
                "{{ config(materialized='table') }}"
            };
            let _ = writeln!(sql, "{config}\n-- generated model {name}");
            let _ = writeln!(
                sql,
                "with base as (\n  select p0.id, p0.user_id, p0.amount, p0.currency"
            );
            let _ = writeln!(sql, "  from {{{{ ref('{}') }}}} as p0", chosen[0]);
            for (k, parent) in chosen.iter().enumerate().skip(1) {
                let _ = writeln!(
                    sql,
                    "  left join {{{{ ref('{parent}') }}}} as p{k} on p{k}.id = p0.id"
                );
            }
            let _ = writeln!(
                sql,
                "  where p0.amount > {{{{ var('min_amount', 0) }}}}\n)\n\
                 select b.id, b.user_id, b.amount * r.rate_to_usd as amount_usd, b.currency\n\
                 from base as b\njoin {{{{ ref('currency_rates') }}}} as r on r.currency_code = b.currency"
            );
            if incremental {
                let _ = writeln!(
                    sql,
                    "{{% if is_incremental() %}}\nwhere b.id not in (select id from {{{{ this }}}})\n{{% endif %}}"
                );
            }
        }
        std::fs::write(dir.join(folder).join(format!("{name}.sql")), sql)?;
        let _ = write!(
            schema,
            "  - name: {name}\n    columns:\n      - name: id\n        tests: [not_null, unique]\n"
        );
        if i % 4 == 0 {
            let _ = write!(
                schema,
                "      - name: currency\n        tests:\n          - accepted_values:\n\
                 \x20             values: [USD, EUR, GBP, CAD, AUD]\n              config: {{severity: warn}}\n"
            );
        }
        if i >= staging && i % 5 == 0 {
            let _ = write!(
                schema,
                "      - name: user_id\n        tests:\n          - relationships:\n\
                 \x20             to: ref('{}')\n              field: user_id\n",
                names[0]
            );
        }
        names.push(name);
    }
    std::fs::write(dir.join("schema.yml"), schema)?;
    std::fs::write(
        dir.join("tests/no_negative_usd.sql"),
        format!(
            "select * from {{{{ ref('{}') }}}} where amount_usd < 0\n",
            names.last().cloned().unwrap_or_default()
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_project_plans() {
        let report = run(&PlanBenchOptions {
            models: 30,
            runs: 1,
            ..PlanBenchOptions::default()
        })
        .unwrap();
        // 30 models, 1 seed, not_null and unique on each model (60), accepted_values on every
        // 4th (i = 0, 4 … 28: 8), relationships on every 5th past the 3 staging models
        // (i = 5 … 25: 5) and the singular test.
        assert_eq!(report.nodes, 30 + 1 + 60 + 8 + 5 + 1, "{report}");
    }
}
