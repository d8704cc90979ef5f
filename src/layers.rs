//! Settings in layers: a file, then the flags over it. [`settings!`]
//! declares a struct of optional settings once, for clap and serde alike,
//! and from the same list of fields how one layer overrides another.
//!
//! [`settings!`]: crate::layers::settings

/// Declares the settings struct and, from the same list of fields, the
/// layering of one set of settings over another (`take_given`), so that no
/// field is listed twice. Every field is an `Option`, `None` when not
/// given, and its doc comment is shown as written in `--help`.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                pub $field:ident: $ty:ty,
            )+
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[arg(verbatim_doc_comment)]
                pub $field: $ty,
            )+
        }

        impl $name {
            /// Every setting given in `over` replaces this layer's.
            pub(crate) fn take_given(&mut self, over: $name) {
                $( if over.$field.is_some() { self.$field = over.$field; } )+
            }
        }
    };
}

pub(crate) use settings;
