//! `/etc/passwd` and `/etc/group` for an image made of Debian packages: Debian's static
//! accounts (base-passwd's `passwd.master` and `group.master`, e.g. www-data = 33) plus the
//! system users and groups the packages' maintainer scripts create, numbered the way
//! `adduser --system` numbers them (the first free id from 100).

use super::postinst::UserSpec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<Account>,
    pub groups: Vec<Group>,
}

/// base-passwd 3.6.1 (bookworm) `passwd.master`: name, uid, gid, gecos, home, shell.
const BASE_USERS: &[(&str, u32, u32, &str, &str, &str)] = &[
    ("root", 0, 0, "root", "/root", "/bin/sh"),
    ("daemon", 1, 1, "daemon", "/usr/sbin", "/usr/sbin/nologin"),
    ("bin", 2, 2, "bin", "/bin", "/usr/sbin/nologin"),
    ("sys", 3, 3, "sys", "/dev", "/usr/sbin/nologin"),
    ("sync", 4, 65534, "sync", "/bin", "/bin/sync"),
    ("games", 5, 60, "games", "/usr/games", "/usr/sbin/nologin"),
    ("man", 6, 12, "man", "/var/cache/man", "/usr/sbin/nologin"),
    ("lp", 7, 7, "lp", "/var/spool/lpd", "/usr/sbin/nologin"),
    ("mail", 8, 8, "mail", "/var/mail", "/usr/sbin/nologin"),
    ("news", 9, 9, "news", "/var/spool/news", "/usr/sbin/nologin"),
    (
        "uucp",
        10,
        10,
        "uucp",
        "/var/spool/uucp",
        "/usr/sbin/nologin",
    ),
    ("proxy", 13, 13, "proxy", "/bin", "/usr/sbin/nologin"),
    (
        "www-data",
        33,
        33,
        "www-data",
        "/var/www",
        "/usr/sbin/nologin",
    ),
    (
        "backup",
        34,
        34,
        "backup",
        "/var/backups",
        "/usr/sbin/nologin",
    ),
    (
        "list",
        38,
        38,
        "Mailing List Manager",
        "/var/list",
        "/usr/sbin/nologin",
    ),
    ("irc", 39, 39, "ircd", "/run/ircd", "/usr/sbin/nologin"),
    (
        "nobody",
        65534,
        65534,
        "nobody",
        "/nonexistent",
        "/usr/sbin/nologin",
    ),
];

/// base-passwd 3.6.1 (bookworm) `group.master`.
const BASE_GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("daemon", 1),
    ("bin", 2),
    ("sys", 3),
    ("adm", 4),
    ("tty", 5),
    ("disk", 6),
    ("lp", 7),
    ("mail", 8),
    ("news", 9),
    ("uucp", 10),
    ("man", 12),
    ("proxy", 13),
    ("kmem", 15),
    ("dialout", 20),
    ("fax", 21),
    ("voice", 22),
    ("cdrom", 24),
    ("floppy", 25),
    ("tape", 26),
    ("sudo", 27),
    ("audio", 29),
    ("dip", 30),
    ("www-data", 33),
    ("backup", 34),
    ("operator", 37),
    ("list", 38),
    ("irc", 39),
    ("src", 40),
    ("shadow", 42),
    ("utmp", 43),
    ("video", 44),
    ("sasl", 45),
    ("plugdev", 46),
    ("staff", 50),
    ("games", 60),
    ("users", 100),
    ("nogroup", 65534),
];

/// adduser's system range (`FIRST_SYSTEM_UID`..=`LAST_SYSTEM_UID`, the same for groups).
const SYSTEM_IDS: std::ops::RangeInclusive<u32> = 100..=999;

impl Accounts {
    /// Debian's static users and groups.
    pub fn base() -> Accounts {
        Accounts {
            users: BASE_USERS
                .iter()
                .map(|&(name, uid, gid, gecos, home, shell)| Account {
                    name: name.into(),
                    uid,
                    gid,
                    gecos: gecos.into(),
                    home: home.into(),
                    shell: shell.into(),
                })
                .collect(),
            groups: BASE_GROUPS
                .iter()
                .map(|&(name, gid)| Group {
                    name: name.into(),
                    gid,
                })
                .collect(),
        }
    }

    pub fn user(&self, name: &str) -> Option<&Account> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Adds a system group unless it exists; returns its gid.
    pub fn add_group(&mut self, name: &str) -> u32 {
        if let Some(g) = self.group(name) {
            return g.gid;
        }
        let gid = SYSTEM_IDS
            .clone()
            .find(|id| !self.groups.iter().any(|g| g.gid == *id))
            .unwrap_or(65534);
        self.groups.push(Group {
            name: name.into(),
            gid,
        });
        gid
    }

    /// Adds a system user as `adduser --system` would (an existing user is left alone).
    pub fn add_user(&mut self, spec: &UserSpec) {
        if self.user(&spec.name).is_some() {
            return;
        }
        let uid = spec
            .uid
            .filter(|id| !self.users.iter().any(|u| u.uid == *id))
            .or_else(|| {
                SYSTEM_IDS
                    .clone()
                    .find(|id| !self.users.iter().any(|u| u.uid == *id))
            })
            .unwrap_or(65534);
        let gid = match (&spec.group, spec.own_group) {
            (Some(g), _) => self.add_group(g),
            (None, true) => self.add_group(&spec.name),
            (None, false) => 65534, // adduser --system puts a user without --group in nogroup
        };
        self.users.push(Account {
            name: spec.name.clone(),
            uid,
            gid,
            gecos: spec.gecos.clone().unwrap_or_default(),
            home: spec.home.clone().unwrap_or_else(|| "/nonexistent".into()),
            shell: spec
                .shell
                .clone()
                .unwrap_or_else(|| "/usr/sbin/nologin".into()),
        });
    }

    /// `/etc/passwd`, in the order the accounts were added.
    pub fn passwd(&self) -> String {
        self.users
            .iter()
            .map(|u| {
                format!(
                    "{}:x:{}:{}:{}:{}:{}\n",
                    u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                )
            })
            .collect()
    }

    /// `/etc/group` (no supplementary members).
    pub fn group_file(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:x:{}:\n", g.name, g.gid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find(|l| l.split(':').next() == Some(name))
    }

    #[test]
    fn base_has_root_www_data_and_nobody() {
        let a = Accounts::base();
        let passwd = a.passwd();
        assert_eq!(passwd.lines().next(), Some("root:x:0:0:root:/root:/bin/sh"));
        assert_eq!(
            line(&passwd, "www-data"),
            Some("www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin")
        );
        assert_eq!(
            line(&passwd, "nobody"),
            Some("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
        );
        let group = a.group_file();
        assert_eq!(line(&group, "www-data"), Some("www-data:x:33:"));
        assert_eq!(line(&group, "nogroup"), Some("nogroup:x:65534:"));
        // Every primary group of a base user exists.
        assert!(a
            .users
            .iter()
            .all(|u| a.groups.iter().any(|g| g.gid == u.gid)));
    }

    #[test]
    fn system_users_get_adduser_numbers() {
        let mut a = Accounts::base();
        a.add_user(&UserSpec {
            name: "redis".into(),
            home: Some("/var/lib/redis".into()),
            own_group: true,
            ..Default::default()
        });
        // uid 100 is free; gid 100 is `users`, so the redis group is 101.
        assert_eq!(
            line(&a.passwd(), "redis"),
            Some("redis:x:100:101::/var/lib/redis:/usr/sbin/nologin")
        );
        assert_eq!(line(&a.group_file(), "redis"), Some("redis:x:101:"));
        a.add_user(&UserSpec {
            name: "web".into(),
            group: Some("www-data".into()),
            ..Default::default()
        });
        a.add_user(&UserSpec {
            name: "lonely".into(),
            ..Default::default()
        });
        a.add_user(&UserSpec {
            name: "www-data".into(),
            uid: Some(5000),
            ..Default::default()
        });
        assert_eq!(
            line(&a.passwd(), "web"),
            Some("web:x:101:33::/nonexistent:/usr/sbin/nologin")
        );
        assert_eq!(
            line(&a.passwd(), "lonely"),
            Some("lonely:x:102:65534::/nonexistent:/usr/sbin/nologin")
        );
        assert_eq!(
            line(&a.passwd(), "www-data").unwrap().split(':').nth(2),
            Some("33"),
            "an existing user stays"
        );
        let uids: Vec<u32> = a.users.iter().map(|u| u.uid).collect();
        let mut unique = uids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), uids.len(), "uids are unique: {uids:?}");
    }
}
