//! The envelope's and the body's fields: the one list of each, and the check
//! of every field.
//!
//! Both parses read the same [`Envelope`] and [`Fields`] types; they differ
//! only in [`Repr`], how a field is held between reading and checking:
//!
//! - [`OnePass`] reads strings, booleans and snapshot entries straight to
//!   their values, so a field of the wrong type makes the whole read fail,
//!   and the message goes to the precise parse instead;
//! - [`Precise`] keeps every field as raw JSON and checks each on its own,
//!   with an error that names the field and says what was wrong.
//!
//! Numbers are raw JSON text in both and checked by the same functions
//! here; strings and snapshots go through the same `Deserialize` impls in
//! both. A message either parses to the same request both ways, or the
//! one-pass read declines it.

use super::{ErrorCode, MsgId, ProtocolError};
pub use crate::engine::short_name;
use crate::engine::{MAX_COUNT, MAX_DURATION_MS};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A string that borrows from the input unless it had escapes to undo.
#[derive(Debug)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// An object's members in order, values left as raw JSON: a snapshot's
/// entries, or a backend object's fields. Repeated keys are kept.
#[derive(Debug)]
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Deserialize<'a> for Members<'a> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'a> Visitor<'a> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Text(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// How fields are held between reading and checking. See the module docs.
pub trait Repr<'a>: Sized {
    /// A string field.
    type Str: Deserialize<'a>;
    /// A boolean field.
    type Bool: Deserialize<'a>;
    /// An object of backend names to counts.
    type Entries: Deserialize<'a>;
    /// A number or a structure checked element by element: raw JSON in both.
    type Raw: Deserialize<'a>;
    /// The body, inside the envelope.
    type Body: Deserialize<'a>;

    fn text(value: Self::Str, field: &str) -> Result<Cow<'a, str>, ProtocolError>;
    fn boolean(value: Self::Bool, field: &str) -> Result<bool, ProtocolError>;
    fn entries(value: Self::Entries) -> Result<Members<'a>, ProtocolError>;
    fn raw(value: Self::Raw) -> &'a RawValue;
}

/// Fields read straight to their values (see the module docs).
#[derive(Debug)]
pub enum OnePass {}

/// Fields kept as raw JSON and checked one by one (see the module docs).
#[derive(Debug)]
pub enum Precise {}

impl<'a> Repr<'a> for OnePass {
    type Str = Text<'a>;
    type Bool = bool;
    type Entries = Members<'a>;
    type Raw = &'a RawValue;
    // Boxed, so that moving it up through the reader's layers copies a
    // pointer instead of the whole struct (it measured 15 copies a message).
    type Body = Boxed<Fields<'a, OnePass>>;

    fn text(value: Text<'a>, _: &str) -> Result<Cow<'a, str>, ProtocolError> {
        Ok(value.0)
    }
    fn boolean(value: bool, _: &str) -> Result<bool, ProtocolError> {
        Ok(value)
    }
    fn entries(value: Members<'a>) -> Result<Members<'a>, ProtocolError> {
        Ok(value)
    }
    fn raw(value: &'a RawValue) -> &'a RawValue {
        value
    }
}

impl<'a> Repr<'a> for Precise {
    type Str = &'a RawValue;
    type Bool = &'a RawValue;
    type Entries = &'a RawValue;
    type Raw = &'a RawValue;
    type Body = &'a RawValue;

    fn text(raw: &'a RawValue, field: &str) -> Result<Cow<'a, str>, ProtocolError> {
        string(field, raw)
    }
    fn boolean(raw: &'a RawValue, field: &str) -> Result<bool, ProtocolError> {
        match raw.get() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ProtocolError::malformed(format!(
                "\"{field}\" must be true or false, found {}",
                kind_of(raw)
            ))),
        }
    }
    fn entries(raw: &'a RawValue) -> Result<Members<'a>, ProtocolError> {
        serde_json::from_str(raw.get()).map_err(|_| {
            ProtocolError::malformed(match (kind_of(raw), unpaired_surrogate(raw.get())) {
                // The values are raw, so only a key can have failed.
                ("an object", Some(escape)) => format!(
                    "a backend name in \"active_connections\" contains {escape}, {UNPAIRED}"
                ),
                (kind, _) => format!(
                    "\"active_connections\" must be an object mapping backend names to counts, found {kind}"
                ),
            })
        })
    }
    fn raw(value: &'a RawValue) -> &'a RawValue {
        value
    }
}

/// Declares an object's fields once: the struct that holds them (each
/// `Option`, present at most once) and its reader, which refuses a
/// repeated field and notes the first unknown key.
macro_rules! object_fields {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident = $key:literal : $kind:ident, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name<'a, R: Repr<'a>> {
            $( $(#[doc = $doc])* pub $field: Option<R::$kind>, )*
            /// The first key that is none of the above.
            pub unknown: Option<Cow<'a, str>>,
        }

        impl<'a, R: Repr<'a>> $name<'a, R> {
            /// Every key this object knows, in the order declared.
            pub const KEYS: &'static [&'static str] = &[$($key),*];

            /// The keys of the known fields present, in the order declared.
            pub fn present(&self) -> impl Iterator<Item = &'static str> {
                [$( ($key, self.$field.is_some()) ),*]
                    .into_iter()
                    .filter_map(|(key, present)| present.then_some(key))
            }
        }

        impl<'a, R: Repr<'a>> Object<'a> for $name<'a, R> {
            fn empty() -> Self {
                $name { $( $field: None, )* unknown: None }
            }

            fn read<A: MapAccess<'a>>(&mut self, mut map: A) -> Result<(), A::Error> {
                while let Some(Text(key)) = map.next_key()? {
                    match &*key {
                        $( $key => {
                            if self.$field.is_some() {
                                return Err(de::Error::duplicate_field($key));
                            }
                            self.$field = Some(map.next_value()?);
                        } )*
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            if self.unknown.is_none() {
                                self.unknown = Some(key);
                            }
                        }
                    }
                }
                Ok(())
            }
        }

        impl<'a, R: Repr<'a>> Deserialize<'a> for $name<'a, R> {
            fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map(ObjectVisitor(PhantomData)).map(|Boxed(object)| *object)
            }
        }
    };
}

/// An object read field by field into a struct.
pub trait Object<'a>: Sized {
    /// Every field absent.
    fn empty() -> Self;
    /// Reads the members of an object into `self`.
    fn read<A: MapAccess<'a>>(&mut self, map: A) -> Result<(), A::Error>;
}

/// An object read straight into a heap allocation.
pub struct Boxed<T>(pub Box<T>);

impl<'a, T: Object<'a>> Deserialize<'a> for Boxed<T> {
    fn deserialize<D: Deserializer<'a>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'a, T: Object<'a>> Visitor<'a> for ObjectVisitor<T> {
    type Value = Boxed<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'a>>(self, map: A) -> Result<Boxed<T>, A::Error> {
        let mut object = Box::new(T::empty());
        object.read(map)?;
        Ok(Boxed(object))
    }
}

object_fields! {
    /// A message's envelope; other keys are ignored.
    Envelope {
        src = "src": Str,
        dest = "dest": Str,
        body = "body": Body,
    }
}

object_fields! {
    /// A message body: every field any message type reads. A message type
    /// ignores the fields it does not use (except `add_backend`, which
    /// describes a backend and refuses any other, as `init`'s backend
    /// objects do).
    Fields {
        kind = "type": Str,
        msg_id = "msg_id": Raw,
        node_id = "node_id": Str,
        node_ids = "node_ids": Raw,
        backends = "backends": Raw,
        algorithm = "algorithm": Str,
        tie_break = "tie_break": Str,
        seed = "seed": Raw,
        counts = "counts": Str,
        method = "method": Str,
        path = "path": Str,
        active_connections = "active_connections": Entries,
        explain = "explain": Bool,
        exclude = "exclude": Raw,
        backend = "backend": Str,
        address = "address": Str,
        ok = "ok": Bool,
        duration_ms = "duration_ms": Raw,
        weight = "weight": Raw,
        max_connections = "max_connections": Raw,
        healthy = "healthy": Bool,
        ramp = "ramp": Raw,
    }
}

/// What an error text says of an unpaired surrogate escape.
const UNPAIRED: &str =
    "an unpaired surrogate escape, which is no character: text must be valid Unicode";

// ---------------------------------------------------------------------------
// Checks shared by both parses

/// Checks an optional string field.
pub fn text<'a, R: Repr<'a>>(
    value: Option<R::Str>,
    field: &str,
) -> Result<Option<Cow<'a, str>>, ProtocolError> {
    value.map(|v| R::text(v, field)).transpose()
}

/// Checks an optional boolean field.
pub fn boolean<'a, R: Repr<'a>>(
    value: Option<R::Bool>,
    field: &str,
) -> Result<Option<bool>, ProtocolError> {
    value.map(|v| R::boolean(v, field)).transpose()
}

/// Parses a raw field if it is present.
pub fn optional<'a, R: Repr<'a>, T>(
    value: Option<R::Raw>,
    parse: impl FnOnce(&'a RawValue) -> Result<T, ProtocolError>,
) -> Result<Option<T>, ProtocolError> {
    value.map(|v| parse(R::raw(v))).transpose()
}

/// A string field given as raw JSON.
pub fn string<'a>(field: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, ProtocolError> {
    serde_json::from_str::<Text>(raw.get())
        .map(|Text(s)| s)
        .map_err(|_| {
            ProtocolError::malformed(match (kind_of(raw), unpaired_surrogate(raw.get())) {
                ("a string", Some(escape)) => format!("\"{field}\" contains {escape}, {UNPAIRED}"),
                (kind, _) => format!("\"{field}\" must be a string, found {kind}"),
            })
        })
}

/// Looks up a name in a table of names; an unknown one is error 10.
pub fn named<T: Copy>(
    field: &str,
    name: Option<Cow<'_, str>>,
    names: &[(&str, T)],
) -> Result<Option<T>, ProtocolError> {
    let Some(name) = name else { return Ok(None) };
    match names.iter().find(|(n, _)| **n == *name) {
        Some(&(_, value)) => Ok(Some(value)),
        None => {
            let known: Vec<&str> = names.iter().map(|&(n, _)| n).collect();
            Err(ProtocolError::new(
                ErrorCode::NotSupported,
                format!("unknown {field} {name:?}; supported: {}", known.join(", ")),
            ))
        }
    }
}

/// A whole number from 0 to 2^64 - 1 (a count, a weight, a limit).
pub fn whole_number(field: &str, raw: &RawValue) -> Result<u64, ProtocolError> {
    whole_number_named(|| field.to_owned(), raw)
}

/// [`whole_number`], naming the field only if there is an error to report.
fn whole_number_named(
    field: impl FnOnce() -> String,
    raw: &RawValue,
) -> Result<u64, ProtocolError> {
    // JSON has no leading `+`, so this accepts exactly the integer literals
    // without sign, fraction or exponent that fit.
    raw.get().parse::<u64>().map_err(|_| {
        ProtocolError::malformed(format!(
            "{} must be a whole number from 0 to {MAX_COUNT}, {}",
            field(),
            why_not_whole(raw)
        ))
    })
}

/// Why a raw value is not a whole number literal in range.
fn why_not_whole(raw: &RawValue) -> String {
    let text = raw.get();
    let kind = kind_of(raw);
    if kind != "a number" {
        return format!("found {kind}");
    }
    let value: f64 = text.parse().unwrap_or(f64::NAN);
    let shown = quoted(text);
    if text.starts_with('-') && value != 0.0 {
        format!("but {shown} is negative")
    } else if text.starts_with('-') {
        format!("but {shown} has a minus sign; write it as a plain integer: digits only")
    } else if !text.contains(['.', 'e', 'E']) {
        format!("but {shown} is too large")
    } else if value.fract() == 0.0 {
        format!(
            "but {shown} has a fraction or an exponent; write it as a plain integer: digits only"
        )
    } else {
        format!("but {shown} is not a whole number")
    }
}

/// `max_connections`: a whole number, or `null` for no limit.
pub fn limit(field: &str, raw: &RawValue) -> Result<Option<u64>, ProtocolError> {
    if raw.get() == "null" {
        return Ok(None);
    }
    whole_number(field, raw).map(Some)
}

/// `ramp`: the percent of a backend's weight in effect, a whole number
/// from 1 to 100.
pub fn ramp(raw: &RawValue) -> Result<u8, ProtocolError> {
    match raw.get().parse::<u64>() {
        Ok(percent @ 1..=100) => Ok(percent as u8),
        parsed => Err(ProtocolError::malformed(format!(
            "\"ramp\" must be a whole number from 1 to 100 (the percent of the backend's weight in effect), {}",
            match parsed {
                Ok(_) => format!("but {} is out of range", quoted(raw.get())),
                Err(_) => why_not_whole(raw),
            }
        ))),
    }
}

/// A list of backend names (`exclude`): an array of strings.
pub fn names<'a>(field: &str, raw: &'a RawValue) -> Result<Vec<Cow<'a, str>>, ProtocolError> {
    let mut names = Vec::new();
    for_each_element(raw, |i, element| {
        names.push(string(&format!("{field}[{i}]"), element)?);
        Ok(())
    })
    .map_err(|e| {
        e.unwrap_or_else(|| {
            ProtocolError::malformed(format!(
                "\"{field}\" must be an array of backend names, found {}",
                kind_of(raw)
            ))
        })
    })?;
    Ok(names)
}

/// A `msg_id`: an integer from -2^63 to 2^64 - 1.
pub fn msg_id(raw: &RawValue) -> Result<MsgId, ProtocolError> {
    let text = raw.get();
    let parsed = if text.starts_with('-') {
        text.parse::<i64>().ok().map(MsgId::from)
    } else {
        text.parse::<u64>().ok().map(MsgId::Unsigned)
    };
    parsed.ok_or_else(|| {
        ProtocolError::malformed(format!(
            "\"msg_id\" must be an integer (from -2^63 to 2^64 - 1), found {}",
            found(raw)
        ))
    })
}

/// An integer seed; negative seeds stand for the same 64 bits unsigned.
pub fn seed(raw: &RawValue) -> Result<u64, ProtocolError> {
    let text = raw.get();
    text.parse::<u64>()
        .ok()
        .or_else(|| text.parse::<i64>().ok().map(|n| n as u64))
        .ok_or_else(|| {
            ProtocolError::malformed(format!(
                "\"seed\" must be an integer (from -2^63 to 2^64 - 1), found {}",
                found(raw)
            ))
        })
}

/// `duration_ms`: a number of milliseconds, from 0 to
/// [`MAX_DURATION_MS`], so that no backend's total can overflow.
pub fn duration_ms(raw: &RawValue) -> Result<f64, ProtocolError> {
    let value = serde_json::from_str::<f64>(raw.get())
        .ok()
        .filter(|_| kind_of(raw) == "a number");
    match value {
        Some(ms) if (0.0..=MAX_DURATION_MS).contains(&ms) => Ok(ms),
        Some(ms) if ms > MAX_DURATION_MS => Err(ProtocolError::malformed(format!(
            "\"duration_ms\" of {} is too long: at most {MAX_DURATION_MS:e} milliseconds, so that a backend's total cannot overflow",
            quoted(raw.get())
        ))),
        _ => Err(ProtocolError::malformed(format!(
            "\"duration_ms\" must be a number of milliseconds, 0 or more, found {}",
            found(raw)
        ))),
    }
}

/// A snapshot's entries as counts.
pub fn snapshot(Members(members): Members<'_>) -> Result<Vec<(Cow<'_, str>, u64)>, ProtocolError> {
    members
        .into_iter()
        .map(|(name, value)| {
            let field = || format!("active_connections[{}]", short_name(&name));
            let count = whole_number_named(field, value)?;
            Ok((name, count))
        })
        .collect()
}

/// Calls `f` on each element of a JSON array, in order. The error is `f`'s,
/// or `None` when `raw` is not an array.
pub fn for_each_element<'a>(
    raw: &'a RawValue,
    f: impl FnMut(usize, &'a RawValue) -> Result<(), ProtocolError>,
) -> Result<(), Option<ProtocolError>> {
    struct Each<F> {
        f: F,
        error: Option<ProtocolError>,
    }
    impl<'de, F> Visitor<'de> for &mut Each<F>
    where
        F: FnMut(usize, &'de RawValue) -> Result<(), ProtocolError>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while let Some(element) = seq.next_element::<&RawValue>()? {
                if let Err(e) = (self.f)(i, element) {
                    self.error = Some(e);
                    return Err(de::Error::custom("stopped"));
                }
                i += 1;
            }
            Ok(())
        }
    }
    let mut each = Each { f, error: None };
    let result = serde_json::Deserializer::from_str(raw.get()).deserialize_seq(&mut each);
    match (result, each.error) {
        (Ok(()), _) => Ok(()),
        (Err(_), error) => Err(error),
    }
}

// ---------------------------------------------------------------------------
// Describing values in error texts

/// What kind of JSON value a raw value is, for error texts.
pub fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A number quoted (cut short if long), or the kind of any other value.
fn found(raw: &RawValue) -> String {
    match kind_of(raw) {
        "a number" => quoted(raw.get()),
        kind => kind.to_owned(),
    }
}

/// How many characters of a long value an error text quotes.
const SHOWN: usize = 40;

/// A piece of input quoted in an error text, cut short if it is long.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

/// The first `\uXXXX` escape in raw JSON text that is half of a surrogate
/// pair without its other half.
pub fn unpaired_surrogate(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let unit = |at: usize| -> Option<u32> {
        let hex = text.get(at + 2..at + 6)?;
        (bytes.get(at..at + 2) == Some(b"\\u"))
            .then(|| u32::from_str_radix(hex, 16).ok())
            .flatten()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF) if matches!(unit(i + 6), Some(0xDC00..=0xDFFF)) => i += 12,
            Some(0xD800..=0xDFFF) => return text.get(i..i + 6),
            Some(_) => i += 6,
            None => i += 2, // any other escape, such as \\ or \"
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> &RawValue {
        serde_json::from_str(json).expect("test value is JSON")
    }

    #[test]
    fn unpaired_surrogates_are_found_and_pairs_are_not() {
        assert_eq!(unpaired_surrogate(r#""a\ud800b""#), Some(r"\ud800"));
        assert_eq!(unpaired_surrogate(r#""\udc00""#), Some(r"\udc00"));
        assert_eq!(unpaired_surrogate(r#""\ud83d\ude00""#), None);
        assert_eq!(unpaired_surrogate(r#""\ud83d\u0041""#), Some(r"\ud83d"));
        assert_eq!(
            unpaired_surrogate(r#""\\ud800""#),
            None,
            "an escaped backslash"
        );
        assert_eq!(unpaired_surrogate(r#""\u00e9\n""#), None);
    }

    #[test]
    fn a_string_with_an_unpaired_surrogate_says_so() {
        let e = string("backend", raw(r#""\ud800""#)).unwrap_err();
        assert_eq!(
            e.text,
            "\"backend\" contains \\ud800, an unpaired surrogate escape, which is no character: text must be valid Unicode"
        );
        let e = string("backend", raw("7")).unwrap_err();
        assert_eq!(e.text, "\"backend\" must be a string, found a number");
    }

    #[test]
    fn whole_numbers_say_which_rule_a_number_breaks() {
        let why = |json: &str| whole_number("weight", raw(json)).unwrap_err().text;
        let prefix = "weight must be a whole number from 0 to 18446744073709551615, but ";
        for (json, reason) in [
            ("-1", "-1 is negative"),
            (
                "-0",
                "-0 has a minus sign; write it as a plain integer: digits only",
            ),
            (
                "2.0",
                "2.0 has a fraction or an exponent; write it as a plain integer: digits only",
            ),
            (
                "1e2",
                "1e2 has a fraction or an exponent; write it as a plain integer: digits only",
            ),
            (
                "1.0e0",
                "1.0e0 has a fraction or an exponent; write it as a plain integer: digits only",
            ),
            ("1.5", "1.5 is not a whole number"),
            ("18446744073709551616", "18446744073709551616 is too large"),
        ] {
            assert_eq!(why(json), format!("{prefix}{reason}"), "{json}");
        }
        assert_eq!(whole_number("weight", raw("0")).unwrap(), 0);
    }

    #[test]
    fn long_names_are_cut_in_error_texts() {
        assert_eq!(short_name("api-1"), "\"api-1\"");
        let long = "x".repeat(1000);
        assert_eq!(
            short_name(&long),
            format!("\"{}\"… (1000 bytes)", "x".repeat(40))
        );
    }

    #[test]
    fn a_repeated_field_fails_both_representations() {
        for json in [
            r#"{"type":"a","type":"b"}"#,
            r#"{"weight":1,"weight":2}"#,
            r#"{"ok":true,"ok":true}"#,
            r#"{"active_connections":{},"active_connections":{}}"#,
        ] {
            let one_pass = serde_json::from_str::<Fields<OnePass>>(json).err();
            let precise = serde_json::from_str::<Fields<Precise>>(json).err();
            assert!(one_pass.is_some() && precise.is_some(), "{json}");
        }
    }
}
