//! Inputs the runtime turns into files before detection: `docker:IMAGE` is exported from the
//! local engine into the cache (`imports/`), then read as `oci-archive:`.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::{Runtime, RuntimeError};

impl Runtime {
    /// The app as detection reads it: `docker:IMAGE` becomes `oci-archive:` of its export.
    pub fn import_input(&self, app: &str) -> Result<String, RuntimeError> {
        Ok(self.import(app)?.0)
    }

    /// [`Runtime::import_input`], and the pulled image when APP is a registry reference.
    pub(crate) fn import(
        &self,
        app: &str,
    ) -> Result<(String, Option<crate::registry::PulledImage>), RuntimeError> {
        let Some(image) = app.strip_prefix("docker:") else {
            // A registry reference (its first component names a host:port), unless a file of
            // that name exists here.
            if !std::path::Path::new(app).exists() {
                if let Ok(r) = bakeoff_registry::Reference::parse(app) {
                    let pulled = self.pull_image(&r)?;
                    return Ok((
                        format!("oci-archive:{}", pulled.layout.display()),
                        Some(pulled),
                    ));
                }
            }
            return Ok((app.to_string(), None));
        };
        if image.is_empty() || image.starts_with('-') {
            return Err(RuntimeError::Driver(bakeoff_driver::DriverError::Unavailable(
                "`docker:` needs an image the local engine holds, for example docker:hello:latest"
                    .into(),
            )));
        }
        let dir = self.cache.root().join("imports");
        fs_err::create_dir_all(&dir)?;
        let dest: PathBuf = dir.join(format!(
            "{}.tar",
            hex::encode(Sha256::digest(image.as_bytes()))
        ));
        self.say(&format!("exporting {image} from the local Docker engine"));
        let (image_owned, dest2) = (image.to_string(), dest.clone());
        // The export is async (bollard); preparing is not, and may run inside a runtime.
        let size = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(bakeoff_driver::docker_export::export_image(
                    &image_owned,
                    &dest2,
                ))
        })
        .join()
        .expect("the export thread does not panic")?;
        self.say(&format!("exported {size} bytes"));
        Ok((format!("oci-archive:{}", dest.display()), None))
    }
}
