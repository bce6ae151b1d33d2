//! KServe V2 / Triton's commonest REST infer body, read into buffers of doubles: Rust's
//! side of `ferry.codecs.v2_front`.
//!
//! `{"id": "...", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
//! "data": [numbers, ...]}, ...]}`, the shape Triton's and KServe's clients send for
//! numeric tensors, is taken when:
//! - the object's keys are "inputs", and optionally "id" (a string) and "parameters" (an
//!   object of true, false, integers of at most 15 digits and strings: tritonclient
//!   sends `{"binary_data_output": true}`), none repeated;
//! - "inputs" is a non-empty array of objects whose keys are exactly "name" (a string),
//!   "shape" (an array of integers of at most 15 digits), "datatype" ("FP32" or "FP64")
//!   and "data" (a non-empty flat array of numbers), none repeated;
//! - strings hold no escapes, numbers follow `json::Cursor`'s rules.
//!
//! Anything else (outputs, parameters, other datatypes, nested data, binary data) is read
//! by Python as before. Python still checks everything it checks on its own path (names
//! given twice, the shape against the data, the signature): Rust only replaces orjson's
//! parse, giving the same numbers as doubles. Memory: at most one double per two body
//! bytes, the body bounded by `--max_request_bytes` before this runs.

use super::json::Cursor;

pub const DATATYPES: [&str; 2] = ["FP32", "FP64"];

/// One input as the body gives it.
#[derive(Debug, PartialEq)]
pub struct V2Input {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
    pub values: Vec<f64>,
}

/// A request parameter's value.
#[derive(Debug, PartialEq)]
pub enum Parameter {
    Bool(bool),
    Int(i64),
    Str(String),
}

/// A body's request id, parameters and inputs, in the body's order.
#[derive(Debug, PartialEq)]
pub struct V2Inputs {
    pub id: Option<String>,
    pub parameters: Option<Vec<(String, Parameter)>>,
    pub inputs: Vec<V2Input>,
}

fn parameters(cursor: &mut Cursor<'_>) -> Option<Vec<(String, Parameter)>> {
    cursor.eat(b'{')?;
    let mut read: Vec<(String, Parameter)> = Vec::new();
    if cursor.peek()? == b'}' {
        cursor.advance();
        return Some(read);
    }
    loop {
        let key = cursor.plain_string()?.to_owned();
        if read.iter().any(|(k, _)| *k == key) {
            return None; // repeated: orjson keeps the last, Python's reading decides
        }
        cursor.eat(b':')?;
        let value = match cursor.peek()? {
            b'"' => Parameter::Str(cursor.plain_string()?.to_owned()),
            b't' | b'f' => Parameter::Bool(cursor.boolean()?),
            _ => Parameter::Int(cursor.integer()?),
        };
        read.push((key, value));
        if !cursor.more(b'}')? {
            return Some(read);
        }
    }
}

fn shape(cursor: &mut Cursor<'_>) -> Option<Vec<i64>> {
    cursor.eat(b'[')?;
    let mut dims = Vec::new();
    if cursor.peek()? == b']' {
        cursor.advance();
        return Some(dims);
    }
    loop {
        dims.push(cursor.natural()?);
        if !cursor.more(b']')? {
            return Some(dims);
        }
    }
}

fn input(cursor: &mut Cursor<'_>) -> Option<V2Input> {
    cursor.eat(b'{')?;
    let (mut name, mut datatype, mut dims, mut values) = (None, None, None, None);
    loop {
        let key = cursor.plain_string()?;
        cursor.eat(b':')?;
        match key {
            "name" if name.is_none() => name = Some(cursor.plain_string()?.to_owned()),
            "datatype" if datatype.is_none() => {
                let given = cursor.plain_string()?;
                datatype = Some(*DATATYPES.iter().find(|d| **d == given)?);
            }
            "shape" if dims.is_none() => dims = Some(shape(cursor)?),
            "data" if values.is_none() => {
                let mut read = Vec::new();
                cursor.numbers(&mut read)?;
                values = Some(read);
            }
            _ => return None,
        }
        if !cursor.more(b'}')? {
            break;
        }
    }
    Some(V2Input {
        name: name?,
        datatype: datatype?,
        shape: dims?,
        values: values?,
    })
}

/// The body's id and inputs, or None when it is not exactly the shape above.
pub fn parse_v2_inputs(body: &[u8]) -> Option<V2Inputs> {
    let mut cursor = Cursor::new(body);
    cursor.eat(b'{')?;
    let (mut id, mut inputs, mut given) = (None, None, None);
    loop {
        let key = cursor.plain_string()?;
        cursor.eat(b':')?;
        match key {
            "id" if id.is_none() => id = Some(cursor.plain_string()?.to_owned()),
            "parameters" if given.is_none() => given = Some(parameters(&mut cursor)?),
            "inputs" if inputs.is_none() => {
                cursor.eat(b'[')?;
                let mut read = Vec::new();
                loop {
                    read.push(input(&mut cursor)?);
                    if !cursor.more(b']')? {
                        break;
                    }
                }
                inputs = Some(read);
            }
            _ => return None,
        }
        if !cursor.more(b'}')? {
            break;
        }
    }
    if !cursor.at_end() {
        return None;
    }
    Some(V2Inputs {
        id,
        parameters: given,
        inputs: inputs?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Option<V2Inputs> {
        parse_v2_inputs(body.as_bytes())
    }

    #[test]
    fn takes_the_clients_numeric_body() {
        let body = r#"{"id": "r1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
            "data": [1, 2.5, -0.0, 1e2]}, {"data": [7], "datatype": "FP64", "shape": [], "name": "s"}]}"#;
        let parsed = parse(body).unwrap();
        assert_eq!(parsed.id.as_deref(), Some("r1"));
        assert_eq!(parsed.inputs.len(), 2);
        assert_eq!(parsed.inputs[0].shape, vec![2, 2]);
        assert_eq!(parsed.inputs[0].values, vec![1.0, 2.5, -0.0, 100.0]);
        assert_eq!(
            (parsed.inputs[1].name.as_str(), parsed.inputs[1].datatype),
            ("s", "FP64")
        );
        assert!(parsed.inputs[1].shape.is_empty());
    }

    #[test]
    fn takes_tritonclients_parameters() {
        let body = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0.5]}],
            "parameters":{"binary_data_output":true,"timeout":100,"tag":"a"}}"#;
        let parameters = parse(body).unwrap().parameters.unwrap();
        assert_eq!(
            parameters,
            vec![
                ("binary_data_output".into(), Parameter::Bool(true)),
                ("timeout".into(), Parameter::Int(100)),
                ("tag".into(), Parameter::Str("a".into())),
            ]
        );
        for odd in [
            r#"{"a": 1.5}"#,
            r#"{"a": {}}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": null}"#,
            r#"{"a": - 15}"#,
            r#"{"a": -0}"#,
        ] {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[1]}}],"parameters":{odd}}}"#
            );
            assert_eq!(parse(&body), None, "{body}");
        }
    }

    #[test]
    fn leaves_everything_else_to_python() {
        let input = r#""name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]"#;
        for body in [
            format!(r#"{{"inputs": [{{{input}}}], "outputs": []}}"#),
            format!(r#"{{"inputs": [{{{input}, "parameters": {{}}}}]}}"#),
            format!(r#"{{"inputs": [{{{input}}}], "inputs": []}}"#),
            format!(r#"{{"inputs": [{{{input}}}]}} x"#),
            r#"{"inputs": []}"#.to_owned(),
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2]}]}"#.to_owned(),
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1], [2]]}]}"#.to_owned(),
            r#"{"inputs": [{"name": "x", "shape": [2.0], "datatype": "FP32", "data": [1, 2]}]}"#.to_owned(),
            r#"{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1, 2]}]}"#.to_owned(),
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": []}]}"#.to_owned(),
            r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}"#.to_owned(),
            r#"{"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}"#.to_owned(),
            r#"{"inputs": [{"name": "\u0078", "shape": [1], "datatype": "FP32", "data": [1]}]}"#.to_owned(),
        ] {
            assert_eq!(parse(&body), None, "{body}");
        }
    }
}
