//! A strict reader of the JSON the fast paths take: plain strings (no escapes), numbers
//! in JSON's exact grammar that are finite doubles (integers of at most 15 digits, which
//! every converter makes the same double), arrays and objects read by the callers.

pub const MAX_INTEGER_DIGITS: usize = 15;

/// A position in a body; each reader takes exactly what it is written for and answers
/// None for anything else.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    pub fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    pub fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string without escapes or control characters (anything else: None).
    pub fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' => return None,
                byte if byte < 0x20 => return None,
                _ => self.at += 1,
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        self.at += 1;
        Some(text)
    }

    /// A JSON number (strict grammar) as a finite double.
    pub fn number(&mut self) -> Option<f64> {
        self.skip_space();
        let start = self.at;
        let digits = |cursor: &mut Self| {
            let from = cursor.at;
            while cursor.bytes.get(cursor.at).is_some_and(u8::is_ascii_digit) {
                cursor.at += 1;
            }
            cursor.at - from
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let first = *self.bytes.get(self.at)?;
        let integer_digits = digits(self);
        if integer_digits == 0 || (first == b'0' && integer_digits > 1) {
            return None;
        }
        let mut integral = true;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
            integral = false;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return None;
            }
            integral = false;
        }
        if integral && integer_digits > MAX_INTEGER_DIGITS {
            return None;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        if integral {
            // An integer literal is an int64 to simdjson, then a double: `-0` is +0.0.
            return text.parse::<i64>().ok().map(|value| value as f64);
        }
        text.parse::<f64>().ok().filter(|value| value.is_finite())
    }

    /// A non-negative integer written as one (`0`, `12`; not `-0`, `1.0`, `1e1`), of at
    /// most 15 digits.
    pub fn natural(&mut self) -> Option<i64> {
        self.skip_space();
        self.unsigned_here()
    }

    /// `natural` from exactly here: no white space may come first (after a `-`, JSON
    /// allows none).
    fn unsigned_here(&mut self) -> Option<i64> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        let leading_zero = digits.len() > 1 && digits[0] == b'0';
        let continues = matches!(self.bytes.get(self.at), Some(b'.' | b'e' | b'E'));
        if digits.is_empty() || digits.len() > MAX_INTEGER_DIGITS || leading_zero || continues {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// An integer written as one (`-12`, `0`; not `1.0`, `1e1`, `01`, nor `-0`, which
    /// JSON readers disagree on), of at most 15 digits.
    pub fn integer(&mut self) -> Option<i64> {
        self.skip_space();
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let value = self.unsigned_here()?;
        match (negative, value) {
            (true, 0) => None,
            (true, _) => Some(-value),
            (false, _) => Some(value),
        }
    }

    /// `true` or `false`.
    pub fn boolean(&mut self) -> Option<bool> {
        self.skip_space();
        for (word, value) in [(&b"true"[..], true), (&b"false"[..], false)] {
            if self.bytes[self.at..].starts_with(word) {
                self.at += word.len();
                return Some(value);
            }
        }
        None
    }

    /// Steps over the byte `peek` just returned.
    pub fn advance(&mut self) {
        self.at += 1;
    }

    /// `[n, ...]`: a non-empty flat array of numbers, appended to `values`; their count.
    pub fn numbers(&mut self, values: &mut Vec<f64>) -> Option<usize> {
        self.eat(b'[')?;
        let before = values.len();
        loop {
            values.push(self.number()?);
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(values.len() - before);
                }
                _ => return None,
            }
        }
    }

    /// `,` (more follows: true) or the closing byte `close` (false).
    pub fn more(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(true)
            }
            byte if byte == close => {
                self.at += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Whether only white space is left.
    pub fn at_end(&mut self) -> bool {
        self.skip_space();
        self.at == self.bytes.len()
    }
}
