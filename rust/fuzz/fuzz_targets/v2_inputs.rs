//! The V2 infer decoder on arbitrary bytes: it never panics, and whatever it takes is
//! valid JSON that serde_json reads as the same request: the id, the parameters (true,
//! false, integers, strings) and each input's name, datatype, shape and numbers, in order
//! (the numbers bit for bit, but the sign of a zero written as the integer `-0`).

#![no_main]

use _dataplane::codec::v2_inputs::{parse_v2_inputs, Parameter};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let Some(decoded) = parse_v2_inputs(body) else {
        return;
    };
    let document: Value = serde_json::from_slice(body).expect("taken bodies are JSON");
    let object = document.as_object().expect("an object");
    assert_eq!(
        decoded.id.as_deref(),
        object.get("id").map(|id| id.as_str().expect("a string id"))
    );
    match (&decoded.parameters, object.get("parameters")) {
        (None, None) => {}
        (Some(taken), Some(Value::Object(read))) => {
            assert_eq!(taken.len(), read.len());
            for (key, value) in taken {
                let read = &read[key.as_str()];
                match value {
                    Parameter::Bool(v) => assert_eq!(read.as_bool(), Some(*v)),
                    Parameter::Int(v) => assert_eq!(read.as_i64(), Some(*v)),
                    Parameter::Str(v) => assert_eq!(read.as_str(), Some(v.as_str())),
                }
            }
        }
        other => panic!("parameters differ: {other:?}"),
    }
    let inputs = object["inputs"].as_array().expect("inputs is an array");
    assert_eq!(inputs.len(), decoded.inputs.len());
    for (taken, read) in decoded.inputs.iter().zip(inputs) {
        let read = read.as_object().expect("an input object");
        assert_eq!(read.len(), 4);
        assert_eq!(read["name"].as_str(), Some(taken.name.as_str()));
        assert_eq!(read["datatype"].as_str(), Some(taken.datatype));
        let shape: Vec<i64> = read["shape"]
            .as_array()
            .expect("a shape array")
            .iter()
            .map(|d| d.as_i64().expect("integer dims"))
            .collect();
        assert_eq!(shape, taken.shape);
        let data = read["data"].as_array().expect("a data array");
        assert_eq!(data.len(), taken.values.len());
        for (value, number) in taken.values.iter().zip(data) {
            let number = number.as_f64().expect("numbers");
            let zeros = *value == 0.0 && number == 0.0;
            assert!(
                value.to_bits() == number.to_bits() || zeros,
                "{value} != {number}"
            );
        }
    }
});
