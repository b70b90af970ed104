//! Every file of the committed fuzz corpora (and any crash inputs kept beside them)
//! replayed through the same target functions the fuzzers run, on stable Rust.

use std::path::PathBuf;

use wsauth_core::fuzzing;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
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
fn decode_client_message_corpus() {
    println!(
        "{} inputs",
        replay("decode_client_message", fuzzing::decode)
    );
}

#[test]
fn upgrade_request_corpus() {
    println!("{} inputs", replay("upgrade_request", fuzzing::upgrade));
}

#[test]
fn jwt_verifier_corpus() {
    println!("{} inputs", replay("jwt_verifier", fuzzing::verifier));
}

#[test]
fn state_machine_corpus() {
    println!(
        "{} inputs",
        replay("state_machine", wsauth_sim::fuzzing::machine)
    );
}
