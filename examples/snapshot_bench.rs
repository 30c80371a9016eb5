//! Times stablehand's snapshot primitives through the library, for bench/restore.sh:
//! `Database::snapshot` (CREATE DATABASE <db>__snap_<id> TEMPLATE <db>, PostgreSQL's
//! default strategy) and `Database::swap_to_snapshot` (the rename swap), then drops the
//! replaced database again. The live database comes from DATABASE_URL (direct mode).
//!
//!     DATABASE_URL=postgresql://postgres@127.0.0.1:5432/app \
//!         target/release/examples/snapshot_bench [SNAPSHOT_ID]
//!
//! Prints one JSON line: {"snapshot_ms":..,"swap_ms":..,"drop_ms":..,"snapshot":..,"kept":..}.
//! snapshot_ms is the whole `snapshot()` call (its session check plus the CREATE
//! DATABASE); swap_ms is the live database's unavailable window as `swap_to_snapshot`
//! reports it. Nobody may be connected to the live database (snapshot refuses otherwise).
//! Afterwards the snapshot is the live database and the old one is gone.

use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let id = std::env::args().nth(1).unwrap_or_else(|| "bench1".into());
    let text = "[database]\nmode = \"direct\"\nurl_env = \"DATABASE_URL\"\n";
    let config = stablehand::config::parse(text, Path::new("bench.toml"))?;
    let loaded = stablehand::config::Loaded {
        config,
        path: "bench.toml".into(),
        app_dir: std::env::current_dir()?,
    };
    let db = stablehand::db::Database::from_config(&loaded)?;

    let t = Instant::now();
    let snapshot = db.snapshot(&id)?;
    let snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;

    let (kept, swap) = match db.swap_to_snapshot(&snapshot) {
        Ok(v) => v,
        Err(e) => {
            // Leave the cluster as we found it: the live database is untouched here.
            let _ = db.drop_snapshot(&snapshot);
            return Err(e);
        }
    };
    let swap_ms = swap.as_secs_f64() * 1000.0;

    let t = Instant::now();
    db.drop_side_database(&kept)?;
    let drop_ms = t.elapsed().as_secs_f64() * 1000.0;

    println!(
        "{}",
        serde_json::json!({
            "snapshot_ms": (snapshot_ms * 10.0).round() / 10.0,
            "swap_ms": (swap_ms * 10.0).round() / 10.0,
            "drop_ms": (drop_ms * 10.0).round() / 10.0,
            "snapshot": snapshot,
            "kept": kept,
        })
    );
    Ok(())
}
