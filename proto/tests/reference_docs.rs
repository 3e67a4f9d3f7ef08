//! `docs/variables.md`, the variable and command-name reference, is generated from the tables the
//! server itself is built from (`proto/data/*.tsv`), and this test keeps it current: it fails when
//! the file differs from what the tables say. Regenerate with
//! `AEROBRIDGE_BLESS=1 cargo test -p aerobridge-proto --test reference_docs`.

use std::fmt::Write;
use std::path::Path;

fn rows(file: &str) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(file);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn cell(s: &str) -> String {
    if s.is_empty() || s == "none" {
        "–".to_string()
    } else {
        s.replace('|', "\\|")
    }
}

fn generate() -> String {
    let mut out = String::new();
    out.push_str(
        "# Variables and command names\n\n\
         Generated from `proto/data/aerofly-variables.tsv` and `proto/data/aerofly-command-names.tsv`,\n\
         the tables the server is built from (`AEROBRIDGE_BLESS=1 cargo test -p aerobridge-proto --test\n\
         reference_docs` regenerates it; the same test fails when it is stale). Names are\n\
         case-sensitive; a wrong case or a typo is answered with the name meant (\"did you mean\").\n\n\
         ## Telemetry: the keys of `variables`, in wire order\n\n\
         Units are the simulator SDK's: metres, metres per second, radians. \"settable\" says whether a\n\
         command (`{\"variable\": NAME, \"value\": …}`, v2 `set`) may change it.\n\n\
         | # | name | group | type | unit | range | settable |\n|---|---|---|---|---|---|---|\n",
    );
    let mut seen = std::collections::HashSet::new();
    for r in rows("aerofly-variables.tsv") {
        // order, name, type, unit, doc_unit, doc_range, access, writable, description
        if !seen.insert(r[1].clone()) {
            continue; // upstream sends two names twice; the wire keeps the first
        }
        let group = r[1].split('.').next().unwrap_or("");
        let unit = if r[3].is_empty() { &r[4] } else { &r[3] };
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} |",
            seen.len() - 1,
            r[1],
            group,
            if r[2] == "string" { "string" } else { "number" },
            cell(unit),
            cell(&r[5]),
            if r[7] == "yes" { "yes" } else { "no" },
        );
    }
    out.push_str(
        "\n## Command names\n\n\
         Every name a command may carry, as upstream's parser accepts them. \"access\" is the SDK's:\n\
         `read` names are refused (`read_only`); `write` names are inputs and events that telemetry may\n\
         not show; \"in telemetry\" says whether frames carry it.\n\n\
         | name | access | unit | in telemetry |\n|---|---|---|---|\n",
    );
    for r in rows("aerofly-command-names.tsv") {
        // name, sdk_message, sdk_type, sdk_flag, sdk_access, sdk_unit, value_sent_as, appears_in_json
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            r[0],
            cell(&r[4]),
            cell(&r[5]),
            r.get(7).map_or("–", |s| s.as_str())
        );
    }
    out
}

#[test]
fn docs_variables_md_is_generated_from_the_tables() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/variables.md");
    let want = generate();
    if std::env::var_os("AEROBRIDGE_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/variables.md is stale: AEROBRIDGE_BLESS=1 cargo test -p aerobridge-proto --test reference_docs"
    );
}
