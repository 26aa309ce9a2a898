//! The module graph of src/ has no cycles between files: a file that imports another (a `use
//! crate::…`, `use super::…` or an inline `crate::…` path) never gets imported back, directly or
//! through others. A cycle means two files that can only be understood together; the engine and
//! the kinds stay layered (docs/architecture.md, "Layout"). Run with `cargo nextest run --test
//! module_graph`; a failure names the files of each cycle and the names that tie them.
//!
//! The reading is textual, like a reviewer's: paths are resolved to the longest existing module
//! file (`crate::jobs::postgres::PostgresJob` → src/jobs/postgres/mod.rs); a file's own child
//! modules (`mod x;`) are containment, not imports. Tests (`#[cfg(test)]` modules at the end of a
//! file) are left out: a test may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every .rs file under src/, relative, sorted.
fn files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p.strip_prefix(src()).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &mut out);
    out.sort();
    out
}

/// The module path of a file: src/jobs/postgres/mod.rs → ["jobs", "postgres"].
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The file of the longest prefix of `path` that is a module.
fn file_of(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]).cloned())
}

/// `a::{b, c::{d, e}}` → ["a::b", "a::c::d", "a::c::e"].
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else { return vec![tree.to_string()] };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items.into_iter().filter(|i| !i.trim().is_empty()).flat_map(|i| expand(&format!("{prefix}{}", i.trim()))).collect()
}

/// The code of a file without comments and without its trailing test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The module paths a file refers to, absolute (["crate", …] resolved).
fn references(file: &Path, text: &str) -> Vec<Vec<String>> {
    let here = module_of(file);
    // `super` of a mod.rs/lib.rs is its parent; of x.rs the module containing x
    let resolve = |path: &str| -> Option<Vec<String>> {
        let mut parts: Vec<&str> = path.split("::").map(str::trim).filter(|p| !p.is_empty()).collect();
        let mut base: Vec<String> = match parts.first() {
            Some(&"crate") => {
                parts.remove(0);
                Vec::new()
            }
            Some(&"super") => {
                let mut b = here.clone();
                while parts.first() == Some(&"super") {
                    parts.remove(0);
                    b.pop();
                }
                b
            }
            Some(&"self") => {
                parts.remove(0);
                here.clone()
            }
            _ => return None,
        };
        base.extend(parts.iter().map(|p| p.split_whitespace().next().unwrap_or("").to_string()));
        Some(base)
    };
    let code = code(text);
    let mut out = Vec::new();
    // use statements (may span lines)
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("use ").or_else(|| stmt.split_once(" use ").map(|(_, r)| r)) else {
            continue;
        };
        for p in expand(rest) {
            if let Some(r) = resolve(p.split(" as ").next().unwrap_or(&p)) {
                out.push(r);
            }
        }
    }
    // inline paths: crate::a::b, super::a
    for start in ["crate::", "super::"] {
        let mut s = code.as_str();
        while let Some(i) = s.find(start) {
            let before = s[..i].chars().last();
            let tail = &s[i..];
            let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                && let Some(r) = resolve(tail[..end].trim_end_matches(':'))
            {
                out.push(r);
            }
            s = &tail[end.max(1)..];
        }
    }
    out
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(v: &'a PathBuf, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, s);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, &mut s);
        }
    }
    s.out
}

fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let files = files();
    let modules: BTreeMap<Vec<String>, PathBuf> = files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut graph = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(src().join(f)).unwrap();
        let here = module_of(f);
        let deps: BTreeSet<PathBuf> = references(f, &text)
            .into_iter()
            // a file's own children are containment; its own path is itself
            .filter(|r| {
                !(r.len() > here.len()
                    && r.starts_with(&here)
                    && r.len() == here.len() + 1
                    && text.contains(&format!("mod {};", r[here.len()])))
            })
            .filter_map(|r| file_of(&r, &modules))
            .filter(|d| d != f && !matches!(d.to_str(), Some("lib.rs" | "main.rs")))
            .collect();
        graph.insert(f.clone(), deps);
    }
    graph
}

#[test]
fn no_import_cycles_between_files() {
    let graph = graph();
    assert!(graph.len() > 50, "read {} files from src/", graph.len());
    let found = cycles(&graph);
    let show: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("    {} -> {}", a.display(), b.display()))
                })
                .collect();
            format!("cycle of {} files:\n{}", c.len(), edges.join("\n"))
        })
        .collect();
    assert!(found.is_empty(), "import cycles between files in src/:\n{}", show.join("\n"));
}

#[test]
fn the_reader_sees_a_cycle() {
    // the check can fail: two files importing each other are one cycle
    let g: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::from([
        ("a.rs".into(), BTreeSet::from(["b.rs".into()])),
        ("b.rs".into(), BTreeSet::from(["a.rs".into()])),
        ("c.rs".into(), BTreeSet::from(["a.rs".into()])),
    ]);
    assert_eq!(cycles(&g), vec![vec![PathBuf::from("a.rs"), PathBuf::from("b.rs")]]);
    assert_eq!(expand("crate::a::{b, c::{d, e as f}}"), ["crate::a::b", "crate::a::c::d", "crate::a::c::e as f"]);
    // and the reader resolves paths the way the code uses them
    let refs =
        references(Path::new("engine/leaks.rs"), "use super::grace::{past_grace};\nfn f() { crate::targets::hint(); }");
    assert!(refs.contains(&vec!["engine".to_string(), "grace".into(), "past_grace".into()]), "{refs:?}");
    assert!(refs.contains(&vec!["targets".to_string(), "hint".into()]), "{refs:?}");
}
