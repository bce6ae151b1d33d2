//! The `:predict` row decoder on arbitrary bytes: it never panics, and whatever it
//! takes is valid JSON of the shape it claims (`{"instances": [[numbers]]}`, all rows of
//! one width) whose numbers serde_json reads as the same doubles, bit for bit (but the
//! sign of a zero written as the integer `-0`).

#![no_main]

use _dataplane::codec::float_rows::parse_float_rows;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let Some(rows) = parse_float_rows(body) else {
        return;
    };
    assert!(rows.rows >= 1 && rows.width >= 1);
    assert_eq!(rows.values.len(), rows.rows * rows.width);
    let document: Value = serde_json::from_slice(body).expect("taken bodies are JSON");
    let object = document.as_object().expect("an object");
    let instances = object["instances"]
        .as_array()
        .expect("instances is an array");
    assert_eq!(instances.len(), rows.rows);
    let mut expected = Vec::with_capacity(rows.values.len());
    for row in instances {
        let row = row.as_array().expect("rows are arrays");
        assert_eq!(row.len(), rows.width);
        expected.extend(row.iter().map(|v| v.as_f64().expect("numbers")));
    }
    for (taken, read) in rows.values.iter().zip(&expected) {
        // serde_json reads `-0` as the integer 0; ferry, as simdjson, as the double -0.0.
        let zeros = *taken == 0.0 && *read == 0.0;
        assert!(
            taken.to_bits() == read.to_bits() || zeros,
            "{taken} != {read}"
        );
    }
    match (&rows.signature_name, object.get("signature_name")) {
        (Some(name), Some(Value::String(read))) => assert_eq!(name, read),
        (None, None) => {}
        other => panic!("signature_name differs: {other:?}"),
    }
});
