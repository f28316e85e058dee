//! `deb:NAME` builds against Debian's real archive (through this host's apt): nginx and
//! redis-server become artifacts holding the daemon, its configuration and exactly the libraries
//! it loads. Skipped, with the reason printed, when apt cannot download here.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bakeoff_build::{build, Artifact, BuildError, BuildOutcome, Cache, EntryKind};

/// The cache the CLI's end-to-end tests share (builds are content-addressed, downloads verified).
fn cache() -> Cache {
    match std::env::var_os("BAKEOFF_TEST_CACHE_DIR") {
        Some(d) if !d.is_empty() => Cache::new(d),
        _ => Cache::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-cache")),
    }
}

/// Builds `app`, or returns `None` after printing why apt cannot be used here.
/// Under BAKEOFF_REQUIRE_ENGINES=1 (CI) a missing apt is a failure, not a skip.
fn require_engines(test: &str, why: &str) {
    if std::env::var("BAKEOFF_REQUIRE_ENGINES").as_deref() == Ok("1") {
        panic!("{test}: {why}, and BAKEOFF_REQUIRE_ENGINES=1");
    }
}

fn build_or_skip(test: &str, app: &str) -> Option<BuildOutcome> {
    let plan = bakeoff_detect::detect(app).unwrap();
    match build(&plan, &cache(), &|m| eprintln!("{test}: {m}")) {
        Ok(out) => Some(out),
        Err(e @ (BuildError::AptMissing | BuildError::CommandFailed { .. })) => {
            require_engines(test, &e.to_string());
            eprintln!("SKIPPED {test}: cannot fetch Debian packages here: {e}");
            None
        }
        Err(e) => panic!("{test}: building {app} failed: {e}"),
    }
}

fn paths(a: &Artifact) -> Vec<String> {
    a.entries().unwrap().into_iter().map(|e| e.path).collect()
}

fn read(a: &Artifact, p: &str) -> String {
    std::fs::read_to_string(a.rootfs().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn deb_report(a: &Artifact) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(a.dir.join("deb.json")).unwrap()).unwrap()
}

/// `apt-cache policy PKG`'s candidate version: what apt would install on this host.
fn candidate(pkg: &str) -> String {
    let out = Command::new("apt-cache")
        .args(["policy", pkg])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string()
}

/// Runs a program of the rootfs under chroot (so only the image's own files are used), when
/// this process may chroot; `None` otherwise.
fn in_chroot(root: &Path, argv: &[&str]) -> Option<std::process::Output> {
    let out = Command::new("chroot").arg(root).args(argv).output().ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Operation not permitted") {
        eprintln!("(not checked under chroot: {err})");
        return None;
    }
    Some(out)
}

fn assert_common_layout(a: &Artifact, all: &[String]) {
    for gone in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/perl5",
        "usr/share/debconf",
        "lib/systemd",
        "etc/init.d",
    ] {
        assert!(
            !all.iter().any(|p| p.starts_with(gone)),
            "{gone} should be pruned: {all:?}"
        );
    }
    let passwd = read(a, "etc/passwd");
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nobody:x:65534:65534:")),
        "{passwd}"
    );
    assert!(read(a, "etc/group")
        .lines()
        .any(|l| l == "nogroup:x:65534:"));
    let mode = |p: &str| {
        std::fs::symlink_metadata(a.rootfs().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        (mode("tmp"), mode("var/tmp"), mode("run")),
        (0o1777, 0o1777, 0o755)
    );
    // No absolute symlinks: host tools following them would leave the root.
    for e in a.entries().unwrap() {
        if let EntryKind::Symlink { target } = &e.kind {
            assert!(target.is_relative(), "{} -> {}", e.path, target.display());
        }
    }
    // The program's interpreter is in the image.
    assert!(a.rootfs().join("lib64/ld-linux-x86-64.so.2").is_file());
}

#[test]
fn nginx_artifact_has_the_daemon_its_config_and_only_the_libraries_it_loads() {
    let Some(out) = build_or_skip("nginx_artifact", "deb:nginx") else {
        return;
    };
    let a = &out.artifact;
    let m = &a.manifest;
    assert_eq!(
        (m.command.clone(), m.args.clone()),
        (
            vec!["/usr/sbin/nginx".to_string()],
            vec!["-g".to_string(), "daemon off;".to_string()]
        )
    );
    assert_eq!(
        (m.binary.as_str(), m.linkage.as_str(), m.ports.clone()),
        ("/usr/sbin/nginx", "dynamic", vec![80])
    );
    let all = paths(a);
    for p in [
        "usr/sbin/nginx",
        "etc/nginx/nginx.conf",
        "etc/nginx/mime.types",
        "usr/lib/x86_64-linux-gnu/libssl.so.3",
        "var/lib/nginx",
    ] {
        assert!(all.contains(&p.to_string()), "{p} missing: {all:?}");
    }
    // What nginx-common's postinst would have done.
    assert_eq!(
        std::fs::read_link(a.rootfs().join("etc/nginx/sites-enabled/default")).unwrap(),
        PathBuf::from("../sites-available/default")
    );
    assert!(read(a, "var/www/html/index.nginx-debian.html")
        .contains("<title>Welcome to nginx!</title>"));
    // Logs go to the instance's output.
    assert_eq!(
        std::fs::read_link(a.rootfs().join("var/log/nginx/error.log")).unwrap(),
        PathBuf::from("../../../dev/stderr")
    );
    assert!(read(a, "etc/passwd")
        .lines()
        .any(|l| l == "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin"));
    assert!(read(a, "etc/group").lines().any(|l| l == "www-data:x:33:"));
    // Dependencies only maintainer scripts need are not in the image.
    for gone in [
        "bin/ip",
        "sbin/ip",
        "usr/bin/perl",
        "usr/share/perl5/Debconf",
    ] {
        assert!(!all.iter().any(|p| p == gone), "{gone} should not be kept");
    }
    assert_common_layout(a, &all);

    // Exact versions, as this host's apt would install them.
    let report = deb_report(a);
    let nginx = report["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "nginx")
        .unwrap();
    assert_eq!(nginx["version"].as_str().unwrap(), candidate("nginx"));
    assert_eq!(nginx["whole"], true);
    let libc = report["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libc6")
        .unwrap();
    assert_eq!(libc["whole"], false);
    let kept = report["kept_bytes"].as_u64().unwrap();
    assert!(
        kept < 20_000_000 && kept * 2 < report["unpacked_bytes"].as_u64().unwrap(),
        "{report}"
    );

    if let Some(run) = in_chroot(&a.rootfs(), &["/usr/sbin/nginx", "-v"]) {
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success() && err.starts_with("nginx version: nginx/1."),
            "{run:?}"
        );
    }
}

/// nginx-full's modules come from other source packages: they are kept because they add to
/// nginx's own directories, enabled the way their postinst (dh_nginx) would, and they load.
#[test]
fn nginx_full_keeps_its_dynamic_modules_enabled_and_loadable() {
    let Some(out) = build_or_skip("nginx_full", "deb:nginx-full") else {
        return;
    };
    let a = &out.artifact;
    let root = a.rootfs();
    let enabled: Vec<String> = std::fs::read_dir(root.join("etc/nginx/modules-enabled"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        enabled.contains(&"50-mod-http-echo.conf".to_string()),
        "{enabled:?}"
    );
    assert!(
        root.join("etc/nginx/modules-enabled/50-mod-http-echo.conf")
            .is_file(),
        "the link resolves"
    );
    assert!(root
        .join("usr/lib/nginx/modules/ngx_http_echo_module.so")
        .is_file());
    // A module's own library (geoip2 → libmaxminddb) comes with it.
    assert!(paths(a).iter().any(|p| p.contains("libmaxminddb.so")));
    assert_common_layout(a, &paths(a));

    // Load every enabled module with the image's own loader and libraries (a copy of the root,
    // since the artifact is immutable).
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("root");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        copy.join("tmp/t.conf"),
        "include /etc/nginx/modules-enabled/*.conf;\nerror_log stderr;\npid /tmp/n.pid;\nevents {}\n\
         http { access_log off; server { listen 127.0.0.1:1; } }\n",
    )
    .unwrap();
    if let Some(run) = in_chroot(
        &copy,
        &["/usr/sbin/nginx", "-e", "stderr", "-t", "-c", "/tmp/t.conf"],
    ) {
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success() && err.contains("test is successful"),
            "{err}"
        );
    }
}

#[test]
fn redis_artifact_has_its_user_data_dir_and_libraries() {
    let Some(out) = build_or_skip("redis_artifact", "deb:redis-server") else {
        return;
    };
    let a = &out.artifact;
    let m = &a.manifest;
    assert_eq!(
        m.command[..2],
        [
            "/usr/bin/redis-server".to_string(),
            "/etc/redis/redis.conf".to_string()
        ]
    );
    assert_eq!(m.binary, "/usr/bin/redis-server");
    let all = paths(a);
    assert_eq!(
        std::fs::read_link(a.rootfs().join("usr/bin/redis-server")).unwrap(),
        PathBuf::from("redis-check-rdb")
    );
    assert!(
        read(a, "etc/redis/redis.conf").contains("\ndir /var/lib/redis"),
        "redis.conf from the package"
    );
    assert!(
        a.rootfs().join("var/lib/redis").is_dir(),
        "redis cannot start without its dir"
    );
    assert!(
        all.iter().any(|p| p.contains("libjemalloc.so.2")),
        "{all:?}"
    );
    // From redis-tools' postinst: adduser --system --group --home /var/lib/redis redis.
    let passwd = read(a, "etc/passwd");
    let redis = passwd
        .lines()
        .find(|l| l.starts_with("redis:"))
        .unwrap_or_else(|| panic!("{passwd}"));
    assert!(
        redis.ends_with(":/var/lib/redis:/usr/sbin/nologin"),
        "{redis}"
    );
    let gid = redis.split(':').nth(3).unwrap();
    assert!(read(a, "etc/group")
        .lines()
        .any(|l| l == format!("redis:x:{gid}:")));
    assert_common_layout(a, &all);
    assert_eq!(deb_report(a)["users"], serde_json::json!(["redis"]));

    if let Some(run) = in_chroot(&a.rootfs(), &["/usr/bin/redis-server", "--version"]) {
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success() && text.starts_with("Redis server v=7."),
            "{run:?}"
        );
    }
}

#[test]
fn downloads_are_reused_and_unchanged_inputs_hit_the_cache() {
    let Some(first) = build_or_skip("deb_cache", "deb:nginx") else {
        return;
    };
    let plan = bakeoff_detect::detect("deb:nginx").unwrap();
    let again = build(&plan, &cache(), &|_| {}).unwrap();
    assert!(again.cached);
    assert_eq!(again.artifact.manifest.id, first.artifact.manifest.id);

    // Lay the artifact out again in a fresh cache that shares only the downloads: nothing is fetched.
    let t = tempfile::tempdir().unwrap();
    let fresh = Cache::new(t.path());
    std::fs::create_dir_all(fresh.downloads()).unwrap();
    std::os::unix::fs::symlink(
        cache().downloads().join("debs").canonicalize().unwrap(),
        fresh.downloads().join("debs"),
    )
    .unwrap();
    let said = RefCell::new(Vec::<String>::new());
    let rebuilt = build(&plan, &fresh, &|m| said.borrow_mut().push(m.to_string())).unwrap();
    let said = said.into_inner();
    assert!(!rebuilt.cached);
    assert!(
        !said.iter().any(|m| m.starts_with("downloading")),
        "{said:?}"
    );
    assert!(said.iter().any(|m| m.starts_with("unpacking")), "{said:?}");
    assert_eq!(
        rebuilt.artifact.manifest.id, first.artifact.manifest.id,
        "same packages, same id"
    );
}

#[test]
fn a_directory_configures_the_package_and_overrides_its_files() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("site");
    std::fs::create_dir_all(dir.join("html")).unwrap();
    std::fs::write(dir.join("html/index.html"), "<h1>my site</h1>\n").unwrap();
    std::fs::write(
        dir.join("default"),
        "server { listen 8081; root /srv/www; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bakeoff.toml"),
        "package = \"nginx\"\nports = [8081]\n\
         [[files]]\nsrc = \"html\"\ndst = \"/srv/www\"\n\
         [[files]]\nsrc = \"default\"\ndst = \"/etc/nginx/sites-enabled/default\"\n",
    )
    .unwrap();
    let Some(out) = build_or_skip("deb_dir", dir.to_str().unwrap()) else {
        return;
    };
    let a = &out.artifact;
    assert_eq!(a.manifest.command, vec!["/usr/sbin/nginx"]);
    assert_eq!(read(a, "srv/www/index.html"), "<h1>my site</h1>\n");
    // The packaged symlink was replaced by the user's file, not written through.
    let site = a.rootfs().join("etc/nginx/sites-enabled/default");
    assert!(std::fs::symlink_metadata(&site).unwrap().is_file());
    assert_eq!(
        read(a, "etc/nginx/sites-enabled/default"),
        "server { listen 8081; root /srv/www; }\n"
    );
    assert!(read(a, "etc/nginx/sites-available/default").contains("listen 80 default_server"));
}

#[test]
fn bad_packages_are_refused_in_one_sentence() {
    let cache = cache();
    let plan = bakeoff_detect::detect("deb:nginxx").unwrap();
    match build(&plan, &cache, &|_| {}) {
        Err(BuildError::AptMissing) => {
            require_engines("bad_packages", "no apt here");
            eprintln!("SKIPPED bad_packages: no apt here")
        }
        Err(e) => assert_eq!(
            e.to_string(),
            "no Debian package named `nginxx` (apt-cache knows nothing of it; run apt-get update?)"
        ),
        Ok(_) => panic!("nginxx built"),
    }
    let plan = bakeoff_detect::detect("deb:memcached").unwrap();
    match build(&plan, &cache, &|_| {}) {
        Err(BuildError::AptMissing) => require_engines("bad_packages", "no apt here"),
        Err(e) => assert_eq!(
            e.to_string(),
            "deb:memcached: the command /usr/share/memcached/scripts/systemd-memcached-wrapper, a script run by /usr/bin/perl -w is not an ELF program; give the daemon's own program in a bakeoff.toml beside the app: `package = \"memcached\"` and `command = [\"/usr/bin/...\", ...]`"
        ),
        Ok(_) => panic!("memcached built from its Perl wrapper"),
    }
}

/// A directory running `package` with `command` (no unit, no probe run: the port is declared).
fn package_dir(t: &tempfile::TempDir, package: &str, command: &str) -> String {
    let dir = t.path().join(package);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bakeoff.toml"),
        format!("package = \"{package}\"\ncommand = {command}\nports = [9999]\n"),
    )
    .unwrap();
    dir.display().to_string()
}

/// Files a service reads from other packages travel when it depends on them: nslcd depends on
/// ca-certificates (the CA bundle, which update-ca-certificates would make, is made), mtail on
/// tzdata (the zone files and /etc/localtime). nginx depends on neither and gets neither.
#[test]
fn data_packages_a_daemon_depends_on_travel_with_it() {
    let t = tempfile::tempdir().unwrap();
    let nslcd = package_dir(&t, "nslcd", "[\"/usr/sbin/nslcd\", \"-d\"]");
    let Some(out) = build_or_skip("deb_data_ca", &nslcd) else {
        return;
    };
    let a = &out.artifact;
    let bundle = read(a, "etc/ssl/certs/ca-certificates.crt");
    let certs = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certs > 100, "{certs} certificates in the bundle");
    assert!(a
        .rootfs()
        .join("usr/share/ca-certificates/mozilla")
        .is_dir());
    assert!(!a.rootfs().join("usr/share/zoneinfo").exists());

    let mtail = package_dir(
        &t,
        "mtail",
        "[\"/usr/bin/mtail\", \"--progs\", \"/etc/mtail\"]",
    );
    let Some(out) = build_or_skip("deb_data_tz", &mtail) else {
        return;
    };
    let a = &out.artifact;
    let paris = std::fs::read(a.rootfs().join("usr/share/zoneinfo/Europe/Paris")).unwrap();
    assert!(paris.starts_with(b"TZif"));
    assert_eq!(
        std::fs::read_link(a.rootfs().join("etc/localtime")).unwrap(),
        Path::new("../usr/share/zoneinfo/Etc/UTC")
    );
    assert!(!a
        .rootfs()
        .join("etc/ssl/certs/ca-certificates.crt")
        .exists());

    let Some(out) = build_or_skip("deb_data_none", "deb:nginx") else {
        return;
    };
    let root = out.artifact.rootfs();
    assert!(!root.join("usr/share/zoneinfo").exists());
    assert!(!root.join("etc/ssl/certs/ca-certificates.crt").exists());
}
