//! The documentation that is generated from code stays in step with it.
//! Run with `WSAUTH_BLESS=1` to rewrite the generated parts.

use std::path::PathBuf;

use wsauth_core::ErrorCode;
use wsauth_core::error::error_table_markdown;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

const BEGIN: &str = "<!-- BEGIN GENERATED: error table -->\n";
const END: &str = "<!-- END GENERATED: error table -->";

#[test]
fn error_codes_doc_matches_the_table_in_code() {
    let path = docs_dir().join("error-codes.md");
    let text = std::fs::read_to_string(&path).expect("docs/error-codes.md exists");
    let start = text.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = text.find(END).expect("end marker");
    let generated = error_table_markdown();
    if std::env::var_os("WSAUTH_BLESS").is_some() {
        let updated = format!("{}{}{}", &text[..start], generated, &text[end..]);
        std::fs::write(&path, updated).expect("write docs/error-codes.md");
        return;
    }
    assert_eq!(
        &text[start..end],
        generated,
        "docs/error-codes.md is stale: run `WSAUTH_BLESS=1 cargo test -p wsauth-core --test docs`"
    );
}

#[test]
fn protocol_reference_names_every_error_code() {
    let text = std::fs::read_to_string(docs_dir().join("protocol.md")).expect("docs/protocol.md");
    for code in ErrorCode::ALL {
        assert!(
            text.contains(&format!("`{}`", code.as_str())),
            "docs/protocol.md does not mention {code}"
        );
    }
}

#[test]
fn every_code_has_one_row_and_fatal_codes_have_a_retry_hint() {
    let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "duplicate code names");
    assert_eq!(count, 26, "PROTOCOL §5 has 22 rows, §8 four more");
    for code in ErrorCode::ALL {
        let spec = code.spec();
        assert_eq!(spec.fatal, spec.retry.is_some(), "{code}: retry iff fatal");
        assert_eq!(ErrorCode::from_name(spec.name), Some(*code));
        if !spec.fatal {
            assert!(
                spec.close.is_none(),
                "{code}: a non-fatal error is never followed by a close"
            );
        }
    }
}

#[test]
fn specification_lists_every_transcript() {
    let spec = std::fs::read_to_string(docs_dir().join("specification.md"))
        .expect("docs/specification.md");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("tests/spec") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf8");
        let Some(stem) = name.strip_suffix(".snap") else {
            continue;
        };
        count += 1;
        assert!(
            spec.contains(&format!("`{stem}`")),
            "docs/specification.md does not list {stem}"
        );
    }
    assert!(
        count >= 30,
        "the specification has {count} transcripts, fewer than 30"
    );
}
