//! Project Wycheproof's JSON Web Signature vectors (Apache-2.0, see
//! `core/testdata/wycheproof/LICENSE`) through the verifier's signature layer:
//! every `valid` case accepted, every `invalid` case refused (and refused by the
//! full verifier too). Groups whose key type is unsupported are counted as skipped.

use serde_json::Value;
use wsauth_core::jwt::{KeySet, Verifier, VerifierConfig};

/// Cases Wycheproof calls valid that wsauth refuses on purpose, with the reason.
const REFUSED_ON_PURPOSE: &[(u64, &str)] = &[
    (
        346,
        "the key's JWK says alg PS256; the token uses PS384 (a key is bound to its declared alg)",
    ),
    (
        350,
        "the key's JWK says alg PS256; the token uses PS384 (a key is bound to its declared alg)",
    ),
    (
        372,
        "a `?` in the header is not base64url; RFC 7515 requires base64url, so strict decoding refuses it",
    ),
    (
        373,
        "a `?` in the payload is not base64url; RFC 7515 requires base64url, so strict decoding refuses it",
    ),
];

/// Vectors whose text is byte-identical to a `valid` case (the `=` padding they
/// are named for is absent from the data file), so no verifier can refuse them
/// without refusing that valid case: (tcId, the identical valid tcId).
const IDENTICAL_TO_VALID: &[(u64, u64)] = &[(367, 357), (370, 357)];

fn key_set(group: &Value) -> Result<KeySet, String> {
    let mut keys = KeySet::new();
    let key = group
        .get("public")
        .or_else(|| group.get("private"))
        .ok_or("no key")?;
    let jwks = serde_json::json!({ "keys": [key] });
    match keys.add_jwks_json(&jwks.to_string()) {
        Ok(0) => Err("the key is not for signatures (use/key_ops)".into()),
        Ok(_) => Ok(keys),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn wycheproof_json_web_signature_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/wycheproof/json_web_signature_test.json"
    );
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("JSON");
    let mut total = (0, 0, 0, 0);
    let mut disagreements = Vec::new();
    println!(
        "{:<24} {:<6} {:>6} {:>6} {:>8} {:>8}",
        "group", "alg", "valid", "accept", "invalid", "refused"
    );
    for group in data["testGroups"].as_array().expect("groups") {
        let comment = group["comment"].as_str().unwrap_or("?");
        let alg = group
            .get("public")
            .or_else(|| group.get("private"))
            .and_then(|k| k.get("alg"))
            .and_then(Value::as_str)
            .unwrap_or("-");
        let tests = group["tests"].as_array().expect("tests");
        let keys = match key_set(group) {
            Ok(k) => Some(k),
            Err(why) => {
                // A key we cannot use: every case must then be `invalid` for us
                // (nothing verifies), or the group is unsupported and skipped.
                let all_invalid = tests.iter().all(|t| t["result"] == "invalid");
                if all_invalid {
                    println!(
                        "{comment:<24} {alg:<6} (key refused: {why}; its {} invalid case(s) are refused)",
                        tests.len()
                    );
                    total.2 += tests.len();
                    total.3 += tests.len();
                } else {
                    println!(
                        "{comment:<24} {alg:<6} skipped {} case(s): {why}",
                        tests.len()
                    );
                }
                continue;
            }
        };
        let Some(keys) = keys else { continue };
        let verifier = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
        let (mut valid, mut accepted, mut invalid, mut refused) = (0, 0, 0, 0);
        for t in tests {
            let id = t["tcId"].as_u64().expect("id");
            let jws = match &t["jws"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let outcome = verifier.verify_signature(&jws);
            let on_purpose = REFUSED_ON_PURPOSE.iter().any(|(i, _)| *i == id);
            if let Some((_, twin)) = IDENTICAL_TO_VALID.iter().find(|(i, _)| *i == id) {
                let twin_jws = tests
                    .iter()
                    .find(|o| o["tcId"].as_u64() == Some(*twin))
                    .and_then(|o| o["jws"].as_str());
                assert_eq!(
                    twin_jws,
                    Some(jws.as_str()),
                    "{id} is no longer identical to {twin}: check it again"
                );
                assert!(outcome.is_ok(), "{id} is the same text as the valid {twin}");
                println!("  tcId {id}: same text as the valid tcId {twin}; not counted");
                continue;
            }
            match t["result"].as_str() {
                Some("valid") if on_purpose => {
                    invalid += 1;
                    if outcome.is_ok() {
                        disagreements.push(format!("{id}: expected our refusal"));
                    } else {
                        refused += 1;
                    }
                }
                Some("valid") => {
                    valid += 1;
                    match outcome {
                        Ok(_) => accepted += 1,
                        Err(e) => disagreements
                            .push(format!("{id} ({}): valid case refused: {e}", t["comment"])),
                    }
                }
                _ => {
                    invalid += 1;
                    // Refused by the signature layer and by the full verifier.
                    let full = verifier.verify(&jws, 1_700_000_000_000);
                    if outcome.is_err() && full.is_err() {
                        refused += 1;
                    } else {
                        disagreements
                            .push(format!("{id} ({}): invalid case accepted", t["comment"]));
                    }
                }
            }
        }
        println!("{comment:<24} {alg:<6} {valid:>6} {accepted:>6} {invalid:>8} {refused:>8}");
        total.0 += valid;
        total.1 += accepted;
        total.2 += invalid;
        total.3 += refused;
    }
    println!(
        "total: {} valid, {} accepted; {} invalid (incl. {} refused on purpose), {} refused",
        total.0,
        total.1,
        total.2,
        REFUSED_ON_PURPOSE.len(),
        total.3
    );
    assert!(
        disagreements.is_empty(),
        "disagreements with Wycheproof:\n{}",
        disagreements.join("\n")
    );
    assert!(total.1 > 30 && total.3 > 300, "too few cases ran");
}
