//! The CLI prints workflow outputs it read as JSON (`sweep --wait`'s report, `status`): a ratio must come out
//! digit for digit as the workflow wrote it. serde_json's default float parser may be one ULP off; the workspace
//! enables `float_roundtrip`.

#[test]
fn floats_read_from_a_workflow_output_print_unchanged() {
    // 97/103.2 and friends: values whose shortest representation the default parser misreads
    for text in [
        "0.9398058252427185",
        "0.1",
        "0.30000000000000004",
        "2.2250738585072014e-308",
        "0.9523809523809523",
    ] {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let expected: f64 = text.parse().unwrap();
        assert_eq!(v.as_f64().unwrap().to_bits(), expected.to_bits(), "{text}");
        let back: f64 = serde_json::to_string(&v).unwrap().parse().unwrap();
        assert_eq!(back.to_bits(), expected.to_bits(), "{text}");
    }
}
