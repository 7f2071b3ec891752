"""Read and validate the catalog of runtimes (runtimes.yaml)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lambdaimages import platforms
from lambdaimages.errors import CatalogError
from lambdaimages.reference import Reference, Repository, registry_url, split_name

COMPRESSIONS = ("xz", "gzip")
TOP_KEYS = {"defaults", "runtimes", "publish", "push", "cache"}
SETTING_KEYS = {"registry", "architectures", "compression", "level"}
RUNTIME_KEYS = SETTING_KEYS | {"image", "smoke"}
SMOKE_KEYS = {"handler", "files", "event", "expect", "timeout"}
PUBLISH_KEYS = {"repo"}
PUSH_KEYS = {"to"}
CACHE_KEYS = {"to"}
DEFAULTS = {
    "registry": "https://public.ecr.aws",
    "architectures": list(platforms.NAMES),
    "compression": "xz",
    "level": 6,
}

# A runtime name is a folder, an image repository (`<name>:local`) and a git branch: only the
# characters all three accept, as Docker's repository grammar spells them, and never `*.lock`.
NAME_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
REGISTRY_RE = re.compile(r"^(?:https?://)?[A-Za-z0-9.-]+(?::[0-9]{1,5})?/?$")


@dataclass(frozen=True)
class Smoke:
    """An invocation that proves a built image answers: handler, files for /var/task, event, response."""

    handler: str
    event: object
    expect: object
    files: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class Runtime:
    name: str
    registry: str
    repository: str
    reference: str
    architectures: tuple[str, ...]
    compression: str = "xz"
    level: int = 6
    smoke: Smoke | None = None
    line: int = 0

    @property
    def upstream(self) -> Reference:
        """The upstream image: registry, repository, and the tag or digest the catalog names."""
        return Reference.of(self.registry, self.repository, self.reference)

    @property
    def image(self) -> str:
        """The upstream reference as users write it, e.g. public.ecr.aws/lambda/python:3.12."""
        return str(self.upstream)

    @property
    def extension(self) -> str:
        return "tar.xz" if self.compression == "xz" else "tar.gz"


@dataclass(frozen=True)
class Catalog:
    path: Path
    runtimes: tuple[Runtime, ...]
    publish_repo: str | None = None
    push_to: str | None = None  # HOST[:PORT][/PREFIX]: `doit push` mirrors each runtime to PREFIX/<repository>:<tag>
    cache_to: Repository | None = None  # the registry layer cache: export fetches tarballs there and stores its own
    by_name: dict[str, Runtime] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_name.update({rt.name: rt for rt in self.runtimes})


def load(path: str | Path) -> Catalog:
    """Parse and validate a catalog; any problem raises CatalogError naming file, line and runtime."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read catalog: {exc.strerror}", where=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"not UTF-8 text ({exc.reason})", where=str(path)) from exc
    return parse(text, path)


def parse(text: str, path: Path) -> Catalog:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise CatalogError(f"YAML syntax error: {exc.problem or exc.context}", where=f"{path}:{line}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"YAML error: {exc}", where=str(path)) from exc
    if root is None:
        raise CatalogError("empty catalog: it needs a 'runtimes' mapping", where=f"{path}:1")
    ctx = _Context(path)
    top = ctx.mapping(root, "catalog", TOP_KEYS)
    defaults = dict(DEFAULTS)
    if "defaults" in top:
        defaults.update(ctx.settings(top["defaults"][1], "defaults", SETTING_KEYS))
    publish_repo = None
    if "publish" in top:
        publish = ctx.mapping(top["publish"][1], "publish", PUBLISH_KEYS)
        if "repo" in publish:
            publish_repo = ctx.string(publish["repo"][1], "publish", "repo")
    push_to = None
    if "push" in top:
        push = ctx.mapping(top["push"][1], "push", PUSH_KEYS)
        if "to" in push:
            push_to = ctx.string(push["to"][1], "push", "to")
    cache_to = None
    if "cache" in top:
        cache = ctx.mapping(top["cache"][1], "cache", CACHE_KEYS)
        if "to" in cache:
            cache_to = ctx.repository(cache["to"][1], "cache", "to")
    if "runtimes" not in top:
        raise CatalogError("the catalog has no 'runtimes' mapping", where=f"{path}:{_line(root)}")
    runtimes_node = top["runtimes"][1]
    entries = ctx.mapping(runtimes_node, "runtimes", None)
    if not entries:
        raise CatalogError("empty catalog: 'runtimes' lists no runtime", where=f"{path}:{_line(runtimes_node)}")
    runtimes = tuple(ctx.runtime(name, key, node, defaults) for name, (key, node) in entries.items())
    return Catalog(path, runtimes, publish_repo, push_to, cache_to)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Context:
    """Validation of one file: every error names the file and the line of the offending node."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: yaml.Node, where: str, message: str) -> CatalogError:
        return CatalogError(f"{where}: {message}", where=f"{self.path}:{_line(node)}")

    def mapping(self, node: yaml.Node, where: str, allowed: set[str] | None) -> dict[str, tuple]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, f"expected a mapping, got {_kind(node)}")
        result: dict[str, tuple] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, where, "keys must be plain names")
            name = key.value
            if name in result:
                first = _line(result[name][0])
                what = "runtime" if where == "runtimes" else "key"
                raise self.fail(key, where, f"duplicate {what} '{name}' (first on line {first})")
            if allowed is not None and name not in allowed:
                raise self.fail(key, where, f"unknown key '{name}' (allowed: {', '.join(sorted(allowed))})")
            result[name] = (key, value)
        return result

    def value(self, node: yaml.Node) -> object:
        return yaml.SafeLoader("").construct_document(node)

    def string(self, node: yaml.Node, where: str, key: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value:
            raise self.fail(node, where, f"'{key}' must be a non-empty string, got {value!r}")
        return value

    def repository(self, node: yaml.Node, where: str, key: str) -> Repository:
        text = self.string(node, where, key)
        try:
            return Repository.parse(text)
        except ValueError as exc:
            raise self.fail(node, where, f"'{key}' must name a registry repository, got {text!r}: {exc}") from None

    def settings(self, node: yaml.Node, where: str, allowed: set[str]) -> dict:
        out = {}
        for key, (_, value_node) in self.mapping(node, where, allowed).items():
            if key in SETTING_KEYS:
                out[key] = self.setting(key, value_node, where)
        return out

    def setting(self, key: str, node: yaml.Node, where: str) -> object:
        value = self.value(node)
        if key == "registry":
            if not isinstance(value, str) or not REGISTRY_RE.match(value):
                raise self.fail(node, where, f"registry must be host[:port] or http://host:port, got {value!r}")
            return registry_url(value)
        if key == "architectures":
            if not isinstance(value, list) or not value:
                raise self.fail(node, where, f"architectures must be a non-empty list, got {value!r}")
            for arch in value:
                if arch not in platforms.NAMES:
                    raise self.fail(node, where, f"unknown architecture {arch!r} (known: {', '.join(platforms.NAMES)})")
            if len(set(value)) != len(value):
                raise self.fail(node, where, f"duplicate architecture in {value}")
            return tuple(value)
        if key == "compression":
            if value not in COMPRESSIONS:
                raise self.fail(node, where, f"compression must be one of {', '.join(COMPRESSIONS)}, got {value!r}")
            return value
        if key == "level":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 9:
                raise self.fail(node, where, f"level must be a whole number from 0 to 9, got {value!r}")
            return value
        raise AssertionError(key)

    def runtime(self, name: object, key: yaml.Node, node: yaml.Node, defaults: dict) -> Runtime:
        where = f"runtime {name!r}"
        if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith(".lock") or len(name) > 100:
            raise self.fail(
                key,
                where,
                "unsafe runtime name: it must be usable as a folder, an image tag and a git branch "
                "(lowercase letters, digits, and '.', '_', '-' between them)",
            )
        where = f"runtime {name}"
        fields = self.mapping(node, where, RUNTIME_KEYS)
        if "image" not in fields:
            raise self.fail(node, where, "missing 'image' (repository:tag)")
        image_node = fields["image"][1]
        repository, reference = self.image(self.string(image_node, where, "image"), image_node, where)
        settings = dict(defaults)
        for k in SETTING_KEYS & fields.keys():
            settings[k] = self.setting(k, fields[k][1], where)
        smoke = self.smoke(fields["smoke"][1], where) if "smoke" in fields else None
        return Runtime(
            name=name,
            registry=settings["registry"],
            repository=repository,
            reference=reference,
            architectures=tuple(settings["architectures"]),
            compression=settings["compression"],
            level=settings["level"],
            smoke=smoke,
            line=_line(key),
        )

    def image(self, image: str, node: yaml.Node, where: str) -> tuple[str, str]:
        try:
            repository, tag, digest = split_name(image)
            if tag is None and digest is None:
                raise ValueError("no tag")
        except ValueError as exc:
            raise self.fail(
                node, where, f"image must be repository:tag or repository@sha256:..., got {image!r}: {exc}"
            ) from None
        return repository, digest or tag

    def smoke(self, node: yaml.Node, where: str) -> Smoke:
        fields = self.mapping(node, f"{where} smoke", SMOKE_KEYS)
        for required in ("handler", "event", "expect"):
            if required not in fields:
                raise self.fail(node, f"{where} smoke", f"missing '{required}'")
        files = None
        if "files" in fields:
            files_node = fields["files"][1]
            folder = self.path.parent / self.string(files_node, where, "files")
            if not folder.is_dir():
                raise self.fail(files_node, f"{where} smoke", f"files folder {folder} does not exist")
            files = str(folder.resolve())
        timeout = 30.0
        if "timeout" in fields:
            timeout = self.value(fields["timeout"][1])
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
                raise self.fail(fields["timeout"][1], f"{where} smoke", f"timeout must be seconds > 0, got {timeout!r}")
        event = self.value(fields["event"][1])
        expect = self.value(fields["expect"][1])
        try:
            json.dumps(event)
            json.dumps(expect)
        except (TypeError, ValueError):
            raise self.fail(node, f"{where} smoke", "event and expect must be plain JSON values") from None
        return Smoke(
            handler=self.string(fields["handler"][1], where, "handler"),
            event=event,
            expect=expect,
            files=files,
            timeout=float(timeout),
        )


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f"the value {node.value!r}" if node.value else "nothing"
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
