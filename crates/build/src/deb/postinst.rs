//! What a maintainer script (`postinst`) does that a daemon relies on, read from the script
//! without running it: system users and groups (`adduser`, `useradd`, `addgroup`, `groupadd`),
//! directories (`mkdir`), owners (`chown`), symbolic links (`ln -s`) and copies (`cp`) with
//! literal absolute paths. A small shell reader: continuation lines, quotes, `;`/`&&`/`||`/`|` and simple
//! `VAR=value` assignments; a command whose words still hold `$` after substitution is skipped.
//! Conditions are not evaluated: on a fresh install they hold for these commands.

use std::collections::BTreeMap;

/// One effect of a maintainer script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    User(UserSpec),
    Group {
        name: String,
    },
    Mkdir {
        path: String,
    },
    /// `chown [-R] OWNER[:GROUP] PATH...`: the path belongs to the owner (a name or a number).
    Chown {
        owner: String,
        path: String,
    },
    Symlink {
        target: String,
        link: String,
    },
    Copy {
        from: String,
        to: String,
    },
}

/// A system user as `adduser --system` / `useradd --system` would create it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    pub name: String,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub gecos: Option<String>,
    /// `--group` / `useradd -U`: a group of the same name.
    pub own_group: bool,
    /// `--ingroup G` / `useradd -g G`.
    pub group: Option<String>,
    pub uid: Option<u32>,
}

/// The actions of `script`, in order.
pub fn actions(script: &str) -> Vec<Action> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for words in commands(script) {
        let words: Vec<String> = words.into_iter().map(|w| substitute(&w, &vars)).collect();
        // `VAR=value` alone on its command is an assignment.
        if words.len() == 1 {
            if let Some((k, v)) = words[0].split_once('=') {
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    vars.insert(k.to_string(), v.to_string());
                    continue;
                }
            }
        }
        if words.iter().any(|w| w.contains('$')) {
            continue;
        }
        let (cmd, args) = match words.split_first() {
            Some((c, a)) => (c.as_str(), a),
            None => continue,
        };
        match cmd {
            "adduser" | "useradd" => out.extend(user(cmd, args)),
            "addgroup" | "groupadd" => {
                if let Some(name) = operands(args, &["--gid", "-g", "--key", "-K"]).last() {
                    out.push(Action::Group { name: name.clone() });
                }
            }
            "mkdir" => {
                for path in operands(args, &["-m", "--mode"]) {
                    if safe_path(&path) {
                        out.push(Action::Mkdir { path });
                    }
                }
            }
            "chown" => {
                if let Some((owner, paths)) =
                    operands(args, &["--reference", "--from"]).split_first()
                {
                    let owner = owner.split([':', '.']).next().unwrap_or_default();
                    if !owner.is_empty() {
                        for path in paths.iter().filter(|p| safe_path(p)) {
                            out.push(Action::Chown {
                                owner: owner.to_string(),
                                path: path.clone(),
                            });
                        }
                    }
                }
            }
            "ln" if args.iter().any(|a| {
                a.starts_with('-') && !a.starts_with("--") && a.contains('s') || a == "--symbolic"
            }) =>
            {
                if let [target, link] = operands(args, &["-t", "--target-directory"]).as_slice() {
                    if safe_path(link) {
                        out.push(Action::Symlink {
                            target: target.clone(),
                            link: link.clone(),
                        });
                    }
                }
            }
            "cp" => {
                if let [from, to] = operands(args, &["-t", "--target-directory"]).as_slice() {
                    if safe_path(from) && safe_path(to) {
                        out.push(Action::Copy {
                            from: from.clone(),
                            to: to.clone(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The words of a command without its redirections (`2> /dev/null`, `>/dev/null`, `2>&1`):
/// their targets are files the shell opens, not operands to create.
fn without_redirections(words: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let op = w.trim_start_matches(|c: char| c.is_ascii_digit());
        let rest = ["&>>", "&>", ">>", ">&", "<&", ">|", ">", "<"]
            .iter()
            .find_map(|o| op.strip_prefix(o));
        match rest {
            Some("") => {
                it.next();
            }
            Some(_) => {}
            None => out.push(w),
        }
    }
    out
}

/// Absolute, without `..`: a path that stays inside the image root.
pub fn safe_path(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|c| c == "..") && p.len() > 1
}

/// The non-option words of `args`; `with_value` options take the next word.
fn operands(args: &[String], with_value: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if with_value.contains(&a.as_str()) {
            it.next();
        } else if a == "--" {
            out.extend(it.by_ref().cloned());
        } else if !a.starts_with('-') {
            out.push(a.clone());
        }
    }
    out
}

fn user(cmd: &str, args: &[String]) -> Option<Action> {
    let mut spec = UserSpec::default();
    let mut system = false;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (opt, inline) = match a.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match (cmd, opt) {
            (_, "--system") | ("useradd", "-r") => system = true,
            (_, "--home") | ("useradd", "-d") | ("useradd", "--home-dir") => spec.home = value(),
            (_, "--shell") | ("useradd", "-s") => spec.shell = value(),
            ("adduser", "--gecos") | (_, "--comment") | ("useradd", "-c") => spec.gecos = value(),
            ("adduser", "--group") | ("useradd", "-U") | ("useradd", "--user-group") => {
                spec.own_group = true
            }
            ("adduser", "--ingroup") | ("useradd", "-g") | ("useradd", "--gid") => {
                spec.group = value()
            }
            (_, "--uid") | ("useradd", "-u") => spec.uid = value().and_then(|v| v.parse().ok()),
            (
                "useradd",
                "-G" | "--groups" | "-k" | "--skel" | "-e" | "-f" | "-K" | "--key" | "-p" | "-b"
                | "--base-dir",
            ) => {
                value();
            }
            ("adduser", "--firstuid" | "--lastuid" | "--firstgid" | "--lastgid" | "--conf") => {
                value();
            }
            (_, o) if o.starts_with('-') => {}
            _ => names.push(a.clone()),
        }
    }
    // `adduser USER GROUP` adds an existing user to a group: not a new user.
    if names.len() != 1 || (cmd == "adduser" && !system) {
        return None;
    }
    spec.name = names.remove(0);
    Some(Action::User(spec))
}

/// Replaces `$VAR` and `${VAR}` with known values; unknown ones are left as they are.
fn substitute(word: &str, vars: &BTreeMap<String, String>) -> String {
    bakeoff_elf::expand_vars(word, |name| vars.get(name).cloned())
}

/// Splits a script into simple commands (lists of words), dropping comments, redirections and
/// the shell keywords that start a command (`if`, `then`, `!`, ...).
fn commands(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let mut words: Vec<String> = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = line.chars().peekable();
        fn flush(words: &mut Vec<String>, word: &mut String, in_word: &mut bool) {
            if *in_word {
                words.push(std::mem::take(word));
                *in_word = false;
            }
        }
        fn end_command(words: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            let cmd = clean(std::mem::take(words));
            if !cmd.is_empty() {
                out.push(cmd);
            }
        }
        while let Some(c) = chars.next() {
            match c {
                '#' if !in_word => break,
                ' ' | '\t' => flush(&mut words, &mut word, &mut in_word),
                ';' | '&' | '|' | '(' | ')' | '{' | '}'
                    if !in_word || matches!(c, ';' | '|' | '&') =>
                {
                    flush(&mut words, &mut word, &mut in_word);
                    end_command(&mut words, &mut out);
                }
                '\'' => {
                    in_word = true;
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                        word.push(c);
                    }
                }
                '"' => {
                    in_word = true;
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => {
                                if let Some(n) = chars.next() {
                                    word.push(n);
                                }
                            }
                            c => word.push(c),
                        }
                    }
                }
                '\\' => {
                    in_word = true;
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
        }
        flush(&mut words, &mut word, &mut in_word);
        end_command(&mut words, &mut out);
    }
    out
}

/// Drops leading keywords and redirections (with their targets).
fn clean(words: Vec<String>) -> Vec<String> {
    let keywords = [
        "if", "then", "else", "elif", "do", "while", "until", "!", "exec", "command",
    ];
    let mut words: Vec<String> = without_redirections(words);
    while words
        .first()
        .is_some_and(|w| keywords.contains(&w.as_str()))
    {
        words.remove(0);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of bookworm's nginx-common postinst that shape the file tree.
    const NGINX_COMMON: &str = r#"#!/bin/sh
set -e

. /usr/share/debconf/confmodule

case "$1" in
  configure)
    logdir="/var/log/nginx"

    # Allow local admin to override
    if ! dpkg-statoverride --list "$logdir" >/dev/null; then
      chown root:adm $logdir
      chmod 0755 $logdir
    fi

    # Secure default logfiles on fresh installations
    if [ -z "$2" ]; then
      access_log="$logdir/access.log"
      if [ ! -e "$access_log" ]; then
        touch "$access_log"
      fi
    fi

    # If a symlink doesn't exist and can be created, then create it.
    if [ -z $2 ] && [ ! -e /etc/nginx/sites-enabled/default ] &&
       [ -d /etc/nginx/sites-enabled ] && [ -d /etc/nginx/sites-available ]; then
      ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default
    fi

    # Create a default index page when not already present.
    if [ ! -e /var/www/html/index.nginx-debian.html ]; then
      mkdir -p /var/www/html
      cp /usr/share/nginx/html/index.html /var/www/html/index.nginx-debian.html
    fi
    ;;
esac
if [ "$1" = "configure" ] ; then
	if [ -x "/etc/init.d/nginx" ]; then
		update-rc.d nginx defaults >/dev/null || exit 1
	fi
fi
exit 0
"#;

    /// bookworm's redis-tools postinst.
    const REDIS_TOOLS: &str = r#"#!/bin/sh

set -eu

USER="redis"

Setup_dir () {
	DIR="${1}"
	MODE="${2}"
	GROUP="${3}"

	mkdir -p ${DIR}

	if ! dpkg-statoverride --list ${DIR} >/dev/null 2>&1
	then
		chown ${USER}:${GROUP} ${DIR}
		chmod ${MODE} ${DIR}
	fi
}

if [ "$1" = "configure" ]
then
	adduser \
		--system \
		--home /var/lib/redis \
		--quiet \
		--group \
		${USER} || true

	Setup_dir /var/log/redis 2750 adm
	Setup_dir /var/lib/redis 750 ${USER}
	Setup_dir /etc/redis 2770 ${USER}
fi

exit 0
"#;

    #[test]
    fn chown_names_the_owner_of_each_path() {
        let script = "if [ -d /var/lib/prometheus/alertmanager ]; then\n  chown prometheus:prometheus /var/lib/prometheus/alertmanager\nfi\nchown -R foo.bar /a /b 2>/dev/null\nchown root:adm $logdir\nchown :grp /c\n";
        assert_eq!(
            actions(script),
            vec![
                Action::Chown {
                    owner: "prometheus".into(),
                    path: "/var/lib/prometheus/alertmanager".into()
                },
                Action::Chown {
                    owner: "foo".into(),
                    path: "/a".into()
                },
                Action::Chown {
                    owner: "foo".into(),
                    path: "/b".into()
                },
            ]
        );
    }

    #[test]
    fn redirections_are_not_paths_to_create() {
        let a = actions("mkdir -p /var/lib/x 2> /dev/null\nmkdir /var/log/x >/dev/null 2>&1\nmkdir -p /run/y 1>> /tmp/log || true\n");
        assert_eq!(
            a,
            ["/var/lib/x", "/var/log/x", "/run/y"]
                .iter()
                .map(|p| Action::Mkdir {
                    path: p.to_string()
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn nginx_common_links_the_default_site_and_copies_the_index() {
        assert_eq!(
            actions(NGINX_COMMON),
            vec![
                Action::Chown {
                    owner: "root".into(),
                    path: "/var/log/nginx".into()
                },
                Action::Symlink {
                    target: "/etc/nginx/sites-available/default".into(),
                    link: "/etc/nginx/sites-enabled/default".into()
                },
                Action::Mkdir {
                    path: "/var/www/html".into()
                },
                Action::Copy {
                    from: "/usr/share/nginx/html/index.html".into(),
                    to: "/var/www/html/index.nginx-debian.html".into()
                },
            ]
        );
    }

    #[test]
    fn redis_tools_adds_a_system_user_with_its_group() {
        assert_eq!(
            actions(REDIS_TOOLS),
            vec![Action::User(UserSpec {
                name: "redis".into(),
                home: Some("/var/lib/redis".into()),
                own_group: true,
                ..Default::default()
            })]
        );
    }

    #[test]
    fn useradd_groupadd_and_quoting() {
        let script = "NAME=svc; groupadd --system svcgrp\n\
                      useradd -r -g svcgrp -d '/var/lib/my svc' -s /usr/sbin/nologin -c \"My service\" \"$NAME\"\n\
                      adduser --system --ingroup www-data --home=/srv/x --no-create-home webby 2>/dev/null\n\
                      adduser someone sudo # an existing user into a group\n\
                      mkdir -m 0750 -p /var/cache/svc /run/svc ../escape relative\n\
                      ln -sf ../lib/thing /usr/bin/thing && ln /hard /link\n";
        assert_eq!(
            actions(script),
            vec![
                Action::Group {
                    name: "svcgrp".into()
                },
                Action::User(UserSpec {
                    name: "svc".into(),
                    home: Some("/var/lib/my svc".into()),
                    shell: Some("/usr/sbin/nologin".into()),
                    gecos: Some("My service".into()),
                    group: Some("svcgrp".into()),
                    ..Default::default()
                }),
                Action::User(UserSpec {
                    name: "webby".into(),
                    home: Some("/srv/x".into()),
                    group: Some("www-data".into()),
                    ..Default::default()
                }),
                Action::Mkdir {
                    path: "/var/cache/svc".into()
                },
                Action::Mkdir {
                    path: "/run/svc".into()
                },
                Action::Symlink {
                    target: "../lib/thing".into(),
                    link: "/usr/bin/thing".into()
                },
            ]
        );
    }

    #[test]
    fn unresolved_variables_and_escapes_are_skipped() {
        assert_eq!(
            actions("mkdir -p $DIR\nmkdir -p /var/$X/y\ncp /a/../../etc/shadow /x\n"),
            vec![]
        );
        assert_eq!(
            substitute(
                "${A}b$A-$B",
                &BTreeMap::from([("A".to_string(), "1".to_string())])
            ),
            "1b1-$B"
        );
    }
}
