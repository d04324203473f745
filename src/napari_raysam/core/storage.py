"""A cluster profile's storage URI through pyarrow.fs: datasets up, run outputs down.

Layout under the URI: ``datasets/<content hash>/`` (a training set, manifest written last),
``models/<sha256>/model.pt`` (a base model that lives on the client) and ``runs/<run name>/``
(Ray Train's storage_path: events/, model.pt, report.json, ...). Uploads skip files already
there with the right sha256; downloads go to a temporary name, are checked against the remote
file's sha256 and only then renamed into place.

The same code serves the client and the job, for folders (local, NFS) and object stores (S3 and
S3-compatible stores such as MinIO with ``?endpoint_override=host:9000&scheme=http``, GCS).
Credentials never travel in a URI: each side takes them from its standard provider chain (AWS
env vars or ``~/.aws``, Google application-default credentials); a URI that carries them is
refused, and messages never repeat one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

from napari_raysam.core.errors import RaysamError

SCHEMES = ("file", "s3", "gs", "gcs", "mock")
OBJECT_SCHEMES = ("s3", "gs", "gcs", "mock")
CHUNK = 8 << 20  # object stores answer each read with a request: 1 MiB reads were 8x slower
SIDECAR = ".sha256"
#: URI query keys that would put a credential into a stored, logged or command-line URI.
SECRET_KEYS = ("access_key", "secret_key", "session_token", "credential", "password", "token",
               "secret", "key")


class StorageError(RaysamError):
    """The storage URI cannot be used; the message says why and what to do."""


def validate_storage_uri(uri: str) -> str:
    """The normalised URI (an absolute path for local folders); StorageError when unusable."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError("The storage URI is empty; give a folder both sides can reach, or an "
                           "s3:// or gs:// URI.")
    uri = uri.strip()
    scheme = urlparse(uri).scheme if "://" in uri else ""
    if scheme == "":
        if ":" in uri.split("/")[0] and len(uri.split(":")[0]) > 1:
            raise StorageError(f"The storage URI {uri!r} looks like 'scheme:path' without '//'; "
                               "write s3://bucket/path, gs://bucket/path or a plain folder path.")
        return str(Path(uri).expanduser().absolute())
    if scheme not in SCHEMES:
        raise StorageError(f"The storage URI scheme {scheme!r} is not supported; use a local or "
                           "shared folder path, file://, s3:// or gs://.")
    url = urlparse(uri)
    if url.username or url.password or "@" in url.netloc:
        raise StorageError(f"The storage URI {redact(uri)} carries a user name or password. "
                           "Remove it: credentials come from each side's standard provider "
                           "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws, Google "
                           "application-default credentials), never from the URI.")
    secret = [k for k, _ in parse_qsl(url.query) if any(w in k.lower() for w in SECRET_KEYS)]
    if secret:
        raise StorageError(f"The storage URI {redact(uri)} carries credentials "
                           f"({', '.join(secret)}). Remove them from the URI and set them "
                           "in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an "
                           "~/.aws profile, or GOOGLE_APPLICATION_CREDENTIALS) on this computer "
                           "and on the cluster.")
    if scheme in ("s3", "gs", "gcs") and not url.netloc:
        raise StorageError(f"The storage URI {uri!r} names no bucket; write {scheme}://BUCKET/path.")
    return uri


def redact(uri: str) -> str:
    """``uri`` without user info and with credential-like query values replaced by ``***``."""
    if "://" not in str(uri):
        return str(uri)
    url = urlparse(str(uri))
    netloc = url.netloc.rsplit("@", 1)[-1]
    query = "&".join(f"{k}=***" if any(w in k.lower() for w in SECRET_KEYS) else f"{k}={v}"
                     for k, v in parse_qsl(url.query))
    return f"{url.scheme}://{netloc}{url.path}" + (f"?{query}" if query else "")


def is_remote_uri(spec: str) -> bool:
    """True for an object-store URI (s3://, gs://, ...), whose files need a download."""
    return "://" in str(spec) and urlparse(str(spec)).scheme in OBJECT_SCHEMES


def explain(exc: BaseException, uri: str, side: str) -> str:
    """One sentence naming what failed (``side``: "this computer" or "the cluster") and the fix,
    from a pyarrow/OS error; never repeats credentials."""
    text = str(exc)
    low = text.lower()
    where = f"The storage {redact(uri)}, as seen from {side},"
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) \
            or "no space left" in low or "quota exceeded" in low:
        return (f"{where} is full (no space left on the device, or over its quota). Free "
                "space there (or raise the quota), or pick another storage URI.")
    if "no_such_bucket" in low or "nosuchbucket" in low or "bucket does not exist" in low \
            or ("bucket" in low and "not found" in low):
        return (f"{where} names a bucket that does not exist. Create the bucket (e.g. `mc mb` "
                "for MinIO, `aws s3 mb`) or fix its name in the storage URI.")
    if any(w in low for w in ("invalidaccesskeyid", "signaturedoesnotmatch", "invalid_access_key",
                              "access key id you provided", "signature we calculated",
                              "no credentials", "unable to locate credentials",
                              "could not find credentials", "invalidtoken", "expiredtoken",
                              "default credentials")) \
            or ("access_denied" in low and "during head" in low):
        return (f"{where} refused the credentials (or they give no access to this bucket). Set "
                f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or GOOGLE_APPLICATION_CREDENTIALS) "
                f"to valid ones with access to the bucket on {side}.")
    if "access_denied" in low or "accessdenied" in low or "access denied" in low \
            or "permission denied" in low or "forbidden" in low or "read-only" in low \
            or "not a directory" in low:
        return (f"{where} does not allow writing there (permission denied). Give those "
                "credentials write access to the bucket/prefix, or pick one you can write to.")
    if any(w in low for w in ("couldn't connect", "could not connect", "connection refused",
                              "curlcode: 7", "curlcode: 6", "curlcode: 28", "network_connection",
                              "resolve host", "timed out", "did not answer", "unreachable",
                              "failed to connect")):
        return (f"{where} is unreachable (its endpoint does not answer). Check the host and port "
                f"in endpoint_override and that this address is reachable from {side}.")
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    fix = ("Check the URI, the bucket and the credentials." if is_remote_uri(uri) else
           "Check that the folder is writable there and has free space.")
    return f"{where} failed: {redact(first)}. {fix}"


def _hash_stream(stream, sink: Callable[[bytes], None] | None = None) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        if sink:
            sink(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a local file, read in chunks."""
    with open(path, "rb") as fh:
        return _hash_stream(fh)


def local_path(uri: str) -> str:
    """``file:///x`` -> ``/x``; any other URI or path unchanged."""
    return uri[len("file://"):] if str(uri).startswith("file://") else str(uri)


def _timed(fn: Callable, timeout: float, what: str):
    """Run a blocking storage call with a deadline (network filesystems can hang offline)."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise StorageError(f"{what} is unreachable (no answer within {timeout:.0f} s). Check the "
                           "host and port in endpoint_override, the network, the bucket name and "
                           "the credentials, or pick another storage URI.")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@dataclass
class Storage:
    """An opened storage URI. ``uri_of`` names paths the cluster side can open."""

    uri: str
    fs: object = field(repr=False)
    root: str

    @classmethod
    def open(cls, uri: str, timeout: float = 10.0, side: str = "this computer") -> Storage:
        uri = validate_storage_uri(uri)
        from pyarrow import fs as pafs

        try:
            filesystem, root = _timed(lambda: pafs.FileSystem.from_uri(uri), timeout,
                                      f"The storage {redact(uri)}")
        except (OSError, ValueError) as exc:
            raise StorageError(f"Cannot open the storage URI: {explain(exc, uri, side)}") \
                from None
        return cls(uri=uri, fs=filesystem, root=root.rstrip("/") or "/")

    @property
    def is_object_store(self) -> bool:
        """S3/GCS: no folders to create, no rename (an object appears whole when its upload
        completes); other filesystems get folders and a temporary name + rename."""
        return type(self.fs).__name__ in ("S3FileSystem", "GcsFileSystem")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def uri_of(self, *parts: str) -> str:
        """The URI (or absolute local path) of ``parts`` for the job's command line; keeps the
        URI's query (an S3 endpoint), which never holds credentials (see validate_storage_uri)."""
        if self.uri.startswith("/"):
            return self.path(*parts)
        url = urlparse(self.uri)
        if url.scheme == "file":
            return self.path(*parts)
        query = f"?{url.query}" if url.query else ""
        return f"{url.scheme}://{self.path(*parts).lstrip('/')}{query}"

    def child(self, *parts: str) -> Storage:
        """The same filesystem rooted at ``parts`` below this root."""
        return Storage(uri=self.uri_of(*parts), fs=self.fs, root=self.path(*parts))

    def list(self, *parts: str) -> list[tuple[str, bool]]:
        """``(name, is_folder)`` of the entries under ``parts`` ([] when it does not exist)."""
        from pyarrow.fs import FileSelector, FileType

        infos = self.fs.get_file_info(FileSelector(self.path(*parts), allow_not_found=True))
        return sorted((i.base_name, i.type == FileType.Directory) for i in infos)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a small object whole: through a temporary name on folders (no torn reads),
        in one upload on object stores (an object appears whole or not at all there)."""
        if self.is_object_store:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.part-{secrets.token_hex(4)}"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, path)
        except BaseException:
            self.remove(tmp)  # a full disk leaves no torn temporary behind
            raise

    def remove(self, path: str) -> None:
        """Delete the file at ``path`` if there is one; a failure to delete is ignored (this
        cleans up after another failure, which is the one to report)."""
        try:
            if self.exists(path):
                self.fs.delete_file(path)
        except OSError:
            pass

    def _info(self, path: str):
        return self.fs.get_file_info(path)

    def exists(self, path: str) -> bool:
        from pyarrow.fs import FileType

        return self._info(path).type != FileType.NotFound

    def size(self, path: str) -> int | None:
        info = self._info(path)
        return info.size if info.type.name == "File" else None

    def check_writable(self, timeout: float = 10.0, side: str = "this computer") -> None:
        """Write, read back and delete a probe object; StorageError naming ``side`` and the fix
        (missing bucket, credentials, permission, unreachable endpoint) when it fails."""
        probe = self.path(f".raysam-probe-{secrets.token_hex(4)}")

        def go() -> None:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"ok")
            with self.fs.open_input_stream(probe) as inp:
                if inp.read() != b"ok":
                    raise OSError("read back different bytes")
            self.fs.delete_file(probe)

        try:
            _timed(go, timeout, f"The storage {redact(self.uri)}, as seen from {side},")
        except (OSError, ValueError) as exc:
            raise StorageError(f"Cannot write to the storage: {explain(exc, self.uri, side)}") \
                from None

    def sha256(self, path: str) -> str:
        with self.fs.open_input_stream(path) as inp:
            return _hash_stream(inp)

    def recorded_sha256(self, path: str) -> str | None:
        """The sha256 that :meth:`put_file` recorded beside ``path`` (``<path>.sha256``), so a
        reader need not read an object twice; None when there is none."""
        data = self.read_bytes(f"{path}{SIDECAR}")
        text = (data or b"").decode(errors="replace").strip()
        return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None

    def read_bytes(self, path: str) -> bytes | None:
        if self.size(path) is None:
            return None
        with self.fs.open_input_stream(path) as inp:
            return inp.read()

    def put_file(self, local: Path, path: str, sha256: str | None = None) -> str:
        """Copy a local file to ``path`` via a temporary name and record its sha256 beside it
        (``<path>.sha256``). Every reader checks what it reads against a recorded hash (the
        manifest's, the sidecar's), so a damaged transfer is caught where it is used. Returns
        the sha256."""
        if not self.is_object_store:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = path if self.is_object_store else f"{path}.part-{secrets.token_hex(4)}"
        try:
            with open(local, "rb") as src, self.fs.open_output_stream(tmp) as out:
                local_sha = _hash_stream(src, out.write)
            if sha256 and local_sha != sha256:
                raise StorageError(f"{local} changed on disk (sha256 differs from its manifest); "
                                   "export the training set again.")
            if tmp != path:
                self.fs.move(tmp, path)
        except BaseException:
            self.remove(tmp)
            raise
        self.write_bytes(f"{path}{SIDECAR}", local_sha.encode())
        return local_sha

    def _same(self, path: str, local: Path, sha: str) -> bool:
        """``path`` already holds ``local`` (same size and recorded or computed sha256)."""
        if self.size(path) != local.stat().st_size:
            return False
        return (self.recorded_sha256(path) or self.sha256(path)) == sha

    def upload_files(self, local_dir: Path, files: dict[str, str], base: tuple[str, ...],
                     last: str | None = None, parallel: int = 8) -> tuple[int, int]:
        """Upload ``files`` (relative path -> sha256) from ``local_dir`` under ``base``;
        files already there with the right sha256 are skipped; ``parallel`` at a time (an
        object store's latency is per request). ``last`` is uploaded after all others (its
        presence marks a complete upload) unless identical. Returns (uploaded, skipped)."""
        from concurrent.futures import ThreadPoolExecutor

        def one(item: tuple[str, str]) -> bool:
            rel, sha = item
            remote = self.path(*base, rel)
            if self._same(remote, local_dir / rel, sha):
                return False
            self.put_file(local_dir / rel, remote, sha)
            return True

        with ThreadPoolExecutor(max(1, parallel)) as pool:
            sent = list(pool.map(one, sorted(files.items())))
        uploaded, skipped = sum(sent), len(sent) - sum(sent)
        if last is not None:
            content = (local_dir / last).read_bytes()
            if self.read_bytes(self.path(*base, last)) == content:
                skipped += 1
            else:
                self.put_file(local_dir / last, self.path(*base, last))
                uploaded += 1
        return uploaded, skipped

    def upload_model(self, local: str | Path) -> str:
        """Upload a checkpoint file to ``models/<sha256>/model.pt`` (skipped when it is there);
        returns its URI for the job's ``--model``."""
        local = Path(local)
        sha = file_sha256(local)
        remote = self.path("models", sha, "model.pt")
        if not self._same(remote, local, sha):
            self.put_file(local, remote, sha)
        return self.uri_of("models", sha, "model.pt")

    def download(self, path: str, dest: Path, expected_sha256: str | None = None) -> str:
        """Copy ``path`` to ``dest`` through ``.<name>.part-*``, hashed as it is written; only
        a file whose sha256 matches is renamed into place. The hash to match: ``expected_sha256``,
        else the one recorded beside the object, else the object's own (read once more first).
        A failure leaves no file under ``dest``. Returns the sha256."""
        if self.size(path) is None:
            raise StorageError(f"{self.uri_of(path[len(self.root):])} does not exist in the "
                               "storage; the run may not have finished or its folder was removed.")
        recorded = self.recorded_sha256(path)
        if expected_sha256 and recorded and recorded != expected_sha256:
            raise StorageError(f"{path} in the storage does not match its recorded sha256; "
                               "it is damaged. Upload it again, or re-run the training.")
        remote_sha = expected_sha256 or recorded or self.sha256(path)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{secrets.token_hex(4)}")
        try:
            with self.fs.open_input_stream(path) as inp, open(tmp, "wb") as out:
                got = _hash_stream(inp, out.write)
                out.flush()
                os.fsync(out.fileno())
            if got != remote_sha:
                raise StorageError(f"The download of {path} was damaged or the object does not "
                                   "match its recorded sha256; fetch it again, and if it "
                                   "persists, upload it again or re-run the training.")
            os.replace(tmp, dest)
        except OSError as exc:  # the connection or the disk failed mid-way
            raise StorageError(f"The download of {path} was interrupted ({exc}); nothing was "
                               "kept. Check the connection or free disk space and fetch the run "
                               "again.") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return remote_sha
