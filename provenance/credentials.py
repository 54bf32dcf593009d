"""Signed provenance: C2PA Content Credentials on MP4 files, with c2pa-python (an optional dependency).

The manifest says the file was created by ComfyUI-Spacetime as `trainedAlgorithmicMedia`, names the
model files of the graph, and carries a SHA-256 of the prompt: the text prompts, or the whole graph
when there is no text. The prompt itself goes in only when the user asks.

Identity: a certificate chain and key in the user folder (`user/spacetime_c2pa/`):
- `signer.pem`, the leaf certificate followed by its chain;
- `signer.key`, its private key (PEM).

Put your own there, or let the first signing make a local one: a root CA and a leaf it signs (ES256,
P-256). c2pa-rs refuses self-signed signers. Validators report such files as Valid but untrusted,
unless `ca.pem` (written beside them) is added to their trust anchors. Nothing is written to the
repository, and nothing goes over the network (no timestamp authority).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import host

IDENTITY_FOLDER = "spacetime_c2pa"
SIGNER_CERT, SIGNER_KEY, ROOT_CERT = "signer.pem", "signer.key", "ca.pem"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATOR = "ComfyUI-Spacetime"
ASSERTION = "org.comfyui-spacetime.generation"
MODEL_SUFFIXES = (".safetensors", ".sft", ".gguf", ".ckpt", ".pt", ".pth", ".bin")
PROMPT_INPUTS = ("text", "prompt", "positive", "idea")  # string inputs that hold prompt text
SIGNING_ROOM = 64 * 1024  # room for the manifest (a few KiB) in the signed copy of the video
IDENTITY_WAIT = 2.0  # seconds to wait for the rest of an identity another process is publishing


def require_c2pa():
    try:
        import c2pa
    except ImportError:
        raise ValueError(
            "Signing Content Credentials needs c2pa-python: pip install c2pa-python "
            "(or choose content_credentials = off)."
        ) from None
    return c2pa


@dataclass(frozen=True)
class Generation:
    """What the manifest says about how the video was made."""

    models: tuple[str, ...] = ()
    prompt_sha256: str | None = None
    prompt: str | None = None  # only when the user asks


def describe_graph(graph: dict | None, include_prompt: bool = False) -> Generation:
    """The model files and the prompt hash of a ComfyUI API graph (the hidden PROMPT input)."""
    if not graph:
        return Generation()
    models, texts = set(), []
    for node_id in sorted(graph, key=str):
        inputs = graph[node_id].get("inputs", {}) if isinstance(graph[node_id], dict) else {}
        for name, value in sorted(inputs.items()):
            if not isinstance(value, str):
                continue
            if value.lower().endswith(MODEL_SUFFIXES):
                models.add(value)
            elif name in PROMPT_INPUTS and value.strip():
                texts.append(value)
    prompt = "\n".join(texts) if texts else json.dumps(graph, sort_keys=True)
    return Generation(
        models=tuple(sorted(models)),
        prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
        prompt="\n".join(texts) if include_prompt and texts else None,
    )


def manifest(generation: Generation, title: str) -> dict:
    details = {"models": list(generation.models)}
    if generation.prompt_sha256:
        details["prompt_sha256"] = generation.prompt_sha256
    if generation.prompt is not None:
        details["prompt"] = generation.prompt
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": _version()}],
        "title": title,
        "format": "video/mp4",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                            "softwareAgent": {"name": GENERATOR, "version": _version()},
                        }
                    ]
                },
            },
            {"label": ASSERTION, "data": details},
        ],
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("comfyui-spacetime")
    except Exception:  # not installed as a package (a plain custom_nodes folder)
        return "unknown"


def identity_directory() -> Path:
    return host.user_directory() / IDENTITY_FOLDER


def ensure_identity(directory: Path | None = None) -> tuple[bytes, bytes]:
    """(certificate chain PEM, private key PEM): the user's own, or a local CA and leaf made now. Checked by
    signing a tiny image with them, so that an identity c2pa refuses is found before a video is encoded."""
    directory = directory or identity_directory()
    cert_path, key_path = directory / SIGNER_CERT, directory / SIGNER_KEY
    if not cert_path.exists() and not key_path.exists():
        _make_identity(directory)
    # Another process may be publishing the identity it made: its key first, its chain last.
    deadline = time.monotonic() + IDENTITY_WAIT
    while cert_path.exists() != key_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if cert_path.exists() != key_path.exists():
        present, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise ValueError(
            f"{present} exists but {missing} does not: give both (your certificate chain and its key) "
            "or remove the one to have a local identity made."
        )
    try:
        chain, key = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as error:
        raise ValueError(f"the signing identity in {directory} could not be read ({error}).") from None
    _check_identity(chain, key, directory)
    return chain, key


def _signer(chain: bytes, key: bytes):
    c2pa = require_c2pa()
    return c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=key, ta_url=None)
    )


def _check_identity(chain: bytes, key: bytes, directory: Path) -> None:
    """Sign a 1×1 PNG in memory: c2pa checks the key, the chain and the certificates' profile."""
    from PIL import Image

    c2pa = require_c2pa()
    image = io.BytesIO()
    Image.new("RGB", (1, 1)).save(image, "PNG")
    image.seek(0)
    try:
        signer = _signer(chain, key)
        builder = c2pa.Builder(manifest(Generation(), "identity check"))
        try:
            builder.sign(signer, "image/png", image, io.BytesIO())
        finally:
            builder.close()
            signer.close()
    except c2pa.C2paError as error:
        raise ValueError(
            f"c2pa refuses the signing identity in {directory} ({error}). {SIGNER_CERT} must hold a "
            f"certificate issued by a CA (not self-signed) followed by its chain, and {SIGNER_KEY} that "
            "certificate's EC P-256 private key (ES256), both PEM and unencrypted. Fix them, or remove both "
            "to have a local identity made."
        ) from None


def _make_identity(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def name(common_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ComfyUI-Spacetime local"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )

    def builder(subject: x509.Name, key, days: int, ca: bool) -> x509.CertificateBuilder:
        """What both certificates share: names, key, serial, validity, constraints, key identifier."""
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )

    root_name = name("ComfyUI-Spacetime local root CA")
    root = (
        builder(root_name, root_key, days=3650, ca=True)
        .add_extension(  # keyCertSign, cRLSign
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        builder(name("ComfyUI-Spacetime signer"), leaf_key, days=730, ca=False)
        .add_extension(  # digitalSignature
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    made = {name: directory / f".{name}.{token}" for name in (SIGNER_KEY, ROOT_CERT, SIGNER_CERT)}
    try:
        key_bytes = leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(made[SIGNER_KEY], key_bytes)
        made[ROOT_CERT].write_bytes(root.public_bytes(pem))
        made[SIGNER_CERT].write_bytes(leaf.public_bytes(pem) + root.public_bytes(pem))
        # Whole files under their names, the key first: a process that finds the key taken keeps the identity
        # of the one that took it (two makers at once gave a key and a chain that did not belong together).
        if _claim(made[SIGNER_KEY], directory / SIGNER_KEY):
            for name in (ROOT_CERT, SIGNER_CERT):  # the chain last: with both files there, both are whole
                os.replace(made[name], directory / name)
    finally:
        for temporary in made.values():
            temporary.unlink(missing_ok=True)


def _claim(temporary: Path, path: Path) -> bool:
    """Give `temporary` the name `path` unless that exists: whether this process's file took the name."""
    try:
        os.link(temporary, path)  # fails when `path` exists
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem
        if path.exists():
            return False
        os.replace(temporary, path)
    return True


def write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def sign_mp4(path: Path, generation: Generation, identity: Path | None = None) -> None:
    """Embed a signed manifest in the MP4 at `path`, replacing it atomically (a reader sees the old
    file or the signed one, never a partial one) and keeping its permissions."""
    c2pa = require_c2pa()
    chain, key = ensure_identity(identity)
    _check_room(path, None)
    signer = _signer(chain, key)
    builder = c2pa.Builder(manifest(generation, path.name))
    descriptor, temporary = tempfile.mkstemp(prefix=".signing_", suffix=".mp4", dir=path.parent)
    try:
        with open(path, "rb") as source, os.fdopen(descriptor, "w+b") as destination:
            builder.sign(signer, "video/mp4", source, destination)
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))  # mkstemp's file is private (0600)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, (OSError, c2pa.C2paError)):
            _check_room(path, error)
        raise
    finally:
        builder.close()
        signer.close()


def _check_room(path: Path, error: BaseException | None) -> None:
    """Signing writes a second copy of the video beside it: refuse clearly when the disk has no room."""
    needed, free = path.stat().st_size + SIGNING_ROOM, shutil.disk_usage(path.parent).free
    if free < needed or (isinstance(error, OSError) and error.errno == errno.ENOSPC):
        raise OSError(
            errno.ENOSPC,
            f"no room to sign the video: signing writes a second copy of it ({needed // 1024} KiB) in "
            f"{path.parent}, which has {free // 1024} KiB free. Free some space, or set content_credentials "
            "to off.",
        ) from error


@dataclass(frozen=True)
class Credentials:
    state: str  # Valid, Trusted or Invalid (c2pa's validation state)
    generator: str
    source_type: str | None
    details: dict
    problems: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"Content Credentials: {self.state}, by {self.generator}"]
        if self.source_type:
            lines.append(f"  digital source type: {self.source_type.rsplit('/', 1)[-1]}")
        for name, value in self.details.items():
            lines.append(f"  {name}: {', '.join(value) if isinstance(value, list) else value}")
        lines += [f"  note: {problem}" for problem in self.problems]
        return "\n".join(lines)


def read_credentials(path: Path, trust_anchors: bytes | None = None) -> Credentials | None:
    """The file's active manifest, or None when it has none."""
    c2pa = require_c2pa()
    context = None
    if trust_anchors:
        context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_anchors.decode()}})
    try:
        with open(path, "rb") as stream:
            reader = c2pa.Reader("video/mp4", stream, context=context)
            try:
                store = json.loads(reader.json())
                state = reader.get_validation_state() or "Valid"
            finally:
                reader.close()
    except c2pa.C2paError as error:
        if "ManifestNotFound" in f"{type(error).__name__} {error}":
            return None
        raise ValueError(f"{path}: its Content Credentials could not be read ({error}).") from None
    active = store["manifests"][store["active_manifest"]]
    assertions = {a["label"]: a.get("data", {}) for a in active.get("assertions", [])}
    actions = next((v for k, v in assertions.items() if k.startswith("c2pa.actions")), {}).get("actions", [])
    generator = ", ".join(info.get("name", "?") for info in active.get("claim_generator_info", [])) or "?"
    problems = tuple(
        status.get("code", "") for status in store.get("validation_status", []) or [] if status.get("code")
    )
    return Credentials(
        state=state,
        generator=generator,
        source_type=next((a.get("digitalSourceType") for a in actions if a.get("digitalSourceType")), None),
        details=assertions.get(ASSERTION, {}),
        problems=problems,
    )
