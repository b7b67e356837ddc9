//! `file`: a regular file with exact content, owner and mode, written atomically.

use kagent_proto::v1::{self, Action};

use super::{Change, FieldError, ResourceError, check_mode, mode_str};
use crate::host::fs::{self, FileState, ManagedPath, Perms, Roots};

/// Content larger than this is refused: managed files are configuration, not data.
pub const MAX_CONTENT: usize = 8 << 20;
/// Diffs are cut after this many lines.
const MAX_DIFF_LINES: usize = 60;

#[derive(Debug, Clone)]
pub struct Spec {
    pub path: ManagedPath,
    pub content: Vec<u8>,
    pub perms: Perms,
    pub sensitive: bool,
}

pub type Observed = Option<FileState>;

pub fn from_proto(p: &v1::File, roots: &Roots) -> Result<Spec, FieldError> {
    let path = roots
        .check(&p.path)
        .map_err(|e| FieldError::new("path", e.to_string()))?;
    if p.content.len() > MAX_CONTENT {
        return Err(FieldError::new(
            "content",
            format!(
                "{} bytes is more than the {} allowed",
                p.content.len(),
                MAX_CONTENT
            ),
        ));
    }
    Ok(Spec {
        path,
        content: p.content.clone(),
        perms: Perms {
            mode: check_mode("mode", p.mode.unwrap_or(0o644))?,
            uid: p.uid.unwrap_or(0),
            gid: p.gid.unwrap_or(0),
            dir_mode: check_mode("dir_mode", p.dir_mode.unwrap_or(0o755))?,
        },
        sensitive: p.sensitive,
    })
}

pub fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    fs::read(&spec.path).map_err(|e| ResourceError::io("read", spec.path.path(), &e))
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    let Some(now) = observed else {
        let mut diff = format!(
            "+ {} ({} bytes, mode {}, owner {}:{})",
            spec.path,
            spec.content.len(),
            mode_str(spec.perms.mode),
            spec.perms.uid,
            spec.perms.gid
        );
        if !spec.sensitive {
            diff.push_str(&content_diff(b"", &spec.content));
        }
        return Change {
            action: Action::Create,
            diff,
            warnings: Vec::new(),
        };
    };
    let mut lines = Vec::new();
    if now.content != spec.content {
        if spec.sensitive {
            lines.push(format!(
                "~ content: {} bytes -> {} bytes (sensitive, not shown)",
                now.content.len(),
                spec.content.len()
            ));
        } else {
            lines.push(format!(
                "~ content{}",
                content_diff(&now.content, &spec.content)
            ));
        }
    }
    lines.extend(perms_diff(now, spec.perms));
    if lines.is_empty() {
        return Change::unchanged();
    }
    Change {
        action: Action::Update,
        diff: lines.join("\n"),
        warnings: Vec::new(),
    }
}

/// Mode and owner lines of a diff.
pub fn perms_diff(now: &FileState, want: Perms) -> Vec<String> {
    let mut lines = Vec::new();
    if now.mode != want.mode {
        lines.push(format!(
            "~ mode: {} -> {}",
            mode_str(now.mode),
            mode_str(want.mode)
        ));
    }
    if (now.uid, now.gid) != (want.uid, want.gid) {
        lines.push(format!(
            "~ owner: {}:{} -> {}:{}",
            now.uid, now.gid, want.uid, want.gid
        ));
    }
    lines
}

pub fn apply(spec: &Spec, observed: &Observed) -> Result<String, ResourceError> {
    let path = spec.path.path();
    match observed {
        Some(now) if now.content == spec.content => {
            fs::set_perms(&spec.path, spec.perms)
                .map_err(|e| ResourceError::io("set owner and mode of", path, &e))?;
            Ok("changed owner or mode".into())
        }
        _ => {
            fs::write_atomic(&spec.path, &spec.content, spec.perms)
                .map_err(|e| ResourceError::io("write", path, &e))?;
            Ok(format!("wrote {} bytes", spec.content.len()))
        }
    }
}

/// A unified diff of text content, or a size summary for binary content.
fn content_diff(old: &[u8], new: &[u8]) -> String {
    let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
        return format!(" (binary: {} bytes -> {} bytes)", old.len(), new.len());
    };
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = String::new();
    let mut shown = 0;
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => continue,
        };
        if shown == MAX_DIFF_LINES {
            out.push_str("\n  ... (diff cut)");
            break;
        }
        out.push_str(&format!(
            "\n  {sign} {}",
            change.value().trim_end_matches('\n')
        ));
        shown += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(content: &str) -> Result<Spec, FieldError> {
        let roots = Roots::new(&["/nonexistent-root".into()]);
        from_proto(
            &v1::File {
                path: "/nonexistent-root/a.conf".into(),
                content: content.as_bytes().to_vec(),
                ..Default::default()
            },
            &roots,
        )
    }

    fn state(content: &str, mode: u32) -> FileState {
        FileState {
            content: content.as_bytes().to_vec(),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn plans_from_data() -> Result<(), FieldError> {
        let s = spec("a\nb\n")?;
        assert_eq!(plan(&s, &None).action, Action::Create);
        assert_eq!(plan(&s, &Some(state("a\nb\n", 0o644))), Change::unchanged());
        let c = plan(&s, &Some(state("a\nc\n", 0o644)));
        assert_eq!(c.action, Action::Update);
        assert!(
            c.diff.contains("- c") && c.diff.contains("+ b"),
            "{}",
            c.diff
        );
        let c = plan(&s, &Some(state("a\nb\n", 0o600)));
        assert_eq!(c.diff, "~ mode: 0600 -> 0644");
        Ok(())
    }

    #[test]
    fn sensitive_content_is_not_shown() -> Result<(), FieldError> {
        let mut s = spec("password=hunter2\n")?;
        s.sensitive = true;
        assert!(!plan(&s, &None).diff.contains("hunter2"));
        assert!(
            !plan(&s, &Some(state("password=old\n", 0o644)))
                .diff
                .contains("hunter2")
        );
        Ok(())
    }

    #[test]
    fn setuid_modes_are_refused() {
        let roots = Roots::new(&["/r".into()]);
        let p = v1::File {
            path: "/r/x".into(),
            mode: Some(0o4755),
            ..Default::default()
        };
        assert_eq!(from_proto(&p, &roots).err().map(|e| e.field), Some("mode"));
    }
}
