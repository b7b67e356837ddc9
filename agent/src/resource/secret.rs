//! `secret`: a random value generated on the host the first time, then never regenerated and
//! never shown. The value is one word on one line with a trailing newline, which is what
//! KHEOPS' containers check (`wc -w` and `wc -l` must both be 1).
//!
//! Owner and mode are kept as the spec says; the value itself is never touched again, so
//! losing the operator's laptop loses and rotates nothing.

use kagent_proto::v1::{self, Action, Alphabet};
use rand::seq::IndexedRandom;

use super::file::perms_diff;
use super::{Change, FieldError, ResourceError, check_mode, mode_str};
use crate::host::fs::{self, FileState, ManagedPath, Perms, Roots};

pub const DEFAULT_LENGTH: u32 = 32;
pub const MIN_LENGTH: u32 = 16;
pub const MAX_LENGTH: u32 = 256;

#[derive(Debug, Clone)]
pub struct Spec {
    pub path: ManagedPath,
    pub length: u32,
    pub alphabet: Alphabet,
    pub perms: Perms,
}

pub type Observed = Option<FileState>;

pub fn from_proto(p: &v1::Secret, roots: &Roots) -> Result<Spec, FieldError> {
    let path = roots
        .check(&p.path)
        .map_err(|e| FieldError::new("path", e.to_string()))?;
    let length = if p.length == 0 {
        DEFAULT_LENGTH
    } else {
        p.length
    };
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(FieldError::new(
            "length",
            format!("{length} is out of range; use {MIN_LENGTH} to {MAX_LENGTH} characters"),
        ));
    }
    let alphabet = match Alphabet::try_from(p.alphabet) {
        Ok(Alphabet::Unspecified) => Alphabet::Alphanumeric,
        Ok(a) => a,
        Err(_) => {
            return Err(FieldError::new(
                "alphabet",
                format!(
                    "{} is not an alphabet; use alphanumeric, hex or base64url",
                    p.alphabet
                ),
            ));
        }
    };
    Ok(Spec {
        path,
        length,
        alphabet,
        perms: Perms {
            mode: check_mode("mode", p.mode.unwrap_or(0o600))?,
            uid: p.uid.unwrap_or(0),
            gid: p.gid.unwrap_or(0),
            dir_mode: check_mode("dir_mode", p.dir_mode.unwrap_or(0o700))?,
        },
    })
}

pub fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    fs::read(&spec.path).map_err(|e| ResourceError::io("read", spec.path.path(), &e))
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    let Some(now) = observed else {
        return Change {
            action: Action::Create,
            diff: format!(
                "+ {} (generated: {} {} characters <redacted>, mode {}, owner {}:{})",
                spec.path,
                spec.length,
                alphabet_name(spec.alphabet),
                mode_str(spec.perms.mode),
                spec.perms.uid,
                spec.perms.gid
            ),
            warnings: Vec::new(),
        };
    };
    let mut warnings = Vec::new();
    if !is_one_word_one_line(&now.content) {
        // An existing value is the user's data: report it, never replace it.
        warnings.push(format!(
            "{} exists but is not one word on one line with a trailing newline; it is kept as is \
             (delete the file to have a new value generated)",
            spec.path
        ));
    }
    let lines = perms_diff(now, spec.perms);
    if lines.is_empty() {
        return Change {
            warnings,
            ..Change::unchanged()
        };
    }
    Change {
        action: Action::Update,
        diff: lines.join("\n"),
        warnings,
    }
}

pub fn apply(spec: &Spec, observed: &Observed) -> Result<String, ResourceError> {
    let path = spec.path.path();
    if observed.is_some() {
        fs::set_perms(&spec.path, spec.perms)
            .map_err(|e| ResourceError::io("set owner and mode of", path, &e))?;
        return Ok("changed owner or mode (value kept)".into());
    }
    let mut value = generate(spec.length, spec.alphabet);
    value.push('\n');
    let result = fs::create_new_atomic(&spec.path, value.as_bytes(), spec.perms);
    // Overwrite our copy; the value lives only in the file from here on.
    value.clear();
    result.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ResourceError {
            message: format!(
                "{} appeared while the secret was being generated",
                path.display()
            ),
            hint: "it was kept; apply again to manage its owner and mode".into(),
        },
        _ => ResourceError::io("create", path, &e),
    })?;
    Ok(format!("generated {} characters", spec.length))
}

fn alphabet_chars(a: Alphabet) -> &'static [u8] {
    match a {
        Alphabet::Hex => b"0123456789abcdef",
        Alphabet::Base64url => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        Alphabet::Alphanumeric | Alphabet::Unspecified => {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        }
    }
}

fn alphabet_name(a: Alphabet) -> &'static str {
    match a {
        Alphabet::Hex => "hex",
        Alphabet::Base64url => "base64url",
        Alphabet::Alphanumeric | Alphabet::Unspecified => "alphanumeric",
    }
}

/// Uniformly random characters from the OS-seeded CSPRNG (rand's ThreadRng, ChaCha).
fn generate(length: u32, alphabet: Alphabet) -> String {
    let chars = alphabet_chars(alphabet);
    let mut rng = rand::rng();
    (0..length)
        .filter_map(|_| chars.choose(&mut rng).map(|c| char::from(*c)))
        .collect()
}

fn is_one_word_one_line(content: &[u8]) -> bool {
    content.ends_with(b"\n")
        && content.len() > 1
        && !content[..content.len() - 1]
            .iter()
            .any(|c| c.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_have_the_shape_asked_for() {
        for (a, len) in [
            (Alphabet::Alphanumeric, 32),
            (Alphabet::Hex, 16),
            (Alphabet::Base64url, 256),
        ] {
            let v = generate(len, a);
            assert_eq!(v.len(), len as usize);
            assert!(v.bytes().all(|c| alphabet_chars(a).contains(&c)));
            assert!(is_one_word_one_line(format!("{v}\n").as_bytes()));
        }
        assert_ne!(
            generate(32, Alphabet::Alphanumeric),
            generate(32, Alphabet::Alphanumeric)
        );
    }

    #[test]
    fn an_existing_value_is_never_replaced_nor_shown() -> Result<(), FieldError> {
        let roots = Roots::new(&["/r".into()]);
        let s = from_proto(
            &v1::Secret {
                path: "/r/s".into(),
                ..Default::default()
            },
            &roots,
        )?;
        let now = FileState {
            content: b"topsecretvalue\n".to_vec(),
            mode: 0o600,
            uid: 0,
            gid: 0,
        };
        assert_eq!(plan(&s, &Some(now.clone())), Change::unchanged());
        let loose = FileState { mode: 0o644, ..now };
        let c = plan(&s, &Some(loose));
        assert_eq!(c.action, Action::Update);
        assert!(!c.diff.contains("topsecret"));
        let bad = FileState {
            content: b"two words\n".to_vec(),
            mode: 0o600,
            uid: 0,
            gid: 0,
        };
        assert_eq!(plan(&s, &Some(bad)).warnings.len(), 1);
        Ok(())
    }

    #[test]
    fn lengths_are_bounded() {
        let roots = Roots::new(&["/r".into()]);
        let p = v1::Secret {
            path: "/r/s".into(),
            length: 8,
            ..Default::default()
        };
        assert_eq!(
            from_proto(&p, &roots).err().map(|e| e.field),
            Some("length")
        );
    }
}
