//! `group_member`: a user is a member of a supplementary group (default `docker`), without
//! losing any other membership.
//!
//! Lookups use nix (NSS) on the host and the target's own `/etc/passwd` and `/etc/group` in a
//! root. Changes go through `usermod -a -G` (or `gpasswd -a` where there is no usermod): both
//! take the shadow suite's locks on `/etc/group` and `/etc/gshadow` and only ever add. A group
//! list is never rewritten (`usermod -G` without `-a`, Ansible's `append: false`, drops every
//! group not listed).

use kagent_proto::v1::{self, Action};

use super::{Change, FieldError, ResourceError};
use crate::host::cmd::{Cmd, CmdError};
use crate::host::target::Target;

pub const DEFAULT_GROUP: &str = "docker";

#[derive(Debug, Clone)]
pub struct Spec {
    pub user: String,
    pub group: String,
    pub create_user: bool,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `None`: no such user (only possible with `create_user`).
    pub user: Option<Account>,
    /// `None`: the group does not exist (yet: the docker package creates `docker`).
    pub group: Option<GroupEntry>,
    /// The user's other supplementary groups, to show they are kept.
    pub other_groups: Vec<String>,
}

impl Observed {
    fn is_member(&self, user: &str) -> bool {
        match (&self.user, &self.group) {
            (_, None) => false,
            (Some(u), Some(g)) if u.gid == g.gid => true,
            (_, Some(g)) => g.members.iter().any(|m| m == user),
        }
    }
}

/// What `useradd` accepts by default: `[a-z_][a-z0-9_-]*[$]?`, at most 32 characters.
pub fn check_account_name(field: &'static str, name: &str) -> Result<(), FieldError> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 32
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(FieldError::new(
            field,
            format!(
                "{name:?} is not a valid name: use a lower-case letter or `_`, then lower-case \
                 letters, digits, `_` or `-` (optionally a final `$`), at most 32 characters"
            ),
        ));
    }
    Ok(())
}

pub fn from_proto(p: &v1::GroupMember) -> Result<Spec, FieldError> {
    if p.user.is_empty() {
        return Err(FieldError::new("user", "name the user to add to the group"));
    }
    check_account_name("user", &p.user)?;
    let group = if p.group.is_empty() {
        DEFAULT_GROUP.to_string()
    } else {
        p.group.clone()
    };
    check_account_name("group", &group)?;
    Ok(Spec {
        user: p.user.clone(),
        group,
        create_user: p.create_user,
        target: Target::host(),
    })
}

fn field_error(field: &str, message: String, hint: &str) -> ResourceError {
    ResourceError {
        message: format!("field `{field}`: {message}"),
        hint: hint.into(),
    }
}

pub fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    let (user, group, all_groups) = if spec.target.is_host() {
        lookup_host(spec)?
    } else {
        lookup_files(spec)?
    };
    if user.is_none() && !spec.create_user {
        return Err(field_error(
            "user",
            format!("there is no user {:?} on this system", spec.user),
            "create the user first, or set create_user = true; nothing was changed",
        ));
    }
    let other_groups = match &user {
        None => Vec::new(),
        Some(u) => all_groups
            .iter()
            .filter(|g| g.name != spec.group && (g.members.contains(&u.name)))
            .map(|g| g.name.clone())
            .collect(),
    };
    Ok(Observed {
        user,
        group,
        other_groups,
    })
}

type Lookup = (Option<Account>, Option<GroupEntry>, Vec<GroupEntry>);

fn lookup_host(spec: &Spec) -> Result<Lookup, ResourceError> {
    let nss = |what: &str, e: nix::Error| ResourceError {
        message: format!("cannot look up {what}: {e}"),
        hint: "check /etc/nsswitch.conf and the name service".into(),
    };
    let user = nix::unistd::User::from_name(&spec.user)
        .map_err(|e| nss(&format!("user {:?}", spec.user), e))?
        .map(|u| Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        });
    let group = nix::unistd::Group::from_name(&spec.group)
        .map_err(|e| nss(&format!("group {:?}", spec.group), e))?
        .map(|g| GroupEntry {
            name: g.name,
            gid: g.gid.as_raw(),
            members: g.mem,
        });
    // The other groups, for the message only: from /etc/group (NSS has no portable listing).
    let others = match spec.target.read("/etc/group") {
        Ok(Some(text)) => parse_group(&text),
        _ => Vec::new(),
    };
    Ok((user, group, others))
}

fn lookup_files(spec: &Spec) -> Result<Lookup, ResourceError> {
    let t = &spec.target;
    let read = |p: &str| {
        t.read(p)
            .map_err(|e| ResourceError::io("read", &t.path(p), &e))
            .map(|o| o.unwrap_or_default())
    };
    let user = parse_passwd(&read("/etc/passwd")?)
        .into_iter()
        .find(|a| a.name == spec.user);
    let groups = parse_group(&read("/etc/group")?);
    let group = groups.iter().find(|g| g.name == spec.group).cloned();
    Ok((user, group, groups))
}

/// `name:x:uid:gid:...` lines; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(Account {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// `name:x:gid:a,b,c` lines; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

fn root_equivalent_warning(group: &str) -> Option<String> {
    (group == "docker").then(|| {
        "membership of `docker` is equivalent to root: its members can start a container that \
         mounts / and change anything on the host (see Docker's \"Docker daemon attack surface\"); \
         consider rootless Docker for users who should not be root"
            .to_string()
    })
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    if observed.user.is_some() && observed.is_member(&spec.user) {
        return Change::unchanged();
    }
    let mut warnings: Vec<String> = root_equivalent_warning(&spec.group).into_iter().collect();
    if observed.group.is_none() {
        warnings.push(format!(
            "group {:?} does not exist now; it must exist when this resource is applied (the \
             docker package creates `docker`), otherwise the apply fails without changing anything",
            spec.group
        ));
    }
    let kept = if observed.other_groups.is_empty() {
        String::new()
    } else {
        format!("; keeps {}", observed.other_groups.join(", "))
    };
    let (action, diff) = match observed.user {
        None => (
            Action::Create,
            format!(
                "+ user {} (new, with a home directory) in group {}",
                spec.user, spec.group
            ),
        ),
        Some(_) => (
            Action::Update,
            format!(
                "+ user {} in group {} (supplementary{kept})",
                spec.user, spec.group
            ),
        ),
    };
    Change {
        action,
        diff,
        warnings,
    }
}

/// The command that adds the membership (only ever adds).
pub fn command(spec: &Spec, observed: &Observed, have_usermod: bool) -> Cmd {
    let t = &spec.target;
    match (&observed.user, have_usermod) {
        (None, _) => t
            .useradd()
            .args(["--create-home", "--groups", &spec.group, &spec.user]),
        (Some(_), true) => t
            .usermod()
            .args(["--append", "--groups", &spec.group, &spec.user]),
        (Some(_), false) => t.gpasswd().args(["--add", &spec.user, &spec.group]),
    }
}

pub fn apply(spec: &Spec, observed: &Observed) -> Result<String, ResourceError> {
    if observed.group.is_none() {
        // The group may have appeared since the plan (the docker package creates it).
        let now = read(spec)?;
        if now.group.is_none() {
            return Err(field_error(
                "group",
                format!("there is no group {:?} on this system", spec.group),
                "create the group (or install Docker first, which creates `docker`); nothing was \
                 changed",
            ));
        }
        if plan(spec, &now).action == Action::Unchanged {
            return Ok(format!("{} is already in {}", spec.user, spec.group));
        }
        return apply(spec, &now);
    }
    let run = |cmd: &Cmd| spec.target.runner().output(cmd);
    let cmd = command(spec, observed, true);
    let out = match run(&cmd) {
        Err(CmdError::Spawn {
            not_found: true, ..
        }) if observed.user.is_some() => {
            let fallback = command(spec, observed, false);
            run(&fallback).map(|o| (fallback, o))
        }
        other => other.map(|o| (cmd, o)),
    };
    let (cmd, out) = out.map_err(|e| ResourceError {
        message: e.to_string(),
        hint: "usermod/gpasswd (package passwd or shadow-utils) must be installed".into(),
    })?;
    if !out.success() {
        return Err(ResourceError {
            message: format!(
                "`{cmd}` failed (exit {}): {}",
                out.code.map(|c| c.to_string()).unwrap_or("signal".into()),
                out.tail()
            ),
            hint: "nothing else was changed; check the user and group databases".into(),
        });
    }
    let kept = if observed.other_groups.is_empty() {
        String::new()
    } else {
        format!(" (other groups kept: {})", observed.other_groups.join(", "))
    };
    let created = if observed.user.is_none() {
        "created user and "
    } else {
        ""
    };
    Ok(format!(
        "{created}added {} to {}{kept}; sessions already logged in see the group only after a \
         new login (or `newgrp {}` in that shell)",
        spec.user, spec.group, spec.group
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_useradd() {
        for ok in ["alice", "_svc", "a-b_c1", "machine$", "a"] {
            assert!(check_account_name("user", ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(33);
        for bad in [
            "", "Alice", "1abc", "-x", "a b", "a:b", "a$b", "$", "é", "a/b", &long,
        ] {
            assert_eq!(
                check_account_name("user", bad).err().map(|e| e.field),
                Some("user"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn from_proto_names_the_field_and_defaults_to_docker() {
        let s = from_proto(&v1::GroupMember {
            user: "alice".into(),
            ..Default::default()
        });
        assert_eq!(s.map(|s| s.group).ok().as_deref(), Some("docker"));
        let e = from_proto(&v1::GroupMember {
            user: "alice".into(),
            group: "Docker!".into(),
            create_user: false,
        });
        assert_eq!(e.err().map(|e| e.field), Some("group"));
        let e = from_proto(&v1::GroupMember::default());
        assert_eq!(e.err().map(|e| e.field), Some("user"));
    }

    fn observed(members: &[&str], user_gid: u32) -> Observed {
        Observed {
            user: Some(Account {
                name: "alice".into(),
                uid: 1000,
                gid: user_gid,
            }),
            group: Some(GroupEntry {
                name: "docker".into(),
                gid: 999,
                members: members.iter().map(|m| m.to_string()).collect(),
            }),
            other_groups: vec!["adm".into(), "sudo".into()],
        }
    }

    #[test]
    fn plans_add_only_and_warns() -> Result<(), FieldError> {
        let spec = from_proto(&v1::GroupMember {
            user: "alice".into(),
            ..Default::default()
        })?;
        let c = plan(&spec, &observed(&["bob"], 1000));
        assert_eq!(c.action, Action::Update);
        assert!(c.diff.contains("keeps adm, sudo"), "{}", c.diff);
        assert!(c.warnings.iter().any(|w| w.contains("equivalent to root")));
        assert_eq!(
            plan(&spec, &observed(&["bob", "alice"], 1000)),
            Change::unchanged()
        );
        // Primary group counts as membership.
        assert_eq!(plan(&spec, &observed(&[], 999)), Change::unchanged());
        let cmd = command(&spec, &observed(&[], 1000), true);
        assert_eq!(cmd.to_string(), "usermod --append --groups docker alice");
        let cmd = command(&spec, &observed(&[], 1000), false);
        assert_eq!(cmd.to_string(), "gpasswd --add alice docker");
        Ok(())
    }

    #[test]
    fn parses_account_files() {
        let g = parse_group("root:x:0:\nadm:x:4:syslog,alice\nbad line\ndocker:x:999:\n");
        assert_eq!(g.len(), 3);
        assert_eq!(g[1].members, ["syslog", "alice"]);
        assert!(g[2].members.is_empty());
        let p = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        );
        assert_eq!(p[1].uid, 1000);
    }
}
