//! docs/configuration.md cannot drift from the config types: every field of every
//! section struct is documented there.

#[test]
fn every_key_is_documented() {
    let source = [
        include_str!("mod.rs"),
        include_str!("serve.rs"),
        include_str!("git.rs"),
        include_str!("health.rs"),
        include_str!("runtime.rs"),
        include_str!("database.rs"),
        include_str!("backup.rs"),
        include_str!("proxy.rs"),
    ]
    .concat();
    let docs = include_str!("../../docs/configuration.md");
    let mut missing = Vec::new();
    let mut checked = 0;
    let mut in_struct = false;
    for line in source.lines() {
        let t = line.trim();
        if t.starts_with("pub struct ")
            && t.ends_with('{')
            && (t.contains("Config ") || t.contains("Config{"))
        {
            in_struct = !t.starts_with("pub struct Config ");
            continue;
        }
        if in_struct && t == "}" {
            in_struct = false;
            continue;
        }
        if in_struct {
            if let Some(field) = t.strip_prefix("pub ").and_then(|f| f.split(':').next()) {
                checked += 1;
                let documented = docs.contains(&format!("`{field}`"))
                    || docs.contains(&format!(".{field}`"))
                    || docs.contains(&format!("[[health.{field}]]"));
                if !documented {
                    missing.push(field.to_string());
                }
            }
        }
    }
    assert!(checked > 60, "the struct scan found only {checked} fields");
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
}
