//! The server's fuzz corpora replayed on stable. `config_loader`: loading never
//! panics, and a configuration that loads says nothing secret in its Debug output.
//! `frame_codec` and `upgrade_head`: through the same functions the fuzzers run
//! (`wsauth_server::fuzzing`), so a crash found once stays fixed.

use std::path::PathBuf;

/// Runs every file of `fuzz/corpus/<target>` through `run`; the count of files.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        run(&data);
        n += 1;
    }
    assert!(n > 0, "the {target} corpus is empty");
    n
}

#[test]
fn frame_codec_corpus() {
    println!(
        "{} inputs",
        replay("frame_codec", wsauth_server::fuzzing::frame_codec)
    );
}

/// The harness reads what it should: the valid seeds' messages all come through.
#[test]
fn frame_codec_reads_the_valid_seeds() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/frame_codec/"
    );
    for (seed, expected) in [
        ("seed-auth-text", 2),
        ("seed-auth-text-in-leftover", 1),
        ("seed-ping-text-close-bytewise", 3),
        ("seed-fragmented-text", 2),
        ("seed-empty-continuations", 1),
        ("seed-close", 1),
        ("seed-binary", 1),
        ("seed-unmasked", 0),
        ("seed-rsv1", 0),
        ("seed-opcode-3", 0),
        ("seed-ping-126", 0),
        ("seed-huge-length", 0),
    ] {
        let data = std::fs::read(format!("{dir}{seed}")).expect(seed);
        assert_eq!(
            wsauth_server::fuzzing::frame_codec_messages(&data),
            expected,
            "{seed}"
        );
    }
}

#[test]
fn upgrade_head_corpus() {
    println!(
        "{} inputs",
        replay("upgrade_head", wsauth_server::fuzzing::upgrade_head)
    );
}

#[test]
fn config_loader_corpus() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/config_loader"
    );
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus") {
        let data = std::fs::read(entry.expect("entry").path()).expect("file");
        if let Ok(text) = std::str::from_utf8(&data)
            && let Ok(config) = wsauth_server::config::load_toml_text(text)
        {
            let shown = format!("{config:?}");
            if let Some(secret) = &config.jwt.hs256_secret {
                assert!(!shown.contains(secret.as_str()));
            }
        }
        n += 1;
    }
    assert!(n >= 3, "the config_loader corpus has {n} files");
}
