//! The committed `docs/openapi.json` is the document the code produces, so clients and
//! reviewers can read the contract without running the server.

use std::path::Path;

#[test]
fn committed_openapi_document_is_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!("cannot read docs/openapi.json ({err}): run `cargo xtask openapi`")
    });
    let current = crm_api::openapi_spec();
    if let Some((line, old, new)) = first_difference(&committed, &current) {
        panic!(
            "docs/openapi.json is stale: run `cargo xtask openapi`\n\
             first difference at line {line}:\n  committed: {old}\n  current:   {new}"
        );
    }
}

/// The first line (1-based) where `a` and `b` differ, with both versions of it; trailing
/// whitespace at the end of the files does not count.
fn first_difference<'a>(a: &'a str, b: &'a str) -> Option<(usize, &'a str, &'a str)> {
    let (mut a, mut b) = (a.trim_end().lines(), b.trim_end().lines());
    for line in 1.. {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (x, y) if x == y => {}
            (x, y) => {
                return Some((
                    line,
                    x.unwrap_or("<end of file>"),
                    y.unwrap_or("<end of file>"),
                ));
            }
        }
    }
    None
}
