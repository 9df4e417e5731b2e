//! Issue 20 §3, what fuzzing the engine's requests found and asks for (docs/RELIABILITY.md, "Fuzzing"): the
//! browser facade's request handling (`facade`, called by src/wasm.rs) refuses bad arguments with an error naming
//! the argument, and each crash the fuzz targets (fuzz/) found has its regression test here.

use transformer_playground::facade;
use transformer_playground::Error;

fn refused_options(json: &str) -> String {
    match facade::sample_options(json) {
        Err(e @ Error::Invalid(_)) => e.to_string(),
        other => panic!("{json}: expected an 'invalid' error, got {other:?}"),
    }
}

#[test]
fn sampling_options_of_the_wrong_type_are_refused_naming_the_option() {
    for (json, name) in [
        (r#"{"temperature": "hot"}"#, "temperature"),
        (r#"{"max_tokens": 1.5}"#, "max_tokens"),
        (r#"{"max_tokens": -3}"#, "max_tokens"),
        (r#"{"top_k": null}"#, "top_k"),
        (r#"{"seed": 7, "top_p": [1]}"#, "top_p"),
        // Found by fuzz target `sampling`: a repeated option whose first value has the wrong type was refused
        // with serde's line and column only.
        (r#"{"top_k": 0.05, "top_k": 1}"#, "top_k"),
    ] {
        let msg = refused_options(json);
        assert!(msg.starts_with(&format!("sampling options: {name} = ")), "{json}: {msg}");
    }
}

#[test]
fn sampling_options_out_of_range_unknown_or_repeated_are_refused_naming_the_option() {
    for (json, name) in [
        (r#"{"temperature": -1}"#, "temperature"),
        (r#"{"top_p": 0}"#, "top_p"),
        (r#"{"max_tokens": 100001}"#, "max_tokens"),
        (r#"{"topk": 3}"#, "topk"),
        (r#"{"seed": 1, "seed": 2}"#, "seed"),
    ] {
        let msg = refused_options(json);
        assert!(msg.contains(name), "{json}: {msg}");
    }
}

#[test]
fn empty_sampling_options_are_the_defaults() {
    assert_eq!(facade::sample_options(" ").unwrap(), Default::default());
    assert_eq!(facade::sample_options("{}").unwrap(), Default::default());
}
