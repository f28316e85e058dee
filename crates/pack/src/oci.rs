//! The `oci` target: a standard OCI image layout holding only the app's file closure (no base
//! image), and the same blobs as one tar that `docker load` accepts (it carries Docker's
//! `manifest.json` beside the OCI `index.json`). Reproducible: timestamps, owners and order
//! are fixed, so the same artifact always gives the same digest.

use std::io::Write;
use std::path::{Path, PathBuf};

use bakeoff_build::{Artifact, ArtifactManifest, EntryKind};
use bakeoff_spec::Target;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfiguration, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
    SCHEMA_VERSION,
};

use crate::{cached_image, canonical_json, sha256_hex, Image, PackContext, PackError, Packager};

/// Fixed creation time of every image: reproducibility beats a wall-clock date.
pub const CREATED: &str = "1970-01-01T00:00:00Z";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct OciPackager;

impl Packager for OciPackager {
    fn target(&self) -> Target {
        Target::Oci
    }

    fn pack(&self, artifact: &Artifact, ctx: &PackContext) -> Result<Image, PackError> {
        let final_dir = ctx.cache.images().join("oci").join(&artifact.manifest.id);
        cached_image(ctx.cache, &final_dir, |dir| {
            (ctx.log)("writing OCI image");
            write_image(artifact, dir)
        })
    }
}

/// The image configuration for an artifact: entrypoint, args, env, ports, working dir.
pub fn image_config(m: &ArtifactManifest, diff_id: &str) -> ImageConfiguration {
    let mut env = vec![DEFAULT_PATH.to_string()];
    env.extend(
        m.env
            .iter()
            .filter(|(k, _)| k != "PATH")
            .map(|(k, v)| format!("{k}={v}")),
    );
    if let Some((_, v)) = m.env.iter().find(|(k, _)| k == "PATH") {
        env[0] = format!("PATH={v}");
    }
    let mut config = ConfigBuilder::default()
        .entrypoint(m.command.clone())
        .env(env)
        .working_dir(m.workdir.clone())
        .labels(
            [("org.opencontainers.image.title".to_string(), m.name.clone())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    if !m.args.is_empty() {
        config = config.cmd(m.args.clone());
    }
    // Numbers resolved from the image's own /etc/passwd at build time: Docker needs no lookup
    // and still adds the user's supplementary groups from /etc/group.
    if let Some(u) = &m.user {
        config = config.user(u.oci_user());
    }
    if !m.ports.is_empty() {
        config = config.exposed_ports(
            m.ports
                .iter()
                .map(|p| format!("{p}/tcp"))
                .collect::<Vec<_>>(),
        );
    }
    ImageConfigurationBuilder::default()
        .created(CREATED.to_string())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config.build().expect("all config fields set"))
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .expect("rootfs"),
        )
        .build()
        .expect("all image fields set")
}

pub fn image_manifest(config: (&str, u64), layer: (&str, u64)) -> ImageManifest {
    let desc = |media, digest: &str, size| {
        Descriptor::new(
            media,
            size,
            digest
                .parse::<oci_spec::image::Digest>()
                .expect("sha256 digest"),
        )
    };
    ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(desc(MediaType::ImageConfig, config.0, config.1))
        .layers(vec![desc(MediaType::ImageLayerGzip, layer.0, layer.1)])
        .build()
        .expect("all manifest fields set")
}

/// Whether `path` (relative to the image root) is one of `owns` (absolute) or below one.
fn owned(owns: &[String], path: &str) -> bool {
    owns.iter().any(|o| {
        let o = o.trim_matches('/');
        path == o
            || path
                .strip_prefix(o)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The uncompressed layer: every rootfs entry owned by root (but what the app's user owns,
/// [`bakeoff_build::RunUser::owns`]), mtime 0, sorted.
pub fn layer_tar(artifact: &Artifact) -> Result<Vec<u8>, PackError> {
    let mut b = tar::Builder::new(Vec::new());
    let user = artifact.manifest.user.as_ref();
    for e in artifact.entries()? {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        let (uid, gid) = match user {
            Some(u) if owned(&u.owns, &e.path) => (u.uid, u.gid),
            _ => (0, 0),
        };
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(0);
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())?;
            }
            EntryKind::File { source, size } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                b.append_data(&mut h, &e.path, fs_err::File::open(source)?)?;
            }
            EntryKind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.path, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, PackError> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

/// Docker tag for an artifact's image.
pub fn reference(m: &ArtifactManifest) -> String {
    format!("bakeoff/{}:{}", m.name, &m.id[..12])
}

fn write_image(artifact: &Artifact, dir: &Path) -> Result<Image, PackError> {
    let m = &artifact.manifest;
    let layer = layer_tar(artifact)?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer));
    let layer_gz = gzip(&layer)?;
    let layer_digest = format!("sha256:{}", sha256_hex(&layer_gz));
    let config = canonical_json(&image_config(m, &diff_id));
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let manifest = canonical_json(&image_manifest(
        (&config_digest, config.len() as u64),
        (&layer_digest, layer_gz.len() as u64),
    ));
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));
    let reference = reference(m);

    let mut manifest_desc = Descriptor::new(
        MediaType::ImageManifest,
        manifest.len() as u64,
        manifest_digest
            .parse::<oci_spec::image::Digest>()
            .expect("digest"),
    );
    manifest_desc.set_annotations(Some(
        [(
            "org.opencontainers.image.ref.name".to_string(),
            reference.clone(),
        )]
        .into_iter()
        .collect(),
    ));
    let index = canonical_json(
        &ImageIndexBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![manifest_desc])
            .build()
            .expect("index fields set"),
    );
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let docker_manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": blob(&config_digest),
        "RepoTags": [reference],
        "Layers": [blob(&layer_digest)],
    }]))
    .expect("json");
    let files: Vec<(String, &[u8])> = vec![
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), &index),
        ("manifest.json".into(), &docker_manifest),
        (blob(&layer_digest), &layer_gz),
        (blob(&config_digest), &config),
        (blob(&manifest_digest), &manifest),
    ];

    // The OCI layout directory, and the same content as one tar for `docker load`.
    let layout = dir.join("layout");
    let mut archive = tar::Builder::new(Vec::new());
    for (path, data) in &files {
        let p = layout.join(path);
        fs_err::create_dir_all(p.parent().unwrap())?;
        fs_err::write(&p, data)?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        archive.append_data(&mut h, path, *data)?;
    }
    fs_err::write(dir.join("image.tar"), archive.into_inner()?)?;

    Ok(Image {
        target: Target::Oci,
        name: m.name.clone(),
        artifact_id: m.id.clone(),
        digest: manifest_digest,
        dir: dir.to_path_buf(),
        files: [
            ("archive".to_string(), PathBuf::from("image.tar")),
            ("layout".to_string(), PathBuf::from("layout")),
        ]
        .into_iter()
        .collect(),
        size_bytes: layer.len() as u64,
        compressed_bytes: layer_gz.len() as u64,
        reference: Some(reference),
        details: crate::ImageDetails {
            config_digest: Some(config_digest),
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_the_user_owns_is_the_path_and_what_is_below_it() {
        let owns = ["/var/lib/am".to_string(), "/run/x/".to_string()];
        for (path, want) in [
            ("var/lib/am", true),
            ("var/lib/am/silences", true),
            ("var/lib/amx", false),
            ("var/lib", false),
            ("run/x", true),
            ("run/x/pid", true),
            ("run", false),
        ] {
            assert_eq!(owned(&owns, path), want, "{path}");
        }
        assert!(!owned(&[], "var/lib/am"));
    }

    use super::*;
    use bakeoff_build::{build, Cache};

    fn example(cache: &Cache) -> Artifact {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
        let plan = bakeoff_detect::detect(dir.to_str().unwrap()).unwrap();
        build(&plan, cache, &|_| {}).unwrap().artifact
    }

    fn pretty(json: &[u8]) -> String {
        serde_json::to_string_pretty(&serde_json::from_slice::<serde_json::Value>(json).unwrap())
            .unwrap()
    }

    fn pack(cache: &Cache, artifact: &Artifact) -> Image {
        let ctx = PackContext {
            cache,
            kernel: None,
            log: &|_| {},
        };
        OciPackager.pack(artifact, &ctx).unwrap()
    }

    #[test]
    fn config_and_manifest_snapshots() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let mut artifact = example(&cache);
        artifact.manifest.id = "0123456789abcdef".repeat(4);
        artifact.manifest.env = vec![("GREETING".into(), "hi".into())];
        artifact.manifest.args = vec!["--flag".into()];
        // The port the runtime's probe run observes for the example (packing does not probe).
        artifact.manifest.ports = vec![8080];
        let config = image_config(
            &artifact.manifest,
            "sha256:1111111111111111111111111111111111111111111111111111111111111111",
        );
        insta::assert_snapshot!("config", pretty(&canonical_json(&config)));
        let manifest = image_manifest(
            (
                "sha256:2222222222222222222222222222222222222222222222222222222222222222",
                512,
            ),
            (
                "sha256:3333333333333333333333333333333333333333333333333333333333333333",
                400_000,
            ),
        );
        insta::assert_snapshot!("manifest", pretty(&canonical_json(&manifest)));
    }

    #[test]
    fn same_inputs_same_digest_in_fresh_caches() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ca, cb) = (Cache::new(a.path()), Cache::new(b.path()));
        let (ia, ib) = (pack(&ca, &example(&ca)), pack(&cb, &example(&cb)));
        assert_eq!(ia.digest, ib.digest);
        assert_eq!(
            std::fs::read(ia.file("archive").unwrap()).unwrap(),
            std::fs::read(ib.file("archive").unwrap()).unwrap()
        );
        // Packing again reuses the stored image.
        assert_eq!(pack(&ca, &example(&ca)), ia);
    }

    #[test]
    fn layout_is_valid_and_holds_only_the_closure() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::new(t.path());
        let artifact = example(&cache);
        let image = pack(&cache, &artifact);
        let layout = image.file("layout").unwrap();
        let index = oci_spec::image::ImageIndex::from_file(layout.join("index.json")).unwrap();
        let desc = &index.manifests()[0];
        assert_eq!(desc.digest().to_string(), image.digest);
        let blob = |d: &str| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let manifest = ImageManifest::from_file(blob(&image.digest)).unwrap();
        for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
            let data = std::fs::read(blob(d.digest().as_ref())).unwrap();
            assert_eq!(
                format!("sha256:{}", sha256_hex(&data)),
                d.digest().to_string(),
                "blob digest"
            );
            assert_eq!(data.len() as u64, d.size());
        }
        let gz = std::fs::read(blob(manifest.layers()[0].digest().as_ref())).unwrap();
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(
                (e.header().uid().unwrap(), e.header().mtime().unwrap()),
                (0, 0)
            );
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(names, vec!["app/", "app/hello"]);
        // Size target: the image is the binary plus little more.
        let ratio = image.size_bytes as f64 / artifact.manifest.binary_size as f64;
        assert!(ratio < 1.1, "uncompressed layer is {ratio:.3}x the binary");
    }
}
