//! The shape of `src/` (issue 17): the modules' import graph and the files' lengths.
//!
//! Each module is a file under `src/` (`a/mod.rs` is `a`); it depends on every module
//! it names by a `crate::...` path, a `use crate::{...}` group or a `super::...` path,
//! outside its `#[cfg(test)]` tests and its comments. A circle is a set of modules that reach each other.
//!
//! The graph has no circles (the test fails on one, naming a shortest circle), and no
//! file is longer than [`MAX_LINES`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The longest a file under `src/` may be.
const MAX_LINES: usize = 800;

/// `src/` relative to the package.
fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, relative to the package root (`src/...`).
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under `src/` is (`backup/mod.rs` -> `backup`, `lib.rs` -> `lib`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") && parts.len() > 1 {
        parts.pop();
    }
    parts.join("::")
}

/// The source without its `#[cfg(test)]` modules (tests may reach anywhere).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // Skip the item that follows: up to its matching closing brace, or its `;`.
        let open = after.find('{');
        let semi = after.find(';');
        match (open, semi) {
            (Some(o), s) if s.is_none_or(|s| o < s) => {
                let mut depth = 0;
                let mut end = after.len();
                for (i, c) in after[o..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = o + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            (_, Some(s)) => rest = &after[s + 1..],
            _ => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// The longest known module that `path` (`a::b::c`) starts with.
fn resolve(path: &str, known: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| known.contains(m))
}

/// Every module's dependencies on other modules (never on itself or its ancestors).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeMap<String, String> = files
        .iter()
        .map(|f| (module_of(f), std::fs::read_to_string(f).unwrap()))
        .collect();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let path = regex::Regex::new(r"\bcrate::((?:\w+::)*\w+)").unwrap();
    let group = regex::Regex::new(r"(?s)use crate::\{([^;]*)\};").unwrap();
    let item = regex::Regex::new(r"(?:^|[{,\s])((?:\w+::)*\w+)").unwrap();
    let sup = regex::Regex::new(r"\bsuper::((?:\w+::)*\w+)").unwrap();
    let mut graph = BTreeMap::new();
    for (module, text) in &modules {
        // Comments name modules without depending on them.
        let text: String = without_tests(text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut targets = Vec::new();
        targets.extend(path.captures_iter(&text).map(|c| c[1].to_string()));
        for g in group.captures_iter(&text) {
            targets.extend(item.captures_iter(&g[1]).map(|c| c[1].to_string()));
        }
        // `super::x` inside `a::b` is `a::x` (a module file's `super` is its parent).
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        targets.extend(sup.captures_iter(&text).map(|c| match parent {
            "" => c[1].to_string(),
            p => format!("{p}::{}", &c[1]),
        }));
        let deps: BTreeSet<String> = targets
            .iter()
            .filter_map(|t| resolve(t, &known))
            .filter(|t| t != module && !module.starts_with(&format!("{t}::")))
            .collect();
        graph.insert(module.clone(), deps);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// A shortest circle through `from` inside `component`, as `a -> b -> a`.
fn a_circle_through(
    graph: &BTreeMap<String, BTreeSet<String>>,
    component: &BTreeSet<String>,
    from: &str,
) -> String {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        for w in graph[v].iter().filter(|w| component.contains(*w)) {
            if w == from {
                let mut path = vec![from.to_string()];
                let mut at = v;
                while at != from {
                    path.push(at.to_string());
                    at = came_from[at];
                }
                path.push(from.to_string());
                let n = path.len();
                path[1..n - 1].reverse();
                return path.join(" -> ");
            }
            if !came_from.contains_key(w.as_str()) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("{from} is in a circle")
}

#[test]
fn the_import_graph_has_no_circles() {
    let graph = graph();
    let problems: Vec<String> = circles(&graph)
        .iter()
        .map(|component| {
            let first = component.first().expect("a circle has modules");
            format!(
                "an import circle of {} modules: {}",
                component.len(),
                a_circle_through(&graph, component, first)
            )
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{}\n(a module may only use the layers below it: see docs/development.md)",
        problems.join("\n")
    );
}

#[test]
fn no_file_under_src_is_longer_than_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| {
                format!(
                    "{} has {lines} lines, more than {MAX_LINES}: split it by job",
                    f.strip_prefix(root).unwrap().display()
                )
            })
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The checker itself: a made-up graph with one circle and one module outside it.
#[test]
fn the_circle_finder_names_a_shortest_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c", "d"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let found = circles(&graph);
    assert_eq!(found.len(), 1);
    let names: Vec<&str> = found[0].iter().map(String::as_str).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(a_circle_through(&graph, &found[0], "b"), "b -> c -> a -> b");
    let text = "use crate::x;\n#[cfg(test)]\nmod tests { use crate::y; fn f() { {} } }\nfn g() {}";
    assert_eq!(without_tests(text), "use crate::x;\n\nfn g() {}");
}

/// The command layer is on top: only the crate root reaches `commands`, and only the
/// commands (and `serve`, a command that runs until stopped) reach `report`.
#[test]
fn the_command_layer_is_on_top() {
    let graph = graph();
    let mut problems = Vec::new();
    for (module, deps) in &graph {
        let is_command =
            module == "lib" || module == "commands" || module.starts_with("commands::");
        for dep in deps {
            let up = dep == "commands" || dep.starts_with("commands::");
            let report = dep == "report" || dep.starts_with("report::");
            let reports_allowed = is_command || module == "serve" || module.starts_with("report");
            if (up && !is_command) || (report && !reports_allowed) {
                problems.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "modules below the command layer reach up into it: {problems:?}"
    );
    // The layer exists: a file per command.
    let commands = graph.keys().filter(|m| m.starts_with("commands::")).count();
    assert!(commands >= 15, "{commands} command files");
}

/// Jobs and the world never print: a command prints what they return through the
/// `Printer`, and their progress goes through the `Progress` the command passes.
/// Allowed: the command layer, `report`, `printer`, `prompt`, `serve` (its own log) and
/// the signal handler in `process` (a note the moment a signal arrives).
#[test]
fn only_the_command_layer_prints() {
    let allowed = |m: &str| {
        [
            "lib", "commands", "report", "printer", "prompt", "serve", "process",
        ]
        .iter()
        .any(|a| m == *a || m.starts_with(&format!("{a}::")))
    };
    let printing = regex::Regex::new(
        r"\b(println!|print!|eprintln!|eprint!|errln!|say!|tell!)|io::stdout\(\)|io::stderr\(\)\s*,",
    )
    .unwrap();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(file);
        if allowed(&module) || file.ends_with("tests.rs") {
            continue;
        }
        let text = without_tests(&std::fs::read_to_string(file).unwrap());
        for (n, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with("//") && printing.is_match(line) {
                problems.push(format!("{module}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "printing below the command layer: {problems:#?}"
    );
}
