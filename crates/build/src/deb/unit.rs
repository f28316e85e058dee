//! A package's systemd service unit, read as systemd.syntax(7) and systemd.service(5) say, to
//! find the daemon's foreground command and the environment it expects. The unit is untrusted
//! input: every function here returns a value or a sentence, never panics.
//!
//! What is read from `[Service]`: `Type=`, `ExecStartPre=`, `ExecStart=`, `User=`, `Group=`,
//! `Environment=`, `EnvironmentFile=`, `WorkingDirectory=`, `RuntimeDirectory=`,
//! `StateDirectory=`, `CacheDirectory=`, `LogsDirectory=`. Everything else (sandboxing,
//! restart policy) has no meaning for one foreground process in a container or microVM.

/// One `ExecStart=`/`ExecStartPre=` line, split into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exec {
    /// `-`: a failure is ignored.
    pub ignore_failure: bool,
    /// `:`: no `$VAR` expansion.
    pub verbatim: bool,
    /// The program (the first word, or after `@` the path whose argv[0] is the second word).
    pub argv: Vec<Word>,
}

/// A word of a command line: literal text, or a `$NAME` that becomes zero or more words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Word {
    /// Text in which `${NAME}` references are still to be substituted.
    Text(String),
    /// `$NAME` alone as a word: split at whitespace after substitution.
    Split(String),
}

/// The `[Service]` section of a unit, as far as bakeoff uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Service {
    pub kind: Option<String>,
    pub exec_start_pre: Vec<Exec>,
    pub exec_start: Vec<Exec>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `DynamicUser=yes`: systemd makes a user (named `User=` or after the unit) for the run.
    pub dynamic_user: bool,
    pub environment: Vec<(String, String)>,
    /// (path, optional: the `-` prefix).
    pub environment_files: Vec<(String, bool)>,
    pub working_directory: Option<String>,
    /// `/run/X`, `/var/lib/X`, `/var/cache/X`, `/var/log/X` for each name given.
    pub directories: Vec<String>,
}

/// Logical lines of a unit file: comments dropped, backslash continuations joined with a space.
pub(crate) fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') {
            // Comment lines inside a continuation are skipped, as systemd does.
            continue;
        }
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        let joined = match pending.take() {
            Some(mut p) => {
                p.push(' ');
                p.push_str(body);
                p
            }
            None => body.to_string(),
        };
        if continues {
            pending = Some(joined);
        } else if !joined.trim().is_empty() {
            out.push(joined);
        }
    }
    if let Some(p) = pending.filter(|p| !p.trim().is_empty()) {
        out.push(p);
    }
    out
}

/// Parses a unit file's `[Service]` section.
pub(crate) fn parse(text: &str) -> Result<Service, String> {
    let mut s = Service::default();
    let mut section = String::new();
    for line in logical_lines(text) {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        if section != "Service" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "Type" => s.kind = Some(value.to_string()),
            // An empty assignment resets the list (how drop-ins override a command).
            "ExecStart" if value.is_empty() => s.exec_start.clear(),
            "ExecStartPre" if value.is_empty() => s.exec_start_pre.clear(),
            "ExecStart" => s.exec_start.push(exec(value)?),
            "ExecStartPre" => s.exec_start_pre.push(exec(value)?),
            "User" => s.user = Some(no_specifier(value)?.to_string()),
            "Group" => s.group = Some(no_specifier(value)?.to_string()),
            "DynamicUser" => {
                s.dynamic_user = matches!(value, "yes" | "true" | "on" | "1");
            }
            "Environment" if value.is_empty() => s.environment.clear(),
            "Environment" => {
                for word in split_quoted(value)? {
                    if let Some((k, v)) = word.split_once('=') {
                        s.environment
                            .push((k.to_string(), no_specifier(v)?.to_string()));
                    }
                }
            }
            "EnvironmentFile" if value.is_empty() => s.environment_files.clear(),
            "EnvironmentFile" => {
                let (path, optional) = match value.strip_prefix('-') {
                    Some(p) => (p, true),
                    None => (value, false),
                };
                s.environment_files
                    .push((no_specifier(path)?.to_string(), optional));
            }
            "WorkingDirectory" => {
                let v = value.trim_start_matches('-');
                // `~` is the user's home; bakeoff keeps the image's own directory then.
                if v != "~" {
                    s.working_directory = Some(no_specifier(v)?.to_string());
                }
            }
            "RuntimeDirectory" | "StateDirectory" | "CacheDirectory" | "LogsDirectory" => {
                let base = match key {
                    "RuntimeDirectory" => "/run",
                    "StateDirectory" => "/var/lib",
                    "CacheDirectory" => "/var/cache",
                    _ => "/var/log",
                };
                for name in value.split_whitespace() {
                    // `name:symlink` (systemd 250) also makes a link; the directory is enough.
                    let name = name.split(':').next().unwrap_or(name);
                    let name = no_specifier(name)?;
                    if name.split('/').any(|c| c == ".." || c.is_empty()) {
                        return Err(format!("{key}={value}: {name} is not a relative path"));
                    }
                    s.directories.push(format!("{base}/{name}"));
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

/// `%%` is a percent sign; any other specifier (`%i`, `%n`, ...) names something only systemd
/// knows (an instance, a unit name), so it is refused.
fn no_specifier(value: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    if !value.contains('%') {
        return Ok(value.into());
    }
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(x) => {
                return Err(format!(
                    "`{value}` uses the systemd specifier %{x}, which only systemd can fill in"
                ))
            }
            None => return Err(format!("`{value}` ends with a lone %")),
        }
    }
    Ok(out.into())
}

/// One `ExecStart=` value: prefixes, then words per systemd.service(5) "Command lines".
pub(crate) fn exec(value: &str) -> Result<Exec, String> {
    let mut rest = value.trim_start();
    let (mut ignore_failure, mut verbatim, mut at) = (false, false, false);
    loop {
        if let Some(r) = rest.strip_prefix("!!") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix(['!', '+']) {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('-') {
            ignore_failure = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix(':') {
            verbatim = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('@') {
            at = true;
            rest = r;
        } else {
            break;
        }
    }
    let words = split_command(rest)?;
    let mut argv: Vec<Word> = Vec::with_capacity(words.len());
    for (text, quoted) in words {
        let text = no_specifier(&text)?.into_owned();
        let split = !verbatim
            && !quoted
            && text.len() > 1
            && text.starts_with('$')
            && !text.starts_with("${")
            && text[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        argv.push(if split {
            Word::Split(text[1..].to_string())
        } else {
            Word::Text(text)
        });
    }
    if at && argv.len() >= 2 {
        // `@/path argv0 args`: bakeoff cannot set argv[0] apart from the path; the path runs.
        argv.remove(1);
    }
    if argv.is_empty() {
        return Err(format!("`{value}` names no program"));
    }
    Ok(Exec {
        ignore_failure,
        verbatim,
        argv,
    })
}

/// Splits at unquoted whitespace; `"..."` and `'...'` quote, backslash escapes as in C. Returns
/// each word and whether any of it was quoted. `;` as a word (several commands) is refused.
fn split_command(s: &str) -> Result<Vec<(String, bool)>, String> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' | '\'' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err(format!("unterminated {c} quote in `{s}`")),
                            Some(q) if q == c => break,
                            Some('\\') => word.push(unescape(&mut chars, s)?),
                            Some(x) => word.push(x),
                        }
                    }
                }
                '\\' => word.push(unescape(&mut chars, s)?),
                _ => word.push(c),
            }
        }
        if word == ";" && !quoted {
            return Err(format!(
                "`{s}` runs several commands (`;`); bakeoff runs one foreground command"
            ));
        }
        words.push((word, quoted));
    }
    Ok(words)
}

fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, s: &str) -> Result<char, String> {
    let c = chars
        .next()
        .ok_or_else(|| format!("`{s}` ends with a backslash"))?;
    Ok(match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'v' => '\u{b}',
        's' => ' ',
        'x' => {
            let hex: String = (0..2).filter_map(|_| chars.next()).collect();
            u8::from_str_radix(&hex, 16)
                .ok()
                .filter(|b| b.is_ascii() && *b != 0)
                .map(char::from)
                .ok_or_else(|| format!("bad \\x escape in `{s}`"))?
        }
        other => other,
    })
}

/// `Environment=` words: like a command line, without the `;` rule.
fn split_quoted(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in s.split_whitespace() {
        // Quotes may span spaces: fall back to the command splitter for those.
        if part.contains(['"', '\'', '\\']) {
            return Ok(split_command(s)?.into_iter().map(|(w, _)| w).collect());
        }
        out.push(part.to_string());
    }
    Ok(out)
}

/// An `EnvironmentFile=`: `KEY=VALUE` lines, `#`/`;` comments, values optionally quoted.
/// Anything a shell would have to run (`$(...)`, backquotes, `export`, `if`) is refused.
pub(crate) fn environment_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in logical_lines(text) {
        let line = line.trim();
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("`{line}` is not KEY=VALUE"));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{line}` is not KEY=VALUE"));
        }
        let v = v.trim();
        if v.contains("$(") || v.contains('`') {
            return Err(format!(
                "`{line}` runs a command; only a shell could read it"
            ));
        }
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// What the unit says about running the daemon in the foreground.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Foreground {
    pub command: Vec<String>,
    /// `Environment=` then each `EnvironmentFile=`, later ones winning.
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// The user does not come from a maintainer script: bakeoff adds it (`DynamicUser=yes`).
    pub dynamic_user: bool,
    pub workdir: Option<String>,
    /// Directories to make: the unit's `*Directory=` and its `ExecStartPre=mkdir` lines.
    pub directories: Vec<String>,
    /// `ExecStartPre=` lines that bakeoff does not run (config tests, chown, ...).
    pub skipped: Vec<String>,
}

/// The foreground command of `package`'s unit `unit_name`, or one sentence saying why there is
/// none and what to write in bakeoff.toml instead. `read` reads a file of the unpacked packages.
pub(crate) fn foreground(
    package: &str,
    unit_name: &str,
    svc: &Service,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Foreground, String> {
    let howto = |program: &str, why: &str| {
        format!(
            "deb:{package}: {unit_name} {why}, which a container or microVM cannot follow; \
             give the foreground command in a bakeoff.toml beside the app: \
             `package = \"{package}\"` and `command = [\"{program}\", ...]` with the daemon's \
             own no-detach flag (see its manual)"
        )
    };
    let first = svc.exec_start.first().ok_or_else(|| {
        format!("deb:{package}: {unit_name} has no ExecStart=; set `command` in bakeoff.toml")
    })?;
    let program = match first.argv.first() {
        Some(Word::Text(t)) => t.clone(),
        _ => String::new(),
    };
    match svc.kind.as_deref() {
        Some("forking") => {
            return Err(howto(
                &program,
                "is Type=forking: the daemon puts itself in the background",
            ))
        }
        Some("oneshot") => {
            return Err(format!(
                "deb:{package}: {unit_name} is Type=oneshot: it runs a task and exits, it is not \
                 a service; set `command` in bakeoff.toml to run something that stays"
            ))
        }
        _ => {}
    }
    if svc.exec_start.len() > 1 {
        return Err(howto(&program, "has several ExecStart= lines"));
    }
    let mut env = svc.environment.clone();
    for (path, optional) in &svc.environment_files {
        match read(path) {
            Some(text) => env.extend(environment_file(&text).map_err(|e| {
                format!("deb:{package}: {unit_name}'s EnvironmentFile={path}: {e}")
            })?),
            None if *optional => {}
            None => {
                return Err(format!(
                    "deb:{package}: {unit_name} needs EnvironmentFile={path}, which no unpacked \
                     package ships"
                ))
            }
        }
    }
    let command = expand(first, &env);
    if command.is_empty() || command[0].is_empty() {
        return Err(format!(
            "deb:{package}: {unit_name}'s ExecStart= names no program"
        ));
    }
    let mut directories = svc.directories.clone();
    let mut skipped = Vec::new();
    for pre in &svc.exec_start_pre {
        let words = expand(pre, &env);
        match mkdir_targets(&words) {
            Some(dirs) => directories.extend(dirs),
            None => skipped.push(words.join(" ")),
        }
    }
    Ok(Foreground {
        command,
        env,
        // DynamicUser= without User= names the user after the unit (systemd.exec(5)).
        user: svc.user.clone().or_else(|| {
            svc.dynamic_user
                .then(|| unit_name.trim_end_matches(".service").to_string())
        }),
        group: svc.group.clone(),
        dynamic_user: svc.dynamic_user,
        workdir: svc.working_directory.clone(),
        directories,
        skipped,
    })
}

/// `mkdir [-p] [-m MODE] DIR...` with absolute directories: what it makes.
fn mkdir_targets(words: &[String]) -> Option<Vec<String>> {
    let (program, args) = words.split_first()?;
    if !matches!(program.as_str(), "/bin/mkdir" | "/usr/bin/mkdir" | "mkdir") {
        return None;
    }
    let mut dirs = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-p" | "--parents" => {}
            "-m" => {
                args.next()?;
            }
            d if d.starts_with('/') && !d.split('/').any(|c| c == "..") => dirs.push(d.to_string()),
            _ => return None,
        }
    }
    (!dirs.is_empty()).then_some(dirs)
}

/// The command with `${NAME}` and `$NAME` substituted from `env` (unset names are empty; a
/// `$NAME` word with an empty value disappears, as in systemd).
pub(crate) fn expand(exec: &Exec, env: &[(String, String)]) -> Vec<String> {
    let get = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut out = Vec::new();
    for w in &exec.argv {
        match w {
            Word::Split(name) => out.extend(get(name).split_whitespace().map(str::to_string)),
            Word::Text(t) if exec.verbatim => out.push(t.clone()),
            Word::Text(t) => {
                let mut s = String::new();
                let mut rest = t.as_str();
                while let Some(i) = rest.find("${") {
                    s.push_str(&rest[..i]);
                    match rest[i + 2..].find('}') {
                        Some(j) => {
                            s.push_str(get(&rest[i + 2..i + 2 + j]));
                            rest = &rest[i + 3 + j..];
                        }
                        None => {
                            s.push_str(&rest[i..]);
                            rest = "";
                        }
                    }
                }
                s.push_str(rest);
                out.push(s.replace("$$", "$"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BEANSTALKD: &str = "[Unit]\nDescription=Simple, fast work queue\n\n[Service]\n\
        User=beanstalkd\nGroup=beanstalkd\nEnvironmentFile=/etc/default/beanstalkd\n\
        ExecStart=/usr/bin/beanstalkd -l ${BEANSTALKD_LISTEN_ADDR} -p ${BEANSTALKD_LISTEN_PORT} $BEANSTALKD_EXTRA\n\
        [Install]\nWantedBy=multi-user.target\n";

    #[test]
    fn a_debian_unit_is_read() {
        let s = parse(BEANSTALKD).unwrap();
        assert_eq!(s.user.as_deref(), Some("beanstalkd"));
        assert_eq!(
            s.environment_files,
            vec![("/etc/default/beanstalkd".into(), false)]
        );
        let env = environment_file(
            "# comment\nBEANSTALKD_LISTEN_ADDR=127.0.0.1\nBEANSTALKD_LISTEN_PORT=\"11300\"\n",
        )
        .unwrap();
        assert_eq!(
            expand(&s.exec_start[0], &env),
            vec!["/usr/bin/beanstalkd", "-l", "127.0.0.1", "-p", "11300"]
        );
    }

    #[test]
    fn dynamic_user_is_named_after_the_unit_unless_user_says() {
        let read = |_: &str| None;
        let dynamic = parse("[Service]\nDynamicUser=yes\nExecStart=/usr/bin/d\n").unwrap();
        let fg = foreground("d", "d-web.service", &dynamic, &read).unwrap();
        assert_eq!((fg.user.as_deref(), fg.dynamic_user), (Some("d-web"), true));
        let named = parse("[Service]\nDynamicUser=true\nUser=web\nGroup=g\nExecStart=/usr/bin/d\n")
            .unwrap();
        let fg = foreground("d", "d.service", &named, &read).unwrap();
        assert_eq!(
            (fg.user.as_deref(), fg.group.as_deref(), fg.dynamic_user),
            (Some("web"), Some("g"), true)
        );
        let plain = parse("[Service]\nDynamicUser=no\nExecStart=/usr/bin/d\n").unwrap();
        let fg = foreground("d", "d.service", &plain, &read).unwrap();
        assert_eq!((fg.user, fg.dynamic_user), (None, false));
    }

    #[test]
    fn continuations_comments_quotes_and_prefixes() {
        let s = parse(
            "[Service]\n# ExecStart=/bin/false\nType=notify\nEnvironment=\"A=one two\" B=3\n\
             ExecStartPre=-/bin/mkdir -p /run/x\nExecStart=/usr/sbin/d \\\n  --name \"a b\" \\\n\
             ; a comment inside\n  'c\\x41' $A ${B}\nRuntimeDirectory=d d/sub\nStateDirectory=d\n",
        )
        .unwrap();
        assert_eq!(s.kind.as_deref(), Some("notify"));
        assert!(s.exec_start_pre[0].ignore_failure);
        assert_eq!(
            expand(&s.exec_start[0], &s.environment),
            vec!["/usr/sbin/d", "--name", "a b", "cA", "one", "two", "3"]
        );
        assert_eq!(s.directories, vec!["/run/d", "/run/d/sub", "/var/lib/d"]);
        let at = exec("@/usr/bin/prog argv0 -x").unwrap();
        assert_eq!(expand(&at, &[]), vec!["/usr/bin/prog", "-x"]);
        let verbatim = exec(":/bin/echo $HOME").unwrap();
        assert_eq!(expand(&verbatim, &[]), vec!["/bin/echo", "$HOME"]);
        assert_eq!(
            expand(&exec("+/bin/a 100%%").unwrap(), &[]),
            ["/bin/a", "100%"]
        );
    }

    #[test]
    fn specifiers_and_unreadable_lines_are_refused() {
        let e = parse("[Service]\nExecStart=/usr/bin/getty %i\n").unwrap_err();
        assert!(e.contains("specifier %i"), "{e}");
        assert!(exec("/bin/a 'open").unwrap_err().contains("unterminated"));
        assert!(exec("/bin/a ; /bin/b").unwrap_err().contains("several"));
        assert!(parse("[Service]\nRuntimeDirectory=../etc\n").is_err());
        assert!(environment_file("X=$(id)\n").is_err());
        assert!(environment_file("if true; then\n").is_err());
        // Outside [Service] nothing is read.
        assert_eq!(parse("[Unit]\nExecStart=%i\n").unwrap(), Service::default());
    }

    #[test]
    fn forking_units_are_refused_with_the_way_out() {
        let s = parse("[Service]\nType=forking\nExecStart=/usr/sbin/ngircd\n").unwrap();
        let e = foreground("ngircd", "ngircd.service", &s, &|_| None).unwrap_err();
        assert!(e.contains("Type=forking"), "{e}");
        assert!(e.contains("command = [\"/usr/sbin/ngircd\", ...]"), "{e}");
        let s = parse(
            "[Service]\nEnvironmentFile=-/etc/default/x\nExecStartPre=/bin/mkdir -m 740 -p /run/x\n\
             ExecStartPre=/usr/sbin/x -t\nExecStart=/usr/sbin/x -f $ARGS\n",
        )
        .unwrap();
        let f = foreground("x", "x.service", &s, &|_| Some("ARGS=\"-a -b\"\n".into())).unwrap();
        assert_eq!(f.command, ["/usr/sbin/x", "-f", "-a", "-b"]);
        assert_eq!(f.directories, ["/run/x"]);
        assert_eq!(f.skipped, ["/usr/sbin/x -t"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn units_never_panic(s in "(\\[Service\\]\n|[A-Za-z]{1,16}=|[ -~]{0,40}|\\\\\n|#[ -~]{0,10}\n|\n){0,30}") {
            if let Ok(svc) = parse(&s) {
                for e in svc.exec_start.iter().chain(&svc.exec_start_pre) {
                    let _ = expand(e, &svc.environment);
                }
            }
            let _ = environment_file(&s);
        }

        /// Any words written with systemd's quoting read back as the same words.
        #[test]
        fn quoted_words_round_trip(words in proptest::collection::vec("[ -#%-~\t]{1,12}", 1..6)) {
            let line = words
                .iter()
                .map(|w| {
                    let mut q = String::from("\"");
                    for c in w.chars() {
                        match c {
                            '"' | '\\' => { q.push('\\'); q.push(c) }
                            '\t' => q.push_str("\\t"),
                            '%' => q.push_str("%%"),
                            _ => q.push(c),
                        }
                    }
                    q.push('"');
                    q
                })
                .collect::<Vec<_>>()
                .join(" ");
            let e = exec(&format!("/bin/prog {line}")).unwrap();
            let mut expect = vec!["/bin/prog".to_string()];
            expect.extend(words.iter().cloned());
            prop_assert_eq!(expand(&e, &[]), expect.clone());
            // The same line continued over two physical lines reads the same.
            let unit = format!("[Service]\nExecStart=/bin/prog \\\n{line}\n");
            let s = parse(&unit).unwrap();
            prop_assert_eq!(expand(&s.exec_start[0], &[]), expect);
        }
    }
}
