//! Enums named by strings on the command line, in scenario files and on the
//! wire: each is declared once, with its names, by [`named_enum!`].
//!
//! [`named_enum!`]: crate::names::named_enum

/// Declares a fieldless enum whose variants have names, and generates:
///
/// - `NAMES`: every name with the variant it means, in declaration order; a
///   variant's first name is its own, any others are aliases;
/// - `from_name(&str) -> Option<Self>` and `name(self) -> &'static str`;
/// - `FromStr` and serde's `Deserialize` (from a name), both failing with
///   `unknown NOUN "x"; one of a, b, c`;
/// - `Display` and serde's `Serialize` (its own name).
///
/// The enum derives `Clone, Copy, Debug, PartialEq, Eq`; add `Default` (and
/// `#[default]` on a variant) among its own attributes if wanted.
///
/// ```ignore
/// named_enum! {
///     /// How a backend serves its requests.
///     #[derive(Default)]
///     pub enum Discipline("discipline") {
///         /// One at a time.
///         #[default]
///         Fifo = "fifo",
///         /// All at once.
///         Ps = "ps" | "processor-sharing",
///     }
/// }
/// ```
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($noun:literal) {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $first:literal $(| $alias:literal)*
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                $variant,
            )+
        }

        impl $name {
            /// Every name, with the value it means. The first name of each
            /// value is its own.
            pub const NAMES: &'static [(&'static str, $name)] = &[
                $(
                    ($first, $name::$variant),
                    $( ($alias, $name::$variant), )*
                )+
            ];

            /// The value a name means.
            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $( $first $(| $alias)* => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// This value's own name.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $first, )+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::std::string::String;

            fn from_str(text: &str) -> ::std::result::Result<$name, ::std::string::String> {
                $name::from_name(text)
                    .ok_or_else(|| $crate::names::unknown($noun, text, $name::NAMES))
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<$name, D::Error> {
                let text = <::std::string::String as ::serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}

pub(crate) use named_enum;

/// The error for a name no value has: `unknown NOUN "x"; one of a, b, c`.
pub(crate) fn unknown<T>(noun: &str, name: &str, names: &[(&str, T)]) -> String {
    let known: Vec<&str> = names.iter().map(|&(n, _)| n).collect();
    format!("unknown {noun} {name:?}; one of {}", known.join(", "))
}

#[cfg(test)]
mod tests {
    named_enum! {
        /// A test enum.
        #[derive(Default)]
        enum Colour("colour") {
            /// The default.
            #[default]
            Red = "red" | "crimson" | "scarlet",
            Green = "green",
            /// Aliased, and last.
            Blue = "blue" | "navy",
        }
    }

    #[test]
    fn names_list_each_value_first_then_its_aliases() {
        assert_eq!(
            Colour::NAMES,
            [
                ("red", Colour::Red),
                ("crimson", Colour::Red),
                ("scarlet", Colour::Red),
                ("green", Colour::Green),
                ("blue", Colour::Blue),
                ("navy", Colour::Blue),
            ]
        );
        assert_eq!(Colour::default(), Colour::Red);
    }

    #[test]
    fn every_name_looks_up_its_value_and_each_value_prints_its_own() {
        for &(name, colour) in Colour::NAMES {
            assert_eq!(Colour::from_name(name), Some(colour));
            assert_eq!(name.parse::<Colour>(), Ok(colour));
        }
        assert_eq!(Colour::Blue.name(), "blue");
        assert_eq!(Colour::Red.to_string(), "red");
        assert_eq!(Colour::from_name("Red"), None);
        assert_eq!(Colour::from_name(" red"), None);
    }

    #[test]
    fn an_unknown_name_is_told_the_names() {
        assert_eq!(
            "purple".parse::<Colour>(),
            Err(
                r#"unknown colour "purple"; one of red, crimson, scarlet, green, blue, navy"#
                    .into()
            )
        );
    }

    #[test]
    fn serde_reads_and_writes_names() {
        #[derive(Debug, PartialEq, serde::Deserialize, serde::Serialize)]
        struct Paint {
            colour: Colour,
        }
        let paint: Paint = serde_json::from_str(r#"{"colour":"navy"}"#).unwrap();
        assert_eq!(paint.colour, Colour::Blue);
        assert_eq!(
            serde_json::to_string(&paint).unwrap(),
            r#"{"colour":"blue"}"#
        );
        let err = serde_json::from_str::<Paint>(r#"{"colour":"pink"}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"unknown colour "pink"; one of red,"#),
            "{err}"
        );
        assert!(serde_json::from_str::<Paint>(r#"{"colour":3}"#).is_err());
    }
}
