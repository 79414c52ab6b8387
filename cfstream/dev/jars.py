"""The broker's classpath: Kafka jars fetched from Maven Central once, then used from a cache."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

from cfstream.errors import KafkaUnavailable

# The version the shipped pom was checked against (4.0.0–4.4.0 all resolve from Maven Central).
KAFKA_VERSION = "4.4.0"
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
# Written last, so a copy interrupted half way is redone rather than trusted.
MARKER = "COMPLETE"
MVN_TIMEOUT_S = 900.0

Notify = Callable[[str], None]


def cache_root() -> Path:
    """``$CFSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/cfstream``, else ``~/.cache/cfstream``."""
    explicit = os.environ.get("CFSTREAM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cfstream"


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """Where one Kafka version's jars (``lib/``) and its JVM class archive live."""
    return cache_root() / f"kafka-{version}"


def jars_ready(version: str = KAFKA_VERSION) -> bool:
    return (kafka_home(version) / MARKER).is_file()


def ensure_jars(version: str = KAFKA_VERSION, notify: Notify | None = None) -> Path:
    """The ``lib/`` directory of the broker's jars; runs Maven only if the cache is incomplete."""
    home = kafka_home(version)
    lib = home / "lib"
    if jars_ready(version):
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        # Another process may have finished the copy while this one waited for the lock.
        if jars_ready(version):
            return lib
        if notify:
            notify(f"Fetching Apache Kafka {version} jars from Maven Central into {lib} (once)...")
        staging = Path(tempfile.mkdtemp(prefix="lib-", dir=home))
        try:
            _copy_dependencies(version, staging)
            if not any(staging.glob("kafka_2.13-*.jar")):
                raise KafkaUnavailable(
                    f"Maven finished but {staging} holds no kafka_2.13 jar; "
                    f"delete {home} and retry." + _HINT
                )
            shutil.rmtree(lib, ignore_errors=True)
            staging.rename(lib)
            lib.chmod(0o755)  # mkdtemp made it private; the cache may be shared read-only
            # A JVM class archive is only valid for the exact jars it was dumped from.
            for archive in home.glob("classes-*.jsa*"):
                archive.unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        (home / MARKER).write_text(f"org.apache.kafka:kafka_2.13:{version}\n")
    return lib


_HINT = (
    "\nTo use a Kafka cluster you already have instead, set CFSTREAM_BOOTSTRAP_SERVERS "
    "(e.g. CFSTREAM_BOOTSTRAP_SERVERS=host:9092) and skip `cfstream kafka start`."
)


def _copy_dependencies(version: str, dest: Path) -> None:
    mvn = shutil.which("mvn")
    # The pom is copied next to the jars so Maven never writes into the installed package.
    pom = dest.parent / "pom.xml"
    pom.write_bytes(resources.files("cfstream.dev").joinpath("pom.xml").read_bytes())
    cmd = [
        mvn or "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-Dkafka.version={version}", f"-DoutputDirectory={dest}", "-DincludeScope=runtime",
    ]
    shown = " ".join(cmd)
    if mvn is None:
        raise KafkaUnavailable(
            "Cannot fetch the Kafka broker's jars: Maven (`mvn`) is not on PATH. Install it "
            f"(e.g. `apt-get install maven`), then retry; cfstream would run:\n  {shown}\n"
            f"which downloads org.apache.kafka:kafka_2.13:{version} from Maven Central "
            f"({MAVEN_CENTRAL})." + _HINT
        )
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            cmd, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaUnavailable(
            f"Fetching Kafka jars timed out after {MVN_TIMEOUT_S:.0f}s:\n  {shown}\n"
            f"Is Maven Central ({MAVEN_CENTRAL}) reachable from here?" + _HINT
        ) from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise KafkaUnavailable(
            f"Could not fetch org.apache.kafka:kafka_2.13:{version} from Maven Central "
            f"({MAVEN_CENTRAL}); exit {done.returncode} of:\n  {shown}\n{output}\n"
            "Check the network or Maven's proxy settings (~/.m2/settings.xml)." + _HINT
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so two first starts don't download into the same cache at once."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
