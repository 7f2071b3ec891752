"""Language packages from their own metadata files: Python METADATA, npm package.json, gemspecs, Maven jars."""

from __future__ import annotations

import email.parser
import posixpath
import re
import zipfile
from email.message import Message
from typing import BinaryIO

from lambdaimages.inventory.facts import Found, Package, json_object

NPM_PACKAGE = re.compile(r"(?:^|/)node_modules/(?:@[^/]+/)?[^/@][^/]*/package\.json$")
GEMSPEC = re.compile(r"(?:^|/)specifications/(?:default/)?[^/]+\.gemspec$")
POM_PROPERTIES = re.compile(r"^META-INF/maven/[^/]+/[^/]+/pom\.properties$")
PROPERTIES_LIMIT = 64 << 10
MAX_POMS = 1000  # per jar


def is_python_metadata(path: str) -> bool:
    """Whether `path` is a Python distribution's metadata: `*.dist-info/METADATA`, `*.egg-info[/PKG-INFO]`."""
    return path.endswith((".dist-info/METADATA", ".egg-info/PKG-INFO", ".egg-info"))


def python_package(path: str, data: bytes) -> Found:
    """The distribution a METADATA or PKG-INFO file describes (only its header part is read).

    A missing name or version is taken from the directory name (`name-version.dist-info`), with a note.
    """
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0].decode("utf-8", "replace")
    fields = email.parser.HeaderParser().parsestr(head)
    directory = path.removesuffix("/METADATA").removesuffix("/PKG-INFO")
    stem = posixpath.basename(directory).rsplit(".", 1)[0]  # name-version[-pyX.Y]
    parts = stem.split("-")
    notes = []
    name, version = (fields.get("Name") or "").strip(), (fields.get("Version") or "").strip()
    if not name:
        name = parts[0]
        notes.append(f"no Name: {name!r} taken from the directory name")
    if not version:
        version = parts[1] if len(parts) > 1 else ""
        notes.append(f"no Version: {version!r} taken from the directory name" if version else "no Version")
    return [Package("pypi", name, version, directory, license=_python_license(fields))], notes


def _python_license(fields: Message) -> str:
    expression = (fields.get("License-Expression") or "").strip()
    if expression:
        return expression
    text = (fields.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 100:  # some packages paste the whole license text here
        return text
    classifiers = [
        c.rsplit("::", 1)[-1].strip() for c in fields.get_all("Classifier") or () if c.startswith("License ::")
    ]
    return " OR ".join(c for c in classifiers if c and c != "OSI Approved")


def npm_package(path: str, data: bytes) -> Found:
    """The package a `node_modules/<name>/package.json` describes; name and version as npm reads them."""
    manifest, notes = json_object(data)
    if manifest is None:
        return [], notes
    directory = posixpath.dirname(path)
    parent, base = posixpath.split(directory)
    fallback = f"{posixpath.basename(parent)}/{base}" if base and posixpath.basename(parent).startswith("@") else base
    name = manifest.get("name") if isinstance(manifest.get("name"), str) else ""
    version = manifest.get("version") if isinstance(manifest.get("version"), str) else ""
    notes = [] if version else ["no version"]
    if not name:
        name = fallback
        notes.append(f"no name: {name!r} taken from the directory name")
    return [Package("npm", name, version, directory, license=_npm_license(manifest))], notes


def _npm_license(manifest: dict) -> str:
    found = manifest.get("license")
    if isinstance(found, dict):
        found = found.get("type")
    if isinstance(found, str):
        return found
    if isinstance(legacy := manifest.get("licenses"), list):  # the old form: [{"type": "MIT", "url": ...}]
        names = [item.get("type") if isinstance(item, dict) else item for item in legacy]
        return " OR ".join(name for name in names if isinstance(name, str))
    return ""


_STUB = re.compile(r"^# stub: (\S+) (\S+)", re.M)
_NAME = re.compile(r"^\s*\w+\.name\s*=\s*[\"']([^\"']+)[\"']", re.M)
_VERSION = re.compile(r"^\s*\w+\.version\s*=\s*[\"']([^\"']+)[\"']", re.M)
_LICENSES = re.compile(r"^\s*\w+\.licenses?\s*=\s*(\[[^\]\n]*\]|[\"'][^\"'\n]*[\"'])", re.M)


def gem_package(path: str, data: bytes) -> Found:
    """The gem a `specifications/*.gemspec` file describes, as RubyGems writes them (`to_ruby`), without Ruby."""
    text = data.decode("utf-8", "replace")
    stub = _STUB.search(text)
    named, versioned = _NAME.search(text), _VERSION.search(text)
    name = named[1] if named else stub[1] if stub else ""
    version = versioned[1] if versioned else stub[2] if stub else ""
    if not name:
        return [], ["no gem name"]
    licenses = _LICENSES.search(text)
    license = " OR ".join(re.findall(r"[\"']([^\"']+)[\"']", licenses[1])) if licenses else ""
    return [Package("gem", name, version, path, license=license)], [] if version else ["no version"]


def maven_packages(path: str, jar: BinaryIO) -> Found:
    """The Maven artifacts a jar says it holds: every `META-INF/maven/<group>/<artifact>/pom.properties`."""
    packages: list[Package] = []
    notes: list[str] = []
    try:
        with zipfile.ZipFile(jar) as archive:
            members = [info for info in archive.infolist() if POM_PROPERTIES.match(info.filename)]
            for info in members[:MAX_POMS]:
                if info.file_size > PROPERTIES_LIMIT:
                    notes.append(f"{info.filename}: {info.file_size} bytes, not read")
                    continue
                fields = _properties(archive.read(info).decode("utf-8", "replace"))
                group, artifact = fields.get("groupId", ""), fields.get("artifactId", "")
                if not artifact:
                    notes.append(f"{info.filename}: no artifactId")
                    continue
                packages.append(Package("maven", artifact, fields.get("version", ""), path, group=group))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError) as error:
        notes.append(f"not a readable jar: {error}")
    return packages, notes


def _properties(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, *value = re.split(r"\s*[=:]\s*", line, maxsplit=1)
            fields[key] = value[0] if value else ""
    return fields
