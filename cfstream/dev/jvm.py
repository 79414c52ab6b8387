"""Finding a Java >= 17 and the JVM flags that make a dev broker start fast."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cfstream.errors import KafkaUnavailable

MIN_JAVA = 17
# Measured on 2 cores, Kafka 4.4, time to first metadata answer: default flags ~3.2 s; SerialGC
# ~2.7 s; plus C1 only (TieredStopAtLevel=1) ~2.4 s; plus the class archive below ~1.3 s. C1-only
# code is slower at high throughput: set CFSTREAM_KAFKA_JVM_OPTS to override these for benchmarks.
DEFAULT_JVM_OPTS = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
JVM_OPTS_ENV = "CFSTREAM_KAFKA_JVM_OPTS"


@dataclass(frozen=True)
class Java:
    path: str
    version: int
    version_text: str


def find_java() -> Java:
    """The ``java`` of ``$JAVA_HOME`` or else of PATH; KafkaUnavailable if missing or < 17."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    path = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if path is None:
        raise KafkaUnavailable(
            f"No `java` found (JAVA_HOME unset or without bin/java, none on PATH). The dev broker "
            f"needs Java {MIN_JAVA}+: install it (e.g. `apt-get install openjdk-17-jre-headless`) "
            "or set CFSTREAM_BOOTSTRAP_SERVERS to use an existing Kafka cluster."
        )
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaUnavailable(f"Could not run `{path} -version`: {exc}") from exc
    text = (done.stderr + done.stdout).strip()
    version = parse_java_version(text)
    if version is None or version < MIN_JAVA:
        found = f"Java {version}" if version is not None else "an unknown Java version"
        raise KafkaUnavailable(
            f"{path} is {found} ({text.splitlines()[0] if text else 'no output'}); Kafka 4 needs "
            f"Java {MIN_JAVA}+. Install a newer JDK and point JAVA_HOME or PATH at it, "
            "or set CFSTREAM_BOOTSTRAP_SERVERS to use an existing Kafka cluster."
        )
    return Java(path=path, version=version, version_text=text)


def parse_java_version(text: str) -> int | None:
    """The feature version in ``java -version`` output: ``"1.8.0_392"`` -> 8, ``"17.0.1"`` -> 17."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def jvm_opts() -> list[str]:
    override = os.environ.get(JVM_OPTS_ENV)
    return shlex.split(override) if override is not None else list(DEFAULT_JVM_OPTS)


def log4j_config() -> Path:
    """The shipped log4j2 config (a real file: the package is installed unzipped)."""
    return Path(str(resources.files("cfstream.dev").joinpath("log4j2.yaml")))


def base_command(java: Java, lib: Path) -> list[str]:
    """``java`` with heap/GC flags, logging config and the classpath; the main class comes next."""
    return [
        java.path, *jvm_opts(), "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_config()}", "-cp", str(lib / "*"),
    ]


def class_archive(java: Java, lib: Path) -> Path:
    """The AppCDS archive of the broker's classes for this JVM (it is only valid for one JVM)."""
    key = hashlib.sha256(f"{os.path.realpath(java.path)}\n{java.version_text}".encode())
    return lib.parent / f"classes-{key.hexdigest()[:12]}.jsa"


def archive_flags(java: Java, lib: Path) -> tuple[list[str], Path | None]:
    """Use the class archive if there is one; otherwise have this JVM write one when it exits.

    Returns the flags and the temporary archive path to promote after exit (or None). Java 17
    has no -XX:+AutoCreateSharedArchive, so the first broker dumps to a unique temporary file
    (several may run at once) and ``promote_archive`` renames it into place.
    """
    archive = class_archive(java, lib)
    if archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}"], None
    pending = archive.with_name(f"{archive.name}.{uuid.uuid4().hex[:8]}.tmp")
    return [f"-XX:ArchiveClassesAtExit={pending}"], pending


def promote_archive(pending: Path | None, keep: bool = True) -> None:
    """After the JVM exited: move its dumped archive into place, or drop it."""
    if pending is None or not pending.exists():
        return
    final = Path(str(pending).rsplit(".", 2)[0])
    if keep and pending.stat().st_size > 0 and not final.exists():
        os.replace(pending, final)
    else:
        pending.unlink(missing_ok=True)
