//! The `config_loader` fuzz corpus replayed on stable: loading never panics, and a
//! configuration that loads says nothing secret in its Debug output.

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
