//! Serialization of project-relative paths.
//!
//! Linux file names are bytes, not text. The journal is JSON, so a path that is valid UTF-8 is
//! written as a plain string (what a person reading the journal expects) and any other path as
//! `{"bytes":[..]}`, which round-trips exactly. This module only encodes; it does not validate
//! that a path stays inside the project (see [`crate::store::check_relative`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes { bytes: Vec<u8> },
}

fn to_repr(p: &Path) -> Repr {
    match p.to_str() {
        Some(s) => Repr::Text(s.to_owned()),
        None => Repr::Bytes {
            bytes: p.as_os_str().as_bytes().to_vec(),
        },
    }
}

fn from_repr(r: Repr) -> PathBuf {
    match r {
        Repr::Text(s) => PathBuf::from(s),
        Repr::Bytes { bytes } => PathBuf::from(OsString::from_vec(bytes)),
    }
}

/// `#[serde(with = "relpath")]` for `PathBuf` fields.
pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    to_repr(p).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Repr::deserialize(d).map(from_repr)
}

/// `#[serde(with = "relpath::opt")]` for `Option<PathBuf>` fields.
pub mod opt {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        p.as_deref().map(to_repr).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Ok(Option::<Repr>::deserialize(d)?.map(from_repr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct W {
        #[serde(with = "super")]
        p: PathBuf,
        #[serde(with = "super::opt", default)]
        q: Option<PathBuf>,
    }

    #[test]
    fn utf8_is_plain_text_and_bytes_round_trip() {
        let w = W {
            p: PathBuf::from("src/main.rs"),
            q: Some(PathBuf::from(OsString::from_vec(vec![b'a', 0xff, b'b']))),
        };
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(j, r#"{"p":"src/main.rs","q":{"bytes":[97,255,98]}}"#);
        assert_eq!(serde_json::from_str::<W>(&j).unwrap(), w);
        let none: W = serde_json::from_str(r#"{"p":"x"}"#).unwrap();
        assert_eq!(none.q, None);
    }
}
