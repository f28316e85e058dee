//! A small client of the OCI distribution API (registry v2): blobs pushed with a monolithic
//! upload, manifests by tag, and every pulled byte checked against the digest that names it.
//!
//! Plain HTTP only: bakeoff talks to a registry on loopback (the tests start Debian's
//! `docker-registry` on 127.0.0.1). A registry that answers 401 gets the credentials of the
//! Docker config file, by Basic auth or through a Bearer token, as its challenge asks ([`auth`]).

pub mod artifact;
pub mod auth;

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HttpClient};
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

/// The largest manifest (or index) read: what the OCI distribution spec asks registries to
/// accept. Tokens, configurations and error bodies are bounded by it too.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Error bodies are kept to this much (the message shows 300 characters).
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Time limits of every exchange with a registry.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Connecting, and from a request without a body until the response head.
    pub answer: std::time::Duration,
    /// From a request with a body (an upload) until the response head.
    pub upload: std::time::Duration,
    /// A response body must bring at least `min_bytes` in every window this long (a silent
    /// or trickling registry is cut off), as curl's --speed-time.
    pub window: std::time::Duration,
    /// Bytes per window, at least (as curl's --speed-limit); a body that ends is never cut.
    pub min_bytes: u64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            answer: std::time::Duration::from_secs(30),
            upload: std::time::Duration::from_secs(300),
            window: std::time::Duration::from_secs(30),
            min_bytes: 1024,
        }
    }
}

/// The manifest media types bakeoff asks for, most specific first.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{0}` is not a registry reference (expected HOST:PORT/REPO[:TAG], e.g. 127.0.0.1:5000/hello:1)")]
    BadReference(String),
    #[error("the registry at {registry} does not answer ({detail}); is it running?")]
    Down { registry: String, detail: String },
    #[error("the registry at {registry} has no {what}")]
    NotFound { registry: String, what: String },
    #[error("the registry at {registry} refused {what}: HTTP {status} {body}")]
    Refused {
        registry: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("the registry at {registry} needs a login and {} holds no credentials for it; log in with `docker login {registry}`", config.display())]
    LoginNeeded { registry: String, config: PathBuf },
    #[error("the registry at {registry} refused the password of `{user}` from {}; check it with `docker login {registry}`", config.display())]
    BadCredentials {
        registry: String,
        user: String,
        config: PathBuf,
    },
    #[error("{} cannot be read: {reason}", path.display())]
    BadConfig { path: PathBuf, reason: String },
    #[error("the registry at {registry} sends clients to {realm} for a token, which needs HTTPS; bakeoff speaks plain HTTP to loopback registries only")]
    TokenNeedsTls { registry: String, realm: String },
    /// What was pulled is not what the caller can use; the text says why.
    #[error("{what} {detail}")]
    Unexpected { what: String, detail: String },
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual}; the download is refused"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A body larger than it may be (its descriptor's size, or a bound).
    #[error("the registry at {registry} sends {what} of {size} bytes, more than the {limit} it may have; the download is refused")]
    TooLarge {
        registry: String,
        what: String,
        size: String,
        limit: u64,
    },
    /// A body that stalled or trickled.
    #[error("the registry at {registry} sent {what} too slowly (less than {min_bytes} bytes in {window_secs} s); the download is refused")]
    TooSlow {
        registry: String,
        what: String,
        min_bytes: u64,
        window_secs: f64,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `HOST[:PORT]/REPO[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repo: String,
    pub tag: String,
}

impl Reference {
    /// Parses a reference whose first component names a registry (it has a `:` port or a `.`,
    /// or is `localhost`), so that it cannot be mistaken for a relative path.
    pub fn parse(text: &str) -> Result<Reference, RegistryError> {
        let bad = || RegistryError::BadReference(text.to_string());
        let (registry, rest) = text.split_once('/').ok_or_else(bad)?;
        // HOST[:PORT] with a numeric port: `oci-archive:/x.tar` or `deb:a/b` are not registries.
        let (host, port) = match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
            && (port.is_some() || host.contains('.') || host == "localhost");
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
        if !host_ok || !port_ok {
            return Err(bad());
        }
        let (repo, tag) = match rest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (rest, "latest"),
        };
        let repo_ok = !repo.is_empty()
            && repo.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
                    && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            });
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !tag.starts_with(['.', '-']);
        if !repo_ok || !tag_ok {
            return Err(bad());
        }
        Ok(Reference {
            registry: registry.to_string(),
            repo: repo.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: tag.to_string(),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repo, self.tag)
    }
}

/// `sha256:HEX` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A pulled manifest: its media type, bytes and digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
    pub digest: String,
}

pub struct Client {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    registry: String,
    deadlines: Deadlines,
    /// Given credentials; `None` reads the Docker config file when the registry asks.
    credentials: Option<auth::Credentials>,
    /// The `Authorization` header that last worked (Basic, or a Bearer token).
    authorization: Mutex<Option<String>>,
}

struct Response {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
    /// A successful answer's body left unread ([`Want::Stream`]).
    stream: Option<Incoming>,
}

/// What to do with a response body.
#[derive(Clone, Copy)]
enum Want {
    /// Read it whole, refusing more than this many bytes.
    Whole(u64),
    /// Leave a 2xx body to the caller (other bodies are read, bounded, for the message).
    Stream,
}

impl Client {
    pub fn new(registry: &str) -> Client {
        Client::with_deadlines(registry, Deadlines::default())
    }

    /// A client with other time limits (tests use short ones).
    pub fn with_deadlines(registry: &str, deadlines: Deadlines) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(deadlines.answer));
        Client {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            registry: registry.to_string(),
            deadlines,
            credentials: None,
            authorization: Mutex::new(None),
        }
    }

    /// A client that logs in with `credentials` instead of the Docker config file's.
    pub fn with_credentials(mut self, credentials: auth::Credentials) -> Client {
        self.credentials = Some(credentials);
        self
    }

    /// The credentials for this registry: given, else from the Docker config file.
    fn credentials(&self) -> Result<(Option<auth::Credentials>, PathBuf), RegistryError> {
        if let Some(c) = &self.credentials {
            return Ok((Some(c.clone()), c.source.clone()));
        }
        let Some(path) = auth::docker_config_path() else {
            return Ok((None, PathBuf::from("~/.docker/config.json")));
        };
        Ok((auth::credentials_from(&path, &self.registry)?, path))
    }

    /// Answers a 401's challenge: the `Authorization` header to send from now on.
    async fn login(&self, challenge: auth::Challenge) -> Result<String, RegistryError> {
        let (creds, config) = self.credentials()?;
        let refused = |creds: &Option<auth::Credentials>| match creds {
            Some(c) => RegistryError::BadCredentials {
                registry: self.registry.clone(),
                user: c.user.clone(),
                config: config.clone(),
            },
            None => RegistryError::LoginNeeded {
                registry: self.registry.clone(),
                config: config.clone(),
            },
        };
        match challenge {
            auth::Challenge::Basic => creds
                .as_ref()
                .map(|c| c.basic())
                .ok_or_else(|| refused(&None)),
            auth::Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                if !realm.starts_with("http://") {
                    return Err(RegistryError::TokenNeedsTls {
                        registry: self.registry.clone(),
                        realm,
                    });
                }
                let mut query = Vec::new();
                if let Some(s) = service {
                    query.push(format!("service={}", auth::query_escape(&s)));
                }
                if let Some(s) = scope {
                    query.push(format!("scope={}", auth::query_escape(&s)));
                }
                let url = if query.is_empty() {
                    realm.clone()
                } else {
                    let sep = if realm.contains('?') { '&' } else { '?' };
                    format!("{realm}{sep}{}", query.join("&"))
                };
                let basic = creds.as_ref().map(|c| c.basic());
                let r = self
                    .send_once(
                        Method::GET,
                        &url,
                        &[],
                        Bytes::new(),
                        basic.as_deref(),
                        Want::Whole(MAX_MANIFEST),
                    )
                    .await?;
                if r.status == StatusCode::UNAUTHORIZED || r.status == StatusCode::FORBIDDEN {
                    return Err(refused(&creds));
                }
                if r.status != StatusCode::OK {
                    return Err(self.refused(&format!("a token from {realm}"), &r));
                }
                let answer: auth::TokenAnswer =
                    serde_json::from_slice(&r.body).map_err(|e| RegistryError::Unexpected {
                        what: format!("the token service {realm}"),
                        detail: format!("answered with no token ({e})"),
                    })?;
                let token = answer.token.or(answer.access_token).ok_or_else(|| {
                    RegistryError::Unexpected {
                        what: format!("the token service {realm}"),
                        detail: "answered with no token".into(),
                    }
                })?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// One request, with the login a 401 asks for (once); a second 401 is a refused login.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        want: Want,
    ) -> Result<Response, RegistryError> {
        // Credentials go to this registry (and to the token realm it names), nowhere else: not
        // to a storage host a blob GET is redirected to.
        let ours =
            !url.starts_with("http://") || url.starts_with(&format!("http://{}/", self.registry));
        if !ours {
            return self.send_once(method, url, headers, body, None, want).await;
        }
        let current = self
            .authorization
            .lock()
            .expect("the lock is never poisoned")
            .clone();
        let first = self
            .send_once(
                method.clone(),
                url,
                headers,
                body.clone(),
                current.as_deref(),
                want,
            )
            .await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let Some(challenge) = first
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::parse_challenge)
        else {
            return Ok(first);
        };
        let header = self.login(challenge).await?;
        *self
            .authorization
            .lock()
            .expect("the lock is never poisoned") = Some(header.clone());
        let second = self
            .send_once(method, url, headers, body, Some(&header), want)
            .await?;
        if second.status == StatusCode::UNAUTHORIZED {
            let (creds, config) = self.credentials()?;
            return Err(match creds {
                Some(c) => RegistryError::BadCredentials {
                    registry: self.registry.clone(),
                    user: c.user,
                    config,
                },
                None => RegistryError::LoginNeeded {
                    registry: self.registry.clone(),
                    config,
                },
            });
        }
        Ok(second)
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        authorization: Option<&str>,
        want: Want,
    ) -> Result<Response, RegistryError> {
        let url = if url.starts_with("http://") {
            url.to_string()
        } else {
            format!("http://{}{url}", self.registry)
        };
        let what = format!("{method} {url}");
        let mut req = Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let head_deadline = if body.is_empty() {
            self.deadlines.answer
        } else {
            self.deadlines.upload
        };
        let req = req
            .header("content-length", body.len())
            .body(Full::new(body))
            .map_err(|e| RegistryError::BadReference(format!("{url}: {e}")))?;
        let down = |detail: String| RegistryError::Down {
            registry: self.registry.clone(),
            detail,
        };
        let resp = tokio::time::timeout(head_deadline, self.http.request(req))
            .await
            .map_err(|_| {
                down(format!(
                    "no answer within {} s",
                    head_deadline.as_secs_f64()
                ))
            })?
            .map_err(|e| down(format!("{e:?}").chars().take(200).collect()))?;
        let (parts, body) = resp.into_parts();
        if matches!(want, Want::Stream) && parts.status.is_success() {
            return Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body: Bytes::new(),
                stream: Some(body),
            });
        }
        let limit = match want {
            Want::Whole(limit) if parts.status.is_success() => limit,
            _ => MAX_ERROR_BODY,
        };
        let mut bytes = Vec::new();
        self.read_body(body, &parts.headers, limit, &what, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(bytes),
            stream: None,
        })
    }

    /// Reads a body chunk by chunk into `sink`: at most `limit` bytes (a larger
    /// `Content-Length` is refused before any byte is read), and at least
    /// [`Deadlines::min_bytes`] in every [`Deadlines::window`] until it ends.
    async fn read_body(
        &self,
        mut body: Incoming,
        headers: &hyper::HeaderMap,
        limit: u64,
        what: &str,
        mut sink: impl FnMut(&[u8]) -> Result<(), RegistryError>,
    ) -> Result<u64, RegistryError> {
        let too_large = |size: String| RegistryError::TooLarge {
            registry: self.registry.clone(),
            what: what.to_string(),
            size,
            limit,
        };
        if let Some(declared) = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if declared > limit {
                return Err(too_large(declared.to_string()));
            }
        }
        let too_slow = || RegistryError::TooSlow {
            registry: self.registry.clone(),
            what: what.to_string(),
            min_bytes: self.deadlines.min_bytes,
            window_secs: self.deadlines.window.as_secs_f64(),
        };
        let mut total = 0u64;
        let mut window_end = tokio::time::Instant::now() + self.deadlines.window;
        let mut in_window = 0u64;
        loop {
            let frame = match tokio::time::timeout_at(window_end, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    if in_window < self.deadlines.min_bytes {
                        return Err(too_slow());
                    }
                    window_end += self.deadlines.window;
                    in_window = 0;
                    continue;
                }
            };
            let Some(frame) = frame else {
                return Ok(total);
            };
            let frame = frame.map_err(|e| RegistryError::Down {
                registry: self.registry.clone(),
                detail: e.to_string(),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > limit {
                return Err(too_large(format!("more than {limit}")));
            }
            sink(&data)?;
            in_window += data.len() as u64;
            if tokio::time::Instant::now() >= window_end {
                if in_window < self.deadlines.min_bytes {
                    return Err(too_slow());
                }
                window_end = tokio::time::Instant::now() + self.deadlines.window;
                in_window = 0;
            }
        }
    }

    fn refused(&self, what: &str, r: &Response) -> RegistryError {
        if r.status == StatusCode::NOT_FOUND {
            return RegistryError::NotFound {
                registry: self.registry.clone(),
                what: what.to_string(),
            };
        }
        RegistryError::Refused {
            registry: self.registry.clone(),
            what: what.to_string(),
            status: r.status.as_u16(),
            body: String::from_utf8_lossy(&r.body).chars().take(300).collect(),
        }
    }

    /// Pushes one blob unless the registry already has it; returns its digest and whether it
    /// was uploaded.
    pub async fn push_blob(
        &self,
        repo: &str,
        data: Bytes,
    ) -> Result<(String, bool), RegistryError> {
        let digest = digest_of(&data);
        let head = self
            .send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                Bytes::new(),
                Want::Whole(MAX_ERROR_BODY),
            )
            .await?;
        if head.status == StatusCode::OK {
            return Ok((digest, false));
        }
        let what = format!("the upload of blob {digest}");
        let start = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Bytes::new(),
                Want::Whole(MAX_ERROR_BODY),
            )
            .await?;
        if start.status != StatusCode::ACCEPTED {
            return Err(self.refused(&what, &start));
        }
        let location = start
            .headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| self.refused(&what, &start))?
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .send(
                Method::PUT,
                &format!("{location}{sep}digest={digest}"),
                &[("content-type", "application/octet-stream")],
                data,
                Want::Whole(MAX_ERROR_BODY),
            )
            .await?;
        if put.status != StatusCode::CREATED {
            return Err(self.refused(&what, &put));
        }
        Ok((digest, true))
    }

    /// Puts a manifest under `tag`; returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String, RegistryError> {
        let digest = digest_of(&bytes);
        let r = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("content-type", media_type)],
                bytes,
                Want::Whole(MAX_ERROR_BODY),
            )
            .await?;
        if r.status != StatusCode::CREATED {
            return Err(self.refused(&format!("the manifest {repo}:{tag}"), &r));
        }
        Ok(digest)
    }

    /// Gets a manifest by tag or digest; a digest reference is checked against the bytes.
    pub async fn pull_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Manifest, RegistryError> {
        let what = format!("manifest {repo}:{reference}");
        let r = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("accept", ACCEPT)],
                Bytes::new(),
                Want::Whole(MAX_MANIFEST),
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(self.refused(&what, &r));
        }
        let digest = digest_of(&r.body);
        let claimed = r
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            claimed
        };
        if let Some(expected) = expected {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected,
                    actual: digest,
                });
            }
        }
        Ok(Manifest {
            media_type: r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            bytes: r.body,
            digest,
        })
    }

    /// Gets a small blob (a configuration) whole, at most [`MAX_MANIFEST`] bytes, and checks
    /// its sha256 against `digest`.
    pub async fn pull_blob(&self, repo: &str, digest: &str) -> Result<Bytes, RegistryError> {
        let mut bytes = Vec::new();
        self.fetch_blob(repo, digest, MAX_MANIFEST, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(Bytes::from(bytes))
    }

    /// Streams a blob into the file `dest` (created or truncated), at most `size` bytes (its
    /// descriptor's size), checking its sha256 against `digest` as it arrives; the file is
    /// removed when anything is wrong. Returns the bytes written.
    pub async fn pull_blob_to(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        dest: &std::path::Path,
    ) -> Result<u64, RegistryError> {
        use std::io::Write;
        let write_error = |source| RegistryError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(dest).map_err(write_error)?;
        let mut out = std::io::BufWriter::with_capacity(256 << 10, file);
        let fetched = self
            .fetch_blob(repo, digest, size, |chunk| {
                out.write_all(chunk).map_err(write_error)
            })
            .await;
        let done = fetched.and_then(|n| {
            out.flush().map_err(write_error)?;
            if n != size {
                return Err(RegistryError::Unexpected {
                    what: format!("blob {digest} of {repo}"),
                    detail: format!("is {n} bytes, not {size} as its descriptor says"),
                });
            }
            Ok(n)
        });
        if done.is_err() {
            drop(out);
            let _ = std::fs::remove_file(dest);
        }
        done
    }

    /// Gets a blob chunk by chunk into `sink`, at most `limit` bytes, and checks its sha256
    /// against `digest`.
    async fn fetch_blob(
        &self,
        repo: &str,
        digest: &str,
        limit: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), RegistryError>,
    ) -> Result<u64, RegistryError> {
        let what = format!("blob {digest} of {repo}");
        let mut r = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                Bytes::new(),
                Want::Stream,
            )
            .await?;
        // The registry answers a blob GET with a redirect when its storage is elsewhere.
        if r.status.is_redirection() {
            let to = r
                .headers
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or_default()
                .to_string();
            r = self
                .send(Method::GET, &to, &[], Bytes::new(), Want::Stream)
                .await?;
        }
        if r.status != StatusCode::OK {
            return Err(self.refused(&what, &r));
        }
        let Some(body) = r.stream.take() else {
            return Err(self.refused(&what, &r));
        };
        let mut hash = Sha256::new();
        let n = self
            .read_body(body, &r.headers, limit, &what, |chunk| {
                hash.update(chunk);
                sink(chunk)
            })
            .await?;
        let actual = format!("sha256:{}", hex::encode(hash.finalize()));
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("127.0.0.1:5000/team/hello:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repo.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "team/hello", "1.0")
        );
        assert_eq!(Reference::parse("localhost/hello").unwrap().tag, "latest");
        for bad in [
            "hello",
            "examples/hello",
            "127.0.0.1:5000/Hello",
            "127.0.0.1:5000/h:-x",
            "127.0.0.1:5000/../x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_registry_that_is_down_is_one_sentence() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Client::new(&format!("127.0.0.1:{port}"))
            .pull_manifest("hello", "latest")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not answer") && e.contains("is it running?"),
            "{e}"
        );
    }

    /// A registry that asks for a Bearer token, and its token service, on one loopback port:
    /// a few lines of HTTP/1.1 over tokio (each answer closes its connection).
    async fn token_registry() -> (u16, std::sync::Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let target = head.split(' ').nth(1).unwrap_or_default().to_string();
                let authz = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: "))
                    .unwrap_or_default()
                    .to_string();
                log.lock().unwrap().push(format!("{target} [{authz}]"));
                let alice = auth::Credentials {
                    user: "alice".into(),
                    password: "pw".into(),
                    source: PathBuf::new(),
                }
                .basic();
                let (status, extra, body) = if target.starts_with("/token?") {
                    if authz == alice {
                        (
                            "200 OK",
                            String::new(),
                            r#"{"token":"tok-123"}"#.to_string(),
                        )
                    } else {
                        ("401 Unauthorized", String::new(), "{}".to_string())
                    }
                } else if authz == "Bearer tok-123" {
                    (
                        "200 OK",
                        "content-type: application/vnd.oci.image.manifest.v1+json\r\n".to_string(),
                        r#"{"schemaVersion":2}"#.to_string(),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        format!("www-authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\",scope=\"repository:hello:pull\"\r\n"),
                        "{}".to_string(),
                    )
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn bearer_challenge_gets_a_token_with_the_credentials() {
        let (port, seen) = token_registry().await;
        let creds = |password: &str| auth::Credentials {
            user: "alice".into(),
            password: password.into(),
            source: PathBuf::from("/home/alice/.docker/config.json"),
        };
        let registry = format!("127.0.0.1:{port}");
        let client = Client::new(&registry).with_credentials(creds("pw"));
        let m = client.pull_manifest("hello", "1").await.unwrap();
        assert_eq!(&m.bytes[..], br#"{"schemaVersion":2}"#);
        // The token is kept: a second request needs no new login.
        client.pull_manifest("hello", "1").await.unwrap();
        let log = seen.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "/v2/hello/manifests/1 []".to_string(),
                format!(
                    "/token?service=test&scope=repository%3Ahello%3Apull [{}]",
                    creds("pw").basic()
                ),
                "/v2/hello/manifests/1 [Bearer tok-123]".to_string(),
                "/v2/hello/manifests/1 [Bearer tok-123]".to_string(),
            ]
        );
        let e = Client::new(&registry)
            .with_credentials(creds("wrong"))
            .pull_manifest("hello", "1")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("the registry at {registry} refused the password of `alice` from /home/alice/.docker/config.json; check it with `docker login {registry}`")
        );
    }

    /// How a fake registry answers every request.
    #[derive(Clone, Copy)]
    enum Fake {
        /// Never answers.
        Silent,
        /// Declares `declared` bytes of body and sends `sent` bytes, one every `every_ms`.
        Trickle {
            declared: u64,
            sent: u64,
            every_ms: u64,
        },
        /// Sends `len` bytes of `byte` at once, with a Content-Length or chunked.
        Body { len: usize, byte: u8, chunked: bool },
    }

    async fn fake_registry(how: Fake) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..20 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    match how {
                        Fake::Silent => {
                            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                        }
                        Fake::Trickle {
                            declared,
                            sent,
                            every_ms,
                        } => {
                            let head =
                                format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n");
                            let _ = sock.write_all(head.as_bytes()).await;
                            for _ in 0..sent {
                                if sock.write_all(b"x").await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(std::time::Duration::from_millis(every_ms))
                                    .await;
                            }
                        }
                        Fake::Body { len, byte, chunked } => {
                            let body = vec![byte; len];
                            let head = if chunked {
                                format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{len:x}\r\n")
                            } else {
                                format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n")
                            };
                            let _ = sock.write_all(head.as_bytes()).await;
                            let _ = sock.write_all(&body).await;
                            if chunked {
                                let _ = sock.write_all(b"\r\n0\r\n\r\n").await;
                            }
                        }
                    }
                });
            }
        });
        format!("127.0.0.1:{port}")
    }

    fn quick() -> Deadlines {
        Deadlines {
            answer: std::time::Duration::from_millis(500),
            upload: std::time::Duration::from_millis(500),
            window: std::time::Duration::from_millis(500),
            min_bytes: 64,
        }
    }

    fn digest_of_repeated(byte: u8, len: usize) -> String {
        digest_of(&vec![byte; len])
    }

    /// Issue 35 item 5: a blob answered with `Content-Length: 20 GiB` was read into memory
    /// until the OOM killer came.
    #[tokio::test]
    async fn a_blob_larger_than_its_descriptor_is_refused_before_it_is_read() {
        let registry = fake_registry(Fake::Trickle {
            declared: 20 << 30,
            sent: 1000,
            every_ms: 1,
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("blob");
        let started = std::time::Instant::now();
        let e = Client::with_deadlines(&registry, quick())
            .pull_blob_to("hello", &digest_of(b"x"), 1000, &dest)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("of 21474836480 bytes, more than the 1000 it may have"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(!dest.exists());
    }

    /// A body trickled at one byte a while, or a registry that never answers, hung for ever.
    #[tokio::test]
    async fn a_trickling_or_silent_registry_is_cut_off() {
        let registry = fake_registry(Fake::Trickle {
            declared: 1000,
            sent: 1000,
            every_ms: 100,
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let e = Client::with_deadlines(&registry, quick())
            .pull_blob_to("hello", &digest_of(b"x"), 1000, &dir.path().join("blob"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("too slowly (less than 64 bytes in 0.5 s)"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        let registry = fake_registry(Fake::Silent).await;
        let started = std::time::Instant::now();
        let e = Client::with_deadlines(&registry, quick())
            .pull_manifest("hello", "latest")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not answer (no answer within 0.5 s)"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_manifest_over_4_mib_is_refused_declared_or_not() {
        for chunked in [false, true] {
            let registry = fake_registry(Fake::Body {
                len: (MAX_MANIFEST + 1) as usize,
                byte: b' ',
                chunked,
            })
            .await;
            let e = Client::new(&registry)
                .pull_manifest("hello", "latest")
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("more than the 4194304 it may have"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_blob_streams_to_disk_and_a_wrong_one_leaves_nothing() {
        let len = 8 << 20;
        let registry = fake_registry(Fake::Body {
            len,
            byte: 7,
            chunked: false,
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("blob");
        let client = Client::new(&registry);
        let n = client
            .pull_blob_to("hello", &digest_of_repeated(7, len), len as u64, &dest)
            .await
            .unwrap();
        assert_eq!(n, len as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), vec![7u8; len]);
        let wrong = digest_of(b"other");
        let e = client
            .pull_blob_to("hello", &wrong, len as u64, &dest)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("digest mismatch for blob {wrong}")),
            "{e}"
        );
        assert!(!dest.exists());
    }
}
