//! The manual pages in man/ cannot drift from the tools and the API:
//! every flag a tool's `-h` lists is an option of its page (and the page
//! lists no option the tool lacks), every exported function is described
//! on a section 3 page and has a `.so` link page, and every page is
//! lint-clean under `groff -ww -z -man` (skipped with a message when groff
//! is not installed, except in CI).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's top folder (this crate is daemons/).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// roff source to plain text: `\-` becomes `-`, font escapes go.
fn unroff(s: &str) -> String {
    let mut out = s.replace("\\-", "-").replace("\\e", "\\");
    for esc in ["\\fB", "\\fI", "\\fR", "\\fP", "\\(dq", "\\~"] {
        out = out.replace(esc, " ");
    }
    out
}

/// Flags a tool's `-h` lists: the names before the description on each
/// line that starts with a dash (`-server, -connect <address>  ...`).
fn usage_flags(exe: &str) -> BTreeSet<String> {
    let out = Command::new(exe).arg("-h").output().expect("run tool -h");
    assert!(out.status.success(), "{exe} -h exits 0");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let mut flags = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start();
        if !l.starts_with('-') {
            continue;
        }
        let head = l.split("  ").next().unwrap_or("");
        for tok in head.split([',', ' ']) {
            if tok.starts_with('-') {
                flags.insert(tok.to_string());
            }
        }
    }
    flags
}

/// Option names of a section 1 page: the flags in the tags (the line after
/// each `.TP`) of its OPTIONS section.
fn page_options(src: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let mut in_options = false;
    let mut tag_next = false;
    for line in src.lines() {
        if line.starts_with(".SH") {
            in_options = line.trim() == ".SH OPTIONS";
            continue;
        }
        if !in_options {
            continue;
        }
        if line.starts_with(".TP") {
            tag_next = true;
            continue;
        }
        if tag_next {
            tag_next = false;
            let plain = unroff(line);
            for tok in plain.split(|c: char| c.is_whitespace() || c == ',' || c == '"') {
                if tok.starts_with('-') && tok.len() > 1 {
                    flags.insert(tok.to_string());
                }
            }
        }
    }
    flags
}

#[test]
fn every_usage_flag_is_an_option_of_its_page() {
    let tools = [
        ("dc_server", env!("CARGO_BIN_EXE_dc_server")),
        ("dc_client", env!("CARGO_BIN_EXE_dc_client")),
        ("dc_test", env!("CARGO_BIN_EXE_dc_test")),
        ("dc_snoop", env!("CARGO_BIN_EXE_dc_snoop")),
    ];
    let mut problems = Vec::new();
    for (name, exe) in tools {
        let usage = usage_flags(exe);
        assert!(usage.len() >= 4, "{name} -h lists its flags: {usage:?}");
        let page = read(&root().join(format!("man/man1/{name}.1")));
        let options = page_options(&page);
        for f in usage.difference(&options) {
            problems.push(format!(
                "{name}: `{f}` is in -h but not an option in man/man1/{name}.1"
            ));
        }
        for f in options.difference(&usage) {
            problems.push(format!(
                "{name}: man/man1/{name}.1 documents `{f}`, which -h does not list"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The function names a page describes: its NAME line(s) up to `\-`.
fn name_list(src: &str) -> Vec<String> {
    let mut names = String::new();
    let mut on = false;
    for line in src.lines() {
        if line.starts_with(".SH") {
            if on {
                break;
            }
            on = line.trim() == ".SH NAME";
            continue;
        }
        if on {
            names.push(' ');
            names.push_str(line);
        }
    }
    let head = names.split("\\-").next().unwrap_or("");
    head.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn every_exported_function_has_a_section3_page_and_a_link() {
    let symbols: Vec<String> = read(&root().join("capi-tests/symbols.txt"))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert_eq!(
        symbols.len(),
        95,
        "capi-tests/symbols.txt lists the 95 functions"
    );

    let dir = root().join("man/man3");
    // Real pages (not `.so` links): page name -> functions in NAME.
    let mut pages: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    for e in fs::read_dir(&dir).expect("man/man3") {
        let p = e.expect("entry").path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        assert_eq!(
            p.extension().and_then(|x| x.to_str()),
            Some("3"),
            "{}",
            p.display()
        );
        let src = read(&p);
        if let Some(target) = src.trim().strip_prefix(".so ") {
            assert_eq!(
                src.lines().count(),
                1,
                "{}: a link page is one .so line",
                p.display()
            );
            links.insert(stem, target.to_string());
        } else {
            pages.insert(stem, (name_list(&src), src));
        }
    }
    let expected_pages = [
        "DC_CTX_new",
        "DC_PLUG_new",
        "DC_PLUG_read",
        "DC_SERVER_new",
        "NAL_ADDRESS_new",
        "NAL_CONNECTION_new",
        "NAL_LISTENER_new",
        "NAL_SELECTOR_new",
        "NAL_BUFFER_new",
        "NAL_decode_uint32",
    ];
    let have: BTreeSet<&str> = pages.keys().map(String::as_str).collect();
    assert_eq!(
        have,
        expected_pages.into_iter().collect(),
        "the original's section 3 page names"
    );

    let mut problems = Vec::new();
    for s in &symbols {
        let described: Vec<&String> = pages
            .iter()
            .filter(|(_, (n, _))| n.contains(s))
            .map(|(k, _)| k)
            .collect();
        match described.as_slice() {
            [page] => {
                let src = &pages[*page].1;
                if !src.contains(&format!("{s}(")) {
                    problems.push(format!("{s}: named on {page}.3 but not in its SYNOPSIS"));
                }
                if s != *page {
                    match links.get(s) {
                        Some(t) if *t == format!("man3/{page}.3") => {}
                        Some(t) => problems.push(format!("{s}.3 links to {t}, not man3/{page}.3")),
                        None => problems.push(format!("{s}: no link page man/man3/{s}.3")),
                    }
                }
            }
            [] => problems.push(format!("{s}: on no section 3 page")),
            many => problems.push(format!("{s}: named on several pages {many:?}")),
        }
    }
    for (l, t) in &links {
        if !symbols.contains(l) {
            problems.push(format!("link page {l}.3 names no exported function"));
        }
        let target = t.strip_prefix("man3/").and_then(|t| t.strip_suffix(".3"));
        if target.is_none_or(|t| !pages.contains_key(t)) {
            problems.push(format!("link page {l}.3 points to a missing page {t}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_page_has_a_matching_th_line() {
    for sec in ["1", "3", "8"] {
        for e in fs::read_dir(root().join(format!("man/man{sec}"))).expect("man dir") {
            let p = e.expect("entry").path();
            let src = read(&p);
            if src.starts_with(".so ") {
                continue;
            }
            let stem = p.file_stem().unwrap().to_string_lossy().to_uppercase();
            let th = src.lines().find(|l| l.starts_with(".TH ")).unwrap_or("");
            let f: Vec<&str> = th.split_whitespace().collect();
            assert!(
                f.len() >= 3 && f[1] == stem && f[2] == sec,
                "{}: .TH line {th:?} does not name {stem}({sec})",
                p.display()
            );
        }
    }
}

#[test]
fn every_page_is_groff_lint_clean() {
    let have_groff = Command::new("groff")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_groff {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "groff is needed in CI (.ci/run installs groff-base)"
        );
        println!("man_pages: SKIPPED groff lint: groff not found (apt-get install groff-base)");
        return;
    }
    let man = root().join("man");
    let mut checked = 0;
    let mut problems = Vec::new();
    for sec in ["man1", "man3", "man8"] {
        for e in fs::read_dir(man.join(sec)).expect("man dir") {
            let rel = format!("{sec}/{}", e.expect("entry").file_name().to_string_lossy());
            // Run from man/ so that `.so man3/X.3` resolves as it does
            // under an installed share/man.
            let out = Command::new("groff")
                .args(["-ww", "-z", "-man", &rel])
                .current_dir(&man)
                .output()
                .expect("run groff");
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() || !err.trim().is_empty() {
                problems.push(format!("{rel}: {}", err.trim()));
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "all pages checked ({checked})");
    assert!(
        problems.is_empty(),
        "groff -ww warnings:\n{}",
        problems.join("\n")
    );
}
