//! The reply writer's primitives: JSON appended to a byte buffer.
//!
//! Replies are written straight from the engine's state, one way: constant
//! pieces (an object's opening and first key, a member's key with its
//! comma, from `key!`) are copied whole, and values go through the
//! methods of [`WriteJson`]. Nothing builds an intermediate JSON value.

/// `,"name":`, the key of an object member after the first, as one
/// constant piece.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}
pub(crate) use key;

/// The bytes a JSON string must escape: control characters, `"` and `\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends JSON values.
pub trait WriteJson {
    /// A constant piece, copied as it is.
    fn raw(&mut self, piece: &[u8]);
    /// A string, escaped as JSON requires.
    fn str(&mut self, s: &str);
    fn u64(&mut self, n: u64);
    fn i64(&mut self, n: i64);
    fn i128(&mut self, n: i128);
    /// A number as serde_json writes it (`1.0`, `20.25`); `null` if not
    /// finite.
    fn f64(&mut self, x: f64);
    fn bool(&mut self, b: bool);
    /// An array of `items`, each written by `item`.
    fn list<T>(&mut self, items: impl IntoIterator<Item = T>, item: impl FnMut(&mut Self, T));
    /// A number, or `null`.
    fn opt_u64(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.u64(n),
            None => self.raw(b"null"),
        }
    }
    /// A number, or `null`.
    fn opt_f64(&mut self, x: Option<f64>) {
        match x {
            Some(x) => self.f64(x),
            None => self.raw(b"null"),
        }
    }
    /// A string, or `null`.
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw(b"null"),
        }
    }
}

impl WriteJson for Vec<u8> {
    fn raw(&mut self, piece: &[u8]) {
        self.extend_from_slice(piece);
    }

    fn str(&mut self, s: &str) {
        if !s.bytes().any(|b| NEEDS_ESCAPE[usize::from(b)]) {
            self.push(b'"');
            self.extend_from_slice(s.as_bytes());
            self.push(b'"');
        } else {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *self, s);
        }
    }

    fn u64(&mut self, n: u64) {
        self.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn i64(&mut self, n: i64) {
        self.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn i128(&mut self, n: i128) {
        self.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn f64(&mut self, x: f64) {
        // serde_json's own formatting, so that figures read the same
        // wherever they are written.
        let _ = serde_json::to_writer(&mut *self, &x);
    }

    fn bool(&mut self, b: bool) {
        self.extend_from_slice(if b { b"true" } else { b"false" });
    }

    fn list<T>(&mut self, items: impl IntoIterator<Item = T>, mut item: impl FnMut(&mut Self, T)) {
        self.push(b'[');
        for (i, x) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(b',');
            }
            item(self, x);
        }
        self.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let mut out = Vec::new();
        out.raw(b"{\"a\":");
        out.str("x\"\n\u{7}é");
        out.raw(key!("b"));
        out.list([1.0, 20.25, 1e300, f64::NAN], |out, x| out.f64(x));
        out.raw(key!("c"));
        out.list([Some(3), None], |out, n| out.opt_u64(n));
        out.raw(key!("d"));
        out.i128(-(1 << 70));
        out.raw(b"}");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"a":"x\"\n\u0007é","b":[1.0,20.25,1e+300,null],"c":[3,null],"d":-1180591620717411303424}"#
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["a"], "x\"\n\u{7}é");
    }
}
