//! The JWT verifier: every check of PROTOCOL §2 and each failure's code.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use wsauth_core::ErrorCode;
use wsauth_core::jwt::{
    KeyError, KeySet, TokenError, Verifier, VerifierConfig, VerifyCache, b64url, looks_like_jwt,
    sign, sign_hs256, unverified_issuer,
};

const SECRET: &[u8] = b"verifier-tests-secret-of-at-least-32-bytes";
const NOW_S: u64 = 1_767_225_600;
const NOW: u64 = NOW_S * 1000;

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

fn hs_verifier(config: VerifierConfig) -> Verifier {
    let mut keys = KeySet::new();
    keys.add_hmac_secret(None, SECRET).expect("secret");
    Verifier::new(keys, config).expect("verifier")
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "exp": NOW_S + 3600});
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A token from raw header and payload JSON texts, HMAC-signed with SECRET.
fn raw_token(header: &str, payload: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes())
    );
    // Sign through jsonwebtoken's low-level signer so that the texts stay as written.
    let key = EncodingKey::from_secret(SECRET).expect("key");
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).expect("sign");
    format!("{signing_input}.{signature}")
}

fn refused(v: &Verifier, token: &str, now: u64) -> TokenError {
    let e = v.verify(token, now).expect_err("refused");
    // No error message ever carries the token or the secret.
    let text = e.to_string();
    assert!(
        token.len() < 8 || !text.contains(token),
        "error echoes the token: {text}"
    );
    assert!(!text.contains(std::str::from_utf8(SECRET).expect("utf8")));
    e
}

#[test]
fn a_valid_hs256_token_gives_typed_claims() {
    let v = hs_verifier(VerifierConfig::default());
    let t = sign_hs256(
        SECRET,
        &claims(
            json!({"jti": "t1", "iat": NOW_S, "nbf": NOW_S, "channels": ["general"], "role": "admin", "aud": "api"}),
        ),
    );
    let c = v.verify(&t, NOW).expect("valid");
    assert_eq!(c.sub, "alice");
    assert_eq!(c.exp_ms, (NOW_S + 3600) * 1000);
    assert_eq!(c.iat_ms, Some(NOW));
    assert_eq!(c.nbf_ms, Some(NOW));
    assert_eq!(c.jti.as_deref(), Some("t1"));
    assert_eq!(c.aud, vec!["api".to_owned()]);
    assert_eq!(c.channels, Some(vec!["general".to_owned()]));
    assert_eq!(c.extra.get("role"), Some(&json!("admin")));
}

#[test]
fn every_supported_algorithm_verifies_with_its_key() {
    let rsa = EncodingKey::from_rsa_pem(&key_file("rsa.key")).expect("rsa");
    let p256 = EncodingKey::from_ec_pem(&key_file("p256.key")).expect("p256");
    let p384 = EncodingKey::from_ec_pem(&key_file("p384.key")).expect("p384");
    let ed = EncodingKey::from_ed_pem(&key_file("ed25519.key")).expect("ed");
    let hmac = EncodingKey::from_secret(SECRET).expect("hmac");
    let mut keys = KeySet::new();
    keys.add_hmac_secret(Some("hs"), SECRET).expect("hs");
    keys.add_public_key_pem(Some("rsa"), &key_file("rsa.pub.pem"))
        .expect("rsa pub");
    keys.add_public_key_pem(Some("p256"), &key_file("p256.pub.pem"))
        .expect("p256 pub");
    keys.add_public_key_pem(Some("p384"), &key_file("p384.pub.pem"))
        .expect("p384 pub");
    keys.add_public_key_pem(Some("ed"), &key_file("ed25519.pub.pem"))
        .expect("ed pub");
    let v = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    let cases: [(&EncodingKey, Algorithm, &str); 12] = [
        (&hmac, Algorithm::HS256, "hs"),
        (&hmac, Algorithm::HS384, "hs"),
        (&hmac, Algorithm::HS512, "hs"),
        (&rsa, Algorithm::RS256, "rsa"),
        (&rsa, Algorithm::RS384, "rsa"),
        (&rsa, Algorithm::RS512, "rsa"),
        (&rsa, Algorithm::PS256, "rsa"),
        (&rsa, Algorithm::PS384, "rsa"),
        (&rsa, Algorithm::PS512, "rsa"),
        (&p256, Algorithm::ES256, "p256"),
        (&p384, Algorithm::ES384, "p384"),
        (&ed, Algorithm::EdDSA, "ed"),
    ];
    for (key, alg, kid) in cases {
        let with_kid = sign(key, alg, Some(kid), &claims(json!({}))).expect("sign");
        assert!(v.verify(&with_kid, NOW).is_ok(), "{alg:?} with kid");
        let without_kid = sign(key, alg, None, &claims(json!({}))).expect("sign");
        assert!(v.verify(&without_kid, NOW).is_ok(), "{alg:?} without kid");
        // A kid naming a key of another family never verifies.
        let other = if kid == "hs" { "rsa" } else { "hs" };
        let wrong = sign(key, alg, Some(other), &claims(json!({}))).expect("sign");
        assert_eq!(
            refused(&v, &wrong, NOW),
            TokenError::NoMatchingKey,
            "{alg:?} with kid {other}"
        );
    }
}

#[test]
fn rsa_keys_outside_2048_to_8192_bits_are_refused_while_loading() {
    for file in ["rsa1024.pub.pem", "rsa1024.pkcs1.pub.pem"] {
        let mut keys = KeySet::new();
        let err = keys.add_public_key_pem(None, &key_file(file));
        assert_eq!(err, Err(KeyError::RsaKeySize { bits: 1024 }), "{file}");
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("RSA modulus of 1024 bits; 2048 to 8192 are accepted".to_owned())
        );
    }
    for file in ["rsa.pub.pem", "rsa.pkcs1.pub.pem"] {
        let mut keys = KeySet::new();
        assert_eq!(
            keys.add_public_key_pem(None, &key_file(file)),
            Ok(()),
            "{file}"
        );
    }
    // JWKS: only the modulus's length counts here, so synthetic moduli do.
    let jwks = |n: &[u8]| {
        json!({"keys": [{"kty": "RSA", "kid": "k", "n": b64url(n), "e": "AQAB"}]}).to_string()
    };
    let modulus = |first: u8, len: usize| {
        let mut n = vec![0xc5; len];
        n[0] = first;
        n
    };
    for (n, verdict) in [
        (modulus(0xc5, 128), Err(KeyError::RsaKeySize { bits: 1024 })),
        (modulus(0x7f, 256), Err(KeyError::RsaKeySize { bits: 2047 })),
        (modulus(0x80, 256), Ok(1)),
        ([&[0u8, 0][..], &modulus(0xc5, 256)].concat(), Ok(1)),
        (modulus(0xff, 1024), Ok(1)),
        (
            modulus(0x01, 1025),
            Err(KeyError::RsaKeySize { bits: 8193 }),
        ),
    ] {
        let mut keys = KeySet::new();
        assert_eq!(keys.add_jwks_json(&jwks(&n)), verdict, "{} bytes", n.len());
    }
}

#[test]
fn pkcs1_rsa_public_keys_and_jwks_load() {
    let rsa = EncodingKey::from_rsa_pem(&key_file("rsa.key")).expect("rsa");
    let mut keys = KeySet::new();
    keys.add_public_key_pem(None, &key_file("rsa.pkcs1.pub.pem"))
        .expect("pkcs1");
    let v = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    let t = sign(&rsa, Algorithm::RS256, None, &claims(json!({}))).expect("sign");
    assert!(v.verify(&t, NOW).is_ok());

    let public = jsonwebtoken::DecodingKey::from_ed_pem(&key_file("ed25519.pub.pem")).expect("ed");
    let jwk =
        jsonwebtoken::jwk::Jwk::from_decoding_key(&public, Some(Algorithm::EdDSA)).expect("jwk");
    let mut jwk = serde_json::to_value(jwk).expect("json");
    jwk["kid"] = json!("ed-1");
    let jwks = json!({"keys": [jwk, {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]});
    let mut keys = KeySet::new();
    assert_eq!(
        keys.add_jwks_json(&jwks.to_string()),
        Ok(1),
        "the encryption key is skipped"
    );
    let v = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    let ed = EncodingKey::from_ed_pem(&key_file("ed25519.key")).expect("ed");
    let t = sign(&ed, Algorithm::EdDSA, Some("ed-1"), &claims(json!({}))).expect("sign");
    assert!(v.verify(&t, NOW).is_ok());
    assert!(matches!(
        KeySet::new().add_jwks_json("{nope"),
        Err(KeyError::BadJwks(_))
    ));
}

#[test]
fn bad_keys_are_configuration_errors() {
    let mut keys = KeySet::new();
    assert_eq!(
        keys.add_hmac_secret(None, b"short"),
        Err(KeyError::ShortSecret(5))
    );
    assert_eq!(
        keys.add_public_key_pem(None, &key_file("rsa.key")),
        Err(KeyError::PrivateKey)
    );
    assert!(matches!(
        keys.add_public_key_pem(None, &key_file("p521.pub.pem")),
        Err(KeyError::Unsupported(_))
    ));
    assert!(matches!(
        keys.add_public_key_pem(None, b"hello"),
        Err(KeyError::BadPem(_))
    ));
    keys.add_hmac_secret(Some("a"), SECRET).expect("first");
    assert_eq!(
        keys.add_hmac_secret(Some("a"), SECRET),
        Err(KeyError::DuplicateKid("a".into()))
    );
    assert_eq!(
        Verifier::new(KeySet::new(), VerifierConfig::default()).err(),
        Some(KeyError::NoKeys)
    );
    // Debug prints no key material.
    let dbg = format!("{keys:?}");
    assert!(!dbg.contains("verifier-tests-secret"), "{dbg}");
}

#[test]
fn alg_none_in_any_case_is_refused() {
    let v = hs_verifier(VerifierConfig::default());
    let payload = claims(json!({})).to_string();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        for sig in ["", "c2ln"] {
            let t = format!(
                "{}.{}.{sig}",
                b64url(header.as_bytes()),
                b64url(payload.as_bytes())
            );
            let e = refused(&v, &t, NOW);
            assert!(
                matches!(
                    e,
                    TokenError::AlgorithmNotAllowed | TokenError::BadSignature
                ),
                "{alg} / {sig:?}: {e:?}"
            );
            assert_eq!(e.code(), ErrorCode::AuthFailed);
        }
    }
    // An unknown algorithm, and one outside the configured allow-list.
    let t = format!(
        "{}.{}.c2ln",
        b64url(br#"{"alg":"ES512"}"#),
        b64url(payload.as_bytes())
    );
    assert_eq!(refused(&v, &t, NOW), TokenError::AlgorithmNotAllowed);
    let only_hs512 = hs_verifier(VerifierConfig {
        algorithms: Some(vec![Algorithm::HS512]),
        ..VerifierConfig::default()
    });
    let t = sign_hs256(SECRET, &claims(json!({})));
    assert_eq!(
        refused(&only_hs512, &t, NOW),
        TokenError::AlgorithmNotAllowed
    );
}

#[test]
fn key_confusion_hs256_signed_with_the_rsa_public_key_is_refused() {
    let pem = key_file("rsa.pub.pem");
    let der = key_file("rsa.pub.der");
    // The server knows only the RSA key: no HMAC key exists to verify HS256 with.
    let mut keys = KeySet::new();
    keys.add_public_key_pem(None, &pem).expect("rsa");
    let rsa_only = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    // The server also has an HMAC secret: the forged token still does not verify.
    let mut keys = KeySet::new();
    keys.add_public_key_pem(None, &pem).expect("rsa");
    keys.add_hmac_secret(None, SECRET).expect("hs");
    let both = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    for forged_secret in [&pem[..], &der[..]] {
        let forged = sign_hs256(forged_secret, &claims(json!({})));
        assert_eq!(refused(&rsa_only, &forged, NOW), TokenError::NoMatchingKey);
        assert_eq!(refused(&both, &forged, NOW), TokenError::BadSignature);
        assert_eq!(TokenError::NoMatchingKey.code(), ErrorCode::AuthFailed);
    }
}

#[test]
fn kid_is_only_a_lookup_key() {
    let mut keys = KeySet::new();
    keys.add_hmac_secret(Some("old"), SECRET).expect("old");
    keys.add_hmac_secret(Some("new"), b"the-new-secret-after-rotation-32-bytes!")
        .expect("new");
    let v = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    let old = EncodingKey::from_secret(SECRET).expect("key");
    let new = EncodingKey::from_secret(b"the-new-secret-after-rotation-32-bytes!").expect("key");
    // Rotation: both keys verify their own tokens, by kid or by trying.
    for (key, kid) in [(&old, "old"), (&new, "new")] {
        let t = sign(key, Algorithm::HS256, Some(kid), &claims(json!({}))).expect("sign");
        assert!(v.verify(&t, NOW).is_ok(), "{kid}");
        let t = sign(key, Algorithm::HS256, None, &claims(json!({}))).expect("sign");
        assert!(v.verify(&t, NOW).is_ok(), "{kid} without kid");
    }
    // The old key's token claiming the new kid fails its signature.
    let t = sign(&old, Algorithm::HS256, Some("new"), &claims(json!({}))).expect("sign");
    assert_eq!(refused(&v, &t, NOW), TokenError::BadSignature);
    for hostile in ["unknown", "../../x", "/etc/passwd", "' OR 1=1 --", ""] {
        let t = sign(&old, Algorithm::HS256, Some(hostile), &claims(json!({}))).expect("sign");
        assert_eq!(refused(&v, &t, NOW), TokenError::UnknownKid, "{hostile}");
    }
}

#[test]
fn exp_nbf_and_iat_at_and_past_the_leeway() {
    let v = hs_verifier(VerifierConfig::default());
    let leeway = 30_000;
    let exp = sign_hs256(SECRET, &claims(json!({"exp": NOW_S})));
    assert!(
        v.verify(&exp, NOW + leeway - 1_000).is_ok(),
        "one second before exp + leeway"
    );
    assert!(v.verify(&exp, NOW + leeway - 1).is_ok(), "1 ms before");
    assert_eq!(
        refused(&v, &exp, NOW + leeway),
        TokenError::Expired,
        "exactly at exp + leeway"
    );
    assert_eq!(
        refused(&v, &exp, NOW + leeway + 1_000),
        TokenError::Expired,
        "one second past"
    );
    assert_eq!(TokenError::Expired.code(), ErrorCode::TokenExpired);

    let nbf = sign_hs256(SECRET, &claims(json!({"nbf": NOW_S + 30})));
    assert!(v.verify(&nbf, NOW).is_ok(), "nbf exactly at now + leeway");
    let nbf_late = sign_hs256(SECRET, &claims(json!({"nbf": NOW_S + 31})));
    assert_eq!(
        refused(&v, &nbf_late, NOW),
        TokenError::NotYetValid,
        "one second past"
    );
    assert_eq!(TokenError::NotYetValid.code(), ErrorCode::TokenNotYetValid);

    let iat = sign_hs256(SECRET, &claims(json!({"iat": NOW_S + 30})));
    assert!(v.verify(&iat, NOW).is_ok(), "iat exactly at now + leeway");
    let iat_late = sign_hs256(SECRET, &claims(json!({"iat": NOW_S + 31})));
    assert_eq!(refused(&v, &iat_late, NOW), TokenError::IssuedInFuture);
    assert_eq!(
        TokenError::IssuedInFuture.code(),
        ErrorCode::TokenNotYetValid
    );

    // Fractional seconds are kept to the millisecond.
    let frac = sign_hs256(SECRET, &claims(json!({"exp": NOW_S as f64 + 0.5})));
    assert_eq!(v.verify(&frac, NOW).expect("valid").exp_ms, NOW + 500);

    let strict = hs_verifier(VerifierConfig {
        leeway_s: 0,
        ..VerifierConfig::default()
    });
    assert_eq!(refused(&strict, &exp, NOW), TokenError::Expired);
    assert!(strict.verify(&exp, NOW - 1).is_ok());
}

#[test]
fn size_is_checked_before_any_decoding() {
    let v = hs_verifier(VerifierConfig::default());
    // 8193 bytes of garbage: refused for its size, not as malformed.
    let big = "a".repeat(8193);
    assert_eq!(refused(&v, &big, NOW), TokenError::TooLarge { max: 8192 });
    // A valid token of exactly 8192 bytes is accepted.
    let base = sign_hs256(SECRET, &claims(json!({"pad": ""}))).len();
    let mut pad = 8192 - base;
    let exact = loop {
        let t = sign_hs256(SECRET, &claims(json!({"pad": "x".repeat(pad * 3 / 4)})));
        if t.len() == 8192 {
            break t;
        }
        assert!(t.len() < 8192 || pad > 0, "padding search");
        if t.len() > 8192 {
            pad -= 1;
        } else {
            pad += 1;
        }
    };
    assert!(v.verify(&exact, NOW).is_ok());
    assert_eq!(
        TokenError::TooLarge { max: 8192 }.code(),
        ErrorCode::InvalidToken
    );
}

#[test]
fn missing_or_wrongly_typed_claims() {
    let v = hs_verifier(VerifierConfig::default());
    let cases: Vec<(Value, TokenError)> = vec![
        (json!({"exp": null}), TokenError::MissingClaim("exp")),
        (json!({"exp": "123"}), TokenError::WrongClaimType("exp")),
        (json!({"exp": true}), TokenError::WrongClaimType("exp")),
        (json!({"exp": 1e300}), TokenError::WrongClaimType("exp")),
        (json!({"sub": null}), TokenError::MissingClaim("sub")),
        (json!({"sub": ""}), TokenError::WrongClaimType("sub")),
        (json!({"sub": 5}), TokenError::WrongClaimType("sub")),
        (json!({"iss": 123}), TokenError::WrongClaimType("iss")),
        (json!({"aud": 5}), TokenError::WrongClaimType("aud")),
        (json!({"aud": ["a", 5]}), TokenError::WrongClaimType("aud")),
        (json!({"nbf": "soon"}), TokenError::WrongClaimType("nbf")),
        (json!({"iat": {}}), TokenError::WrongClaimType("iat")),
        (json!({"jti": 7}), TokenError::WrongClaimType("jti")),
        (
            json!({"channels": "general"}),
            TokenError::WrongClaimType("channels"),
        ),
        (
            json!({"channels": ["a", 1]}),
            TokenError::WrongClaimType("channels"),
        ),
    ];
    for (extra, expected) in cases {
        let t = sign_hs256(SECRET, &claims(extra.clone()));
        let e = refused(&v, &t, NOW);
        assert_eq!(e, expected, "{extra}");
        assert_eq!(e.code(), ErrorCode::InvalidToken, "{extra}");
    }
    // A negative exp is a date long past.
    let t = sign_hs256(SECRET, &claims(json!({"exp": -5})));
    assert_eq!(refused(&v, &t, NOW), TokenError::Expired);
}

#[test]
fn issuer_and_audience_when_configured_are_required_and_matched() {
    let v = hs_verifier(VerifierConfig {
        issuer: Some("https://idp.example".into()),
        audience: vec!["chat".into(), "api".into()],
        ..VerifierConfig::default()
    });
    let ok = json!({"iss": "https://idp.example", "aud": ["other", "chat"]});
    assert!(v.verify(&sign_hs256(SECRET, &claims(ok)), NOW).is_ok());
    let cases = [
        (
            json!({"aud": "chat"}),
            TokenError::MissingClaim("iss"),
            ErrorCode::InvalidToken,
        ),
        (
            json!({"iss": "https://idp.example"}),
            TokenError::MissingClaim("aud"),
            ErrorCode::InvalidToken,
        ),
        (
            json!({"iss": "https://evil.example", "aud": "chat"}),
            TokenError::WrongIssuer,
            ErrorCode::AuthFailed,
        ),
        (
            json!({"iss": "https://idp.example", "aud": "billing"}),
            TokenError::WrongAudience,
            ErrorCode::AuthFailed,
        ),
        (
            json!({"iss": "https://idp.example", "aud": []}),
            TokenError::MissingClaim("aud"),
            ErrorCode::InvalidToken,
        ),
    ];
    for (extra, expected, code) in cases {
        let e = refused(&v, &sign_hs256(SECRET, &claims(extra.clone())), NOW);
        assert_eq!(e, expected, "{extra}");
        assert_eq!(e.code(), code, "{extra}");
    }
}

#[test]
fn duplicate_member_names_are_refused() {
    let v = hs_verifier(VerifierConfig::default());
    let exp = NOW_S + 3600;
    let dup_claims = raw_token(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"sub":"alice","exp":{exp},"sub":"admin"}}"#),
    );
    assert_eq!(refused(&v, &dup_claims, NOW), TokenError::DuplicateName);
    let escaped_dup = raw_token(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"sub":"alice","exp":{exp},"s\u0075b":"admin"}}"#),
    );
    assert_eq!(refused(&v, &escaped_dup, NOW), TokenError::DuplicateName);
    let dup_header = raw_token(
        r#"{"alg":"HS256","alg":"none"}"#,
        &format!(r#"{{"sub":"alice","exp":{exp}}}"#),
    );
    assert_eq!(refused(&v, &dup_header, NOW), TokenError::DuplicateName);
    assert_eq!(TokenError::DuplicateName.code(), ErrorCode::InvalidToken);
}

#[test]
fn header_checks_crit_typ_cty_jwe() {
    let v = hs_verifier(VerifierConfig::default());
    let payload = claims(json!({})).to_string();
    let crit = raw_token(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, &payload);
    assert_eq!(refused(&v, &crit, NOW), TokenError::CriticalHeader);
    for typ in ["JWT", "jwt", "at+jwt", "application/at+jwt"] {
        let t = raw_token(&format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#), &payload);
        assert!(v.verify(&t, NOW).is_ok(), "{typ}");
    }
    for typ in [r#""JOSE""#, r#""dpop+jwt""#, "1"] {
        let t = raw_token(&format!(r#"{{"alg":"HS256","typ":{typ}}}"#), &payload);
        assert_eq!(refused(&v, &t, NOW), TokenError::BadType, "{typ}");
    }
    let nested = raw_token(r#"{"alg":"HS256","cty":"JWT"}"#, &payload);
    assert_eq!(refused(&v, &nested, NOW), TokenError::EncryptedOrNested);
    let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGeipsEdY3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDbSv04uVuxIp5Zms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaVmqgfwX7XWRxv2322i-vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je81860ppamavo35UgoRdbYaBcoh9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi6UklfCpIMfIjf7iGdXKHzg.48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A.XFBoMYUZodetZdvTiFvSkQ";
    assert_eq!(refused(&v, jwe, NOW), TokenError::EncryptedOrNested);
    assert_eq!(
        TokenError::EncryptedOrNested.code(),
        ErrorCode::InvalidToken
    );
    for malformed in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        "e30.e30.",
        "W10.e30.c2ln",
    ] {
        let e = refused(&v, malformed, NOW);
        assert_eq!(e.code(), ErrorCode::InvalidToken, "{malformed:?}: {e:?}");
    }
}

#[test]
fn embedded_key_headers_are_never_trusted_nor_fetched() {
    let v = hs_verifier(VerifierConfig::default());
    let attacker_secret = b"attacker-controlled-secret-32-bytes!!";
    let payload = claims(json!({})).to_string();
    for header_extra in [
        format!(r#""jwk":{{"kty":"oct","k":"{}"}}"#, b64url(attacker_secret)),
        r#""jku":"https://evil.example/keys.json""#.to_owned(),
        r#""x5u":"https://evil.example/cert.pem""#.to_owned(),
        r#""x5c":["MIIB"]"#.to_owned(),
    ] {
        let header = format!(r#"{{"alg":"HS256",{header_extra}}}"#);
        let input = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(payload.as_bytes())
        );
        let attacker = EncodingKey::from_secret(attacker_secret).expect("key");
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &attacker, Algorithm::HS256)
            .expect("sign");
        assert_eq!(
            refused(&v, &format!("{input}.{sig}"), NOW),
            TokenError::BadSignature,
            "{header_extra}"
        );
        // The same header on a token signed with the configured key is fine.
        assert!(
            v.verify(&raw_token(&header, &payload), NOW).is_ok(),
            "{header_extra}"
        );
    }
}

#[test]
fn rfc_7515_a1_hs256_example() {
    // RFC 7515 Appendix A.1: the signature verifies; the claims have no `sub`.
    let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let jwks = r#"{"keys":[{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}]}"#;
    let mut keys = KeySet::new();
    keys.add_jwks_json(jwks).expect("key");
    let v = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    assert!(v.verify_signature(token).is_ok());
    assert_eq!(
        v.verify(token, 1_300_819_379_000).err(),
        Some(TokenError::MissingClaim("sub"))
    );
    // One changed character in the signature and it no longer verifies.
    let tampered = token.replace("dBjf", "dBjg");
    assert_eq!(
        v.verify_signature(&tampered).err(),
        Some(TokenError::BadSignature)
    );
}

#[test]
fn rfc_8037_a4_ed25519_example() {
    let token = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    let mut keys = KeySet::new();
    keys.add_jwks_json(jwks).expect("key");
    let v = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    assert_eq!(
        v.verify_signature(token).expect("valid"),
        b"Example of Ed25519 signing"
    );
    // The payload is not a claims object.
    assert!(matches!(
        v.verify(token, NOW),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn the_cache_answers_asymmetric_tokens_until_their_time_and_never_hmac_ones() {
    let rsa = EncodingKey::from_rsa_pem(&key_file("rsa.key")).expect("rsa");
    let ed = EncodingKey::from_ed_pem(&key_file("ed25519.key")).expect("ed");
    let mut keys = KeySet::new();
    keys.add_hmac_secret(Some("hs"), SECRET).expect("hs");
    keys.add_public_key_pem(Some("rsa"), &key_file("rsa.pub.pem"))
        .expect("rsa pub");
    keys.add_public_key_pem(Some("ed"), &key_file("ed25519.pub.pem"))
        .expect("ed pub");
    let v = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    let cache = std::sync::Mutex::new(VerifyCache::new(16));
    let len = || cache.lock().expect("lock").len();

    for (key, alg) in [(&rsa, Algorithm::RS256), (&ed, Algorithm::EdDSA)] {
        let token =
            sign(key, alg, None, &claims(json!({"jti": format!("{alg:?}")}))).expect("sign");
        let first = v.verify_cached(&token, NOW, &cache).expect("verifies");
        let second = v
            .verify_cached(&token, NOW + 1000, &cache)
            .expect("from the cache");
        assert!(
            std::sync::Arc::ptr_eq(&first, &second),
            "{alg:?}: served from the cache"
        );
        assert_eq!(*first, v.verify(&token, NOW).expect("same claims"));
        // At exp + leeway the cached entry is gone and the verifier refuses.
        let end = (NOW_S + 3600 + 30) * 1000;
        assert_eq!(
            v.verify_cached(&token, end, &cache).expect_err("expired"),
            TokenError::Expired
        );
    }
    assert_eq!(len(), 0, "an expired entry is dropped when looked up");

    let hmac = sign(
        &EncodingKey::from_secret(SECRET).expect("k"),
        Algorithm::HS256,
        None,
        &claims(json!({})),
    )
    .expect("sign");
    let before = len();
    v.verify_cached(&hmac, NOW, &cache).expect("verifies");
    assert_eq!(len(), before, "HMAC tokens are not cached");

    // A token that fails is never cached, and a tampered twin misses the cache.
    let token = sign(&rsa, Algorithm::RS256, None, &claims(json!({}))).expect("sign");
    v.verify_cached(&token, NOW, &cache).expect("verifies");
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(v.verify_cached(&tampered, NOW, &cache).is_err());
}

#[test]
fn a_published_jwks_is_taken_whole_or_not_at_all() {
    let ed_public =
        jsonwebtoken::DecodingKey::from_ed_pem(&key_file("ed25519.pub.pem")).expect("ed");
    let ed = |kid: &str| {
        let jwk = jsonwebtoken::jwk::Jwk::from_decoding_key(&ed_public, Some(Algorithm::EdDSA))
            .expect("jwk");
        let mut jwk = serde_json::to_value(jwk).expect("json");
        jwk["kid"] = json!(kid);
        jwk
    };
    let oct = json!({"kty": "oct", "kid": "s", "k": b64url(SECRET)});
    let enc_only = json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"});
    let mut base = KeySet::new();
    base.add_hmac_secret(Some("hs"), SECRET).expect("hs");
    type Expected = fn(&KeyError) -> bool;
    let refused: [(Value, Expected); 5] = [
        (json!({"keys": [ed("a"), oct]}), |e| {
            *e == KeyError::SymmetricInPublished
        }),
        (json!({"keys": [ed("a"), ed("a")]}), |e| {
            *e == KeyError::DuplicateKid("a".into())
        }),
        (
            json!({"keys": (0..101).map(|i| ed(&format!("k{i}"))).collect::<Vec<_>>()}),
            |e| {
                *e == KeyError::TooManyKeys {
                    count: 101,
                    max: 100,
                }
            },
        ),
        (json!({"keys": [enc_only]}), |e| {
            matches!(e, KeyError::BadJwks(_))
        }),
        (json!({"keys": [ed("hs")]}), |e| {
            *e == KeyError::DuplicateKid("hs".into())
        }),
    ];
    for (doc, expected) in refused {
        let mut keys = base.clone();
        let err = keys
            .add_published_jwks_json(&doc.to_string(), 100)
            .expect_err("refused");
        assert!(expected(&err), "{err}");
        assert_eq!(keys.len(), 1, "unchanged after {err}");
    }
    // The oct key is fine in a file (add_jwks_json), not in a published set.
    let mut keys = base.clone();
    assert_eq!(
        keys.add_published_jwks_json(&json!({"keys": [ed("a"), ed("b")]}).to_string(), 100),
        Ok(2)
    );
    assert_eq!(keys.len(), 3);
}

#[test]
fn the_unverified_issuer_routes_a_token_and_refuses_what_verification_would() {
    let token = |payload: &str| raw_token(r#"{"alg":"HS256"}"#, payload);
    let a = token(r#"{"sub":"alice","exp":1,"iss":"https://a.example/"}"#);
    assert_eq!(
        unverified_issuer(&a, 8192),
        Ok(Some("https://a.example/".to_owned()))
    );
    assert_eq!(
        unverified_issuer(&token(r#"{"sub":"alice"}"#), 8192),
        Ok(None)
    );
    assert_eq!(
        unverified_issuer(&token(r#"{"iss":"a","iss":"b"}"#), 8192),
        Err(TokenError::DuplicateName)
    );
    assert_eq!(
        unverified_issuer(&token(r#"{"iss":7}"#), 8192),
        Err(TokenError::WrongClaimType("iss"))
    );
    assert!(matches!(
        unverified_issuer("a.b", 8192),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        unverified_issuer("a.b.c.d.e", 8192),
        Err(TokenError::Malformed(_))
    ));
    assert_eq!(
        unverified_issuer(&a, 16),
        Err(TokenError::TooLarge { max: 16 })
    );
}

#[test]
fn a_jwt_is_told_from_an_opaque_token_by_its_shape() {
    let jwt = sign_hs256(SECRET, &claims(json!({})));
    assert!(looks_like_jwt(&jwt));
    for opaque in [
        "2YotnFZFEjr1zCsicMWpAA",
        "a.b.c",
        "ory_at_abc.def",
        "",
        &format!("{jwt}.extra"),
    ] {
        assert!(!looks_like_jwt(opaque), "{opaque:?}");
    }
}

#[test]
fn an_introspection_answer_is_checked_by_the_rules_of_a_token_payload() {
    let config = VerifierConfig {
        issuer: Some("https://id.example/".to_owned()),
        audience: vec!["wsauth".to_owned()],
        ..VerifierConfig::default()
    };
    let answer = |extra: Value| {
        let mut c = claims(json!({"iss": "https://id.example/", "aud": "wsauth", "active": true}));
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        serde_json::to_vec(&c).expect("json")
    };
    let claims = config
        .check_claims_json(&answer(json!({"scope": "chat"})), NOW)
        .expect("accepted");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.extra["scope"], "chat");
    assert_eq!(claims.extra["active"], true);
    assert_eq!(
        config.check_claims_json(&answer(json!({"iss": "https://other/"})), NOW),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(
        config.check_claims_json(&answer(json!({"exp": NOW_S - 3600})), NOW),
        Err(TokenError::Expired)
    );
    assert_eq!(
        config.check_claims_json(b"[1]", NOW),
        Err(TokenError::Malformed("claims are not a JSON object"))
    );
}

#[test]
fn a_provider_refusal_fails_auth_and_an_unreachable_provider_fails_closed() {
    assert_eq!(TokenError::Inactive.code(), ErrorCode::AuthFailed);
    assert_eq!(TokenError::Unavailable.code(), ErrorCode::Internal);
}

#[test]
fn a_token_living_longer_than_the_revocations_is_refused() {
    const DAY_S: u64 = 86_400;
    let v = hs_verifier(VerifierConfig {
        max_lifetime_s: Some(DAY_S),
        ..VerifierConfig::default()
    });
    // Issue 15, finding 6: `iat` in 2001, `exp` in 2286.
    let ancient = sign_hs256(
        SECRET,
        &claims(json!({"iat": 1_000_000_000u64, "exp": 9_999_999_999u64})),
    );
    let e = refused(&v, &ancient, NOW);
    assert_eq!(e, TokenError::LifetimeTooLong { max_s: DAY_S });
    assert_eq!(e.code(), ErrorCode::InvalidToken);
    assert!(e.to_string().contains("86400"), "{e}");
    // Without `iat`, the lifetime counts from now.
    let far = sign_hs256(SECRET, &claims(json!({"exp": NOW_S + DAY_S + 1})));
    assert_eq!(
        refused(&v, &far, NOW),
        TokenError::LifetimeTooLong { max_s: DAY_S }
    );
    let just = sign_hs256(SECRET, &claims(json!({"exp": NOW_S + DAY_S})));
    assert!(v.verify(&just, NOW).is_ok(), "exactly the bound");
    // An old `iat` does not count against a token that ends within the bound.
    let old_iat = sign_hs256(
        SECRET,
        &claims(json!({"iat": NOW_S - 10 * DAY_S, "exp": NOW_S + 3600})),
    );
    assert!(v.verify(&old_iat, NOW).is_ok());
    // An `iat` a little ahead (within the leeway) counts from itself.
    let ahead = sign_hs256(
        SECRET,
        &claims(json!({"iat": NOW_S + 20, "exp": NOW_S + 20 + DAY_S})),
    );
    assert!(v.verify(&ahead, NOW).is_ok());
    // Without a bound, the ancient token still verifies (the default).
    assert!(
        hs_verifier(VerifierConfig::default())
            .verify(&ancient, NOW)
            .is_ok()
    );
    // Introspection answers follow the same rule.
    let answer = serde_json::to_vec(&claims(json!({"exp": 9_999_999_999u64}))).expect("json");
    assert_eq!(
        v.config().check_claims_json(&answer, NOW),
        Err(TokenError::LifetimeTooLong { max_s: DAY_S })
    );
}

#[test]
fn a_required_typ_must_be_present_and_equal() {
    let v = hs_verifier(VerifierConfig {
        required_typ: Some("at+jwt".to_owned()),
        ..VerifierConfig::default()
    });
    let payload = claims(json!({})).to_string();
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/At+JWT",
    ] {
        let t = raw_token(&format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#), &payload);
        assert!(v.verify(&t, NOW).is_ok(), "{typ}");
    }
    let none = raw_token(r#"{"alg":"HS256"}"#, &payload);
    assert_eq!(refused(&v, &none, NOW), TokenError::BadType);
    for typ in [
        r#""JWT""#,
        r#""application/jwt""#,
        r#""at+jwt2""#,
        "1",
        "null",
    ] {
        let t = raw_token(&format!(r#"{{"alg":"HS256","typ":{typ}}}"#), &payload);
        assert_eq!(refused(&v, &t, NOW), TokenError::BadType, "{typ}");
    }
    assert_eq!(TokenError::BadType.code(), ErrorCode::InvalidToken);
    // Configured with the prefix, it means the same.
    let prefixed = hs_verifier(VerifierConfig {
        required_typ: Some("application/at+jwt".to_owned()),
        ..VerifierConfig::default()
    });
    let t = raw_token(r#"{"alg":"HS256","typ":"at+jwt"}"#, &payload);
    assert!(prefixed.verify(&t, NOW).is_ok());
    // Without the setting, a missing `typ` is fine.
    assert!(
        hs_verifier(VerifierConfig::default())
            .verify(&none, NOW)
            .is_ok()
    );
}
