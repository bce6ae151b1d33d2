//! TF Serving's commonest `:predict` body, `{"instances": [[numbers, ...], ...]}`, read
//! into one buffer of doubles: Rust's side of `ferry.codecs.float_rows`.
//!
//! Taken exactly when Python's `parse_float_rows` would take the body and give the same
//! doubles (ferry.codecs.float_rows documents the shape): an object whose only keys are
//! "instances" and optionally "signature_name" (a string without `[`), neither repeated;
//! "instances" a non-empty array of non-empty arrays of JSON numbers, all of one length.
//! Narrower than Python where being sure costs more than it gains, so a body outside
//! these is left to Python (which may still take its own fast path):
//! - keys and the signature name without escapes;
//! - integers of at most 15 digits (exact as doubles, however they are converted);
//! - numbers whose double is finite.
//!
//! Every number is parsed by Rust's correctly rounded `f64` parser, as simdjson parses
//! them, so the doubles are the same bit for bit. Memory: at most one double per two
//! body bytes, and the body is bounded by `--max_request_bytes` before this runs.

/// A body's rows: `values` holds `rows` x `width` doubles, row after row.
#[derive(Debug, PartialEq)]
pub struct FloatRows {
    pub signature_name: Option<String>,
    pub rows: usize,
    pub width: usize,
    pub values: Vec<f64>,
}

use super::json::Cursor;

/// `[[n, ...], ...]`: the rows, all of one non-zero width.
fn rows(cursor: &mut Cursor<'_>, values: &mut Vec<f64>) -> Option<(usize, usize)> {
    cursor.eat(b'[')?;
    let mut rows = 0;
    let mut width = 0;
    loop {
        let row_width = cursor.numbers(values)?;
        if rows == 0 {
            width = row_width;
        } else if row_width != width {
            return None;
        }
        rows += 1;
        if !cursor.more(b']')? {
            return Some((rows, width));
        }
    }
}

/// The body's rows, or None when it is not exactly the shape above.
pub fn parse_float_rows(body: &[u8]) -> Option<FloatRows> {
    let mut cursor = Cursor::new(body);
    cursor.eat(b'{')?;
    let mut signature_name: Option<String> = None;
    let mut instances: Option<(usize, usize, Vec<f64>)> = None;
    loop {
        match cursor.plain_string()? {
            "instances" if instances.is_none() => {
                cursor.eat(b':')?;
                let mut values = Vec::new();
                let (rows, width) = rows(&mut cursor, &mut values)?;
                instances = Some((rows, width, values));
            }
            "signature_name" if signature_name.is_none() => {
                cursor.eat(b':')?;
                let name = cursor.plain_string()?;
                if name.contains('[') {
                    return None;
                }
                signature_name = Some(name.to_owned());
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
    let (rows, width, values) = instances?;
    Some(FloatRows {
        signature_name,
        rows,
        width,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(body: &str) -> Option<(Option<String>, usize, usize, Vec<f64>)> {
        parse_float_rows(body.as_bytes()).map(|r| (r.signature_name, r.rows, r.width, r.values))
    }

    #[test]
    fn takes_the_plain_shape() {
        assert_eq!(
            rows(r#" {"instances": [[1, 2.5], [-0.0, 1e2]]} "#),
            Some((None, 2, 2, vec![1.0, 2.5, -0.0, 100.0]))
        );
        let (_, _, _, zero) = rows(r#"{"instances": [[-0]]}"#).unwrap();
        assert!(
            zero[0].is_sign_positive(),
            "an integer -0 is +0.0, as simdjson has it"
        );
        assert_eq!(
            rows(r#"{"instances": [[1]]}"#).map(|r| r.3),
            Some(vec![1.0])
        );
        assert_eq!(
            rows(r#"{"signature_name":"s","instances":[[3]]}"#),
            Some((Some("s".into()), 1, 1, vec![3.0]))
        );
    }

    #[test]
    fn leaves_everything_else_to_python() {
        for body in [
            r#"{"instances": []}"#,
            r#"{"instances": [[]]}"#,
            r#"{"instances": [1, 2]}"#,
            r#"{"instances": [[1], [1, 2]]}"#,
            r#"{"instances": [[[1]]]}"#,
            r#"{"instances": [[1]], "instances": [[1]]}"#,
            r#"{"instances": [[1]], "x": 1}"#,
            r#"{"inputs": [[1]]}"#,
            r#"{"signature_name": "a[", "instances": [[1]]}"#,
            r#"{"signature_name": 1, "instances": [[1]]}"#,
            r#"{"instan\u0063es": [[1]]}"#,
            r#"{"instances": [[NaN]]}"#,
            r#"{"instances": [[1e400]]}"#,
            r#"{"instances": [[01]]}"#,
            r#"{"instances": [[1.]]}"#,
            r#"{"instances": [[.5]]}"#,
            r#"{"instances": [[+1]]}"#,
            r#"{"instances": [[1234567890123456]]}"#,
            r#"{"instances": [[true]]}"#,
            r#"{"instances": [["1"]]}"#,
            r#"{"instances": [[1]]} x"#,
            r#"{"instances": [[1]],}"#,
            r#"{"instances": [[1,]]}"#,
            r#"{"instances": [[1]]"#,
            r#"[[1]]"#,
            "",
        ] {
            assert_eq!(rows(body), None, "{body}");
        }
    }

    #[test]
    fn doubles_are_correctly_rounded() {
        let (_, _, _, values) =
            rows(r#"{"instances": [[0.1, 123456789012345, 2.2250738585072014e-308]]}"#).unwrap();
        assert_eq!(
            values,
            vec![0.1, 123456789012345.0, 2.2250738585072014e-308]
        );
    }
}
