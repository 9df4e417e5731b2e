//! Every position scheme, as the `model.position` JSON of a config — the one list the tests that go over all of
//! them share (a new scheme is added here once).

pub fn every_position() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({"kind": "none"}),
        serde_json::json!({"kind": "learned"}),
        serde_json::json!({"kind": "sinusoidal"}),
        serde_json::json!({"kind": "rope", "theta": 10000.0}),
        serde_json::json!({"kind": "alibi"}),
        serde_json::json!({"kind": "relative", "buckets": 8, "max_distance": 12}),
        serde_json::json!({"kind": "recurrent"}),
    ]
}
