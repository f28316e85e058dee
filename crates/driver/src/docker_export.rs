//! `docker:IMAGE` as app input: the image the local engine holds, exported through the Engine
//! API (`GET /images/{name}/get`, what `docker save` does) into a tarball bakeoff then reads like
//! any `oci-archive:`. Nothing is pulled: an image the engine does not hold is an error.

use std::path::Path;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::docker::DockerDriver;
use crate::DriverError;

/// Writes the engine's image `image` to `dest` (atomically: a temp file renamed at the end) and
/// returns its size in bytes.
pub async fn export_image(image: &str, dest: &Path) -> Result<u64, DriverError> {
    let docker = DockerDriver::new().connect().await?;
    if let Err(e) = docker.inspect_image(image).await {
        return Err(DriverError::Unavailable(match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => format!(
                "the local Docker engine holds no image named `{image}` (bakeoff never pulls; build or load it first)"
            ),
            other => format!("the Docker engine cannot inspect image `{image}`: {other}"),
        }));
    }
    let part = dest.with_extension("part");
    let mut out = tokio::fs::File::create(&part)
        .await
        .map_err(|e| DriverError::Unavailable(format!("cannot write {}: {e}", part.display())))?;
    let mut stream = docker.export_image(image);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            DriverError::Unavailable(format!(
                "exporting image `{image}` from the engine failed: {e}"
            ))
        })?;
        size += chunk.len() as u64;
        out.write_all(&chunk).await.map_err(|e| {
            DriverError::Unavailable(format!("cannot write {}: {e}", part.display()))
        })?;
    }
    out.flush()
        .await
        .map_err(|e| DriverError::Unavailable(format!("cannot write {}: {e}", part.display())))?;
    drop(out);
    tokio::fs::rename(&part, dest)
        .await
        .map_err(|e| DriverError::Unavailable(format!("cannot write {}: {e}", dest.display())))?;
    Ok(size)
}
