//! The project loader of `build-models` (`plan`: read the folder, parse the YAML, render every
//! template, order the DAG) on one fuzzed model file and one fuzzed `schema.yml`, beside a fixed
//! model `base` to `ref`. The input is the model's text, a line `--- schema.yml ---`, then the YAML.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use etl::models::{BuildOptions, plan};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &str = "\n--- schema.yml ---\n";

/// A models folder of this process's own, written once and then overwritten per input.
fn models_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("etl-fuzz-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz models folder");
        std::fs::write(dir.join("base.sql"), "select 1 as id, 'a' as name\n")
            .expect("write base.sql");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (model, yaml) = text.split_once(SEPARATOR).unwrap_or((text, ""));
    let dir = models_dir();
    std::fs::write(dir.join("fuzzed.sql"), model).expect("write the model");
    std::fs::write(dir.join("schema.yml"), yaml).expect("write schema.yml");
    let options = BuildOptions {
        models_dir: dir.clone(),
        ..BuildOptions::default()
    };
    // Errors are answers; only a panic, a hang or a runaway allocation is a find.
    let _ = plan(&options);
});
