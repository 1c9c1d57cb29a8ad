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

/// No property merges a schema that is not an object with others in an `allOf` (poem-openapi
/// does so for a field with a doc comment whose type is an enum): openapi-python-client
/// refuses it ("Cannot take allOf a non-object") and drops the whole schema, so the
/// generated client fails on every answer holding it. A lone `$ref` in an `allOf` (how a
/// nullable reference is written) is read as the reference itself.
#[test]
fn no_all_of_wraps_a_schema_that_is_not_an_object() {
    let spec: serde_json::Value =
        serde_json::from_str(&crm_api::openapi_spec()).expect("the document is JSON");
    let schemas = spec["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let mut wrong = Vec::new();
    for (name, schema) in schemas {
        let properties = schema["properties"].as_object().into_iter().flatten();
        for (property, value) in properties {
            let parts = value["allOf"].as_array().map_or(&[][..], Vec::as_slice);
            if parts.len() < 2 {
                continue;
            }
            for part in parts {
                let Some(target) = part["$ref"].as_str() else {
                    continue;
                };
                let target = target.trim_start_matches("#/components/schemas/");
                if schemas[target]["type"] != "object" {
                    wrong.push(format!("{name}.{property} → {target}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "allOf around a non-object: {wrong:?}");
}
