"""Kubernetes objects from YAML and JSON: files, directories and stdin, for `prober discover`.

Multi-document YAML, JSON, single objects and `kind: List` (what `kubectl get -o yaml|json`
prints).  Anything that cannot be read is a ManifestError: one line naming the source and
the document number.  Documents that are no Kubernetes object are counted, not read.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
NON_KUBERNETES = "non-Kubernetes document"


class ManifestError(Exception):
    """Input that cannot be read as Kubernetes objects: one line naming the source and the document."""


@dataclass(frozen=True)
class K8sObject:
    kind: str
    group: str
    namespace: str
    name: str
    body: dict
    where: str  # "SOURCE: document N[, item M]"

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    def meta(self, key: str) -> dict:
        return mapping_at((self.body.get("metadata") or {}).get(key), f"metadata.{key}")

    def annotation(self, key: str) -> str | None:
        return annotation_of(self.meta("annotations"), key)

    def spec(self) -> dict:
        return mapping_at(self.body.get("spec"), "spec")

    def status(self) -> dict:
        return mapping_at(self.body.get("status"), "status")


def annotation_of(annotations: dict, key: str) -> str | None:
    """An annotation's text (YAML may have read an unquoted true or 42 as another type)."""
    value = annotations.get(key)
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text.strip() or None


class ShapeError(Exception):
    """A field of a known kind has the wrong shape (becomes a ManifestError naming the object)."""


def mapping_at(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ShapeError(f"{what} must be a mapping")
    return value


def list_at(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ShapeError(f"{what} must be a list")
    return value


def text_at(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ShapeError(f"{what} must be text")
    return value


@dataclass
class Inputs:
    objects: list[K8sObject] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)  # kind (or NON_KUBERNETES) -> count
    sources: int = 0

    @property
    def read(self) -> int:
        """Kubernetes objects read (documents that are none are only counted as ignored)."""
        return len(self.objects)


def _manifest_files(path: str) -> list[str]:
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found += [os.path.join(root, f) for f in sorted(files) if f.endswith(MANIFEST_SUFFIXES)]
        return found
    if os.path.exists(path):
        return [path]
    raise ManifestError(f"{path}: no such file or directory")


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ManifestError(f"{source}: line {line}: is not UTF-8 text") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    text = f"{problem} ({context})" if context else str(problem)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    return " ".join(f"YAML syntax error{where}: {text}".split())


def _documents(text: str, source: str) -> Iterator[tuple[int, Any]]:
    if source.endswith(".json") or text.lstrip()[:1] in ("{", "["):
        try:
            yield 1, json.loads(text)
            return
        except RecursionError:
            raise ManifestError(f"{source}: document 1: JSON is nested too deeply") from None
        except ValueError as err:
            if source.endswith(".json"):
                raise ManifestError(f"{source}: document 1: not valid JSON: {err}") from None
    number = 0
    try:
        for document in yaml.load_all(text, Loader=LOADER):
            number += 1
            yield number, document
    except yaml.YAMLError as err:
        raise ManifestError(f"{source}: document {number + 1}: {_yaml_problem(err)}") from None
    except RecursionError:
        raise ManifestError(f"{source}: document {number + 1}: YAML is nested too deeply") from None


def _is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc


def _to_object(doc: dict, where: str) -> K8sObject:
    kind, api = doc["kind"], doc["apiVersion"]
    if not isinstance(kind, str) or not isinstance(api, str):
        raise ManifestError(f"{where}: kind and apiVersion must be text")
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ManifestError(f"{where}: {kind}: metadata must be a mapping")
    meta = meta or {}
    name, namespace = meta.get("name", ""), meta.get("namespace") or "default"
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise ManifestError(f"{where}: {kind}: metadata.name and metadata.namespace must be text")
    if not (kind + name + namespace).isprintable():  # they are written into the output's comments
        raise ManifestError(f"{where}: kind, metadata.name and metadata.namespace must be printable on one line")
    group = api.rpartition("/")[0] if "/" in api else ""
    return K8sObject(kind, group, namespace, name or "<unnamed>", doc, where)


def _add_document(doc: Any, where: str, inputs: Inputs) -> None:
    if doc is None:
        return
    if not _is_object(doc):
        inputs.ignored[NON_KUBERNETES] += 1
        return
    if doc["kind"] == "List" or (isinstance(doc["kind"], str) and doc["kind"].endswith("List") and "items" in doc):
        items = doc.get("items")
        if not isinstance(items, list):
            raise ManifestError(f"{where}: {doc['kind']}: items must be a list")
        for index, item in enumerate(items, 1):
            if not _is_object(item):
                raise ManifestError(f"{where}, item {index}: not a Kubernetes object (no kind or apiVersion)")
            inputs.objects.append(_to_object(item, f"{where}, item {index}"))
        return
    inputs.objects.append(_to_object(doc, where))


def read_text(text: str, source: str, inputs: Inputs) -> None:
    inputs.sources += 1
    for number, doc in _documents(text, source):
        _add_document(doc, f"{source}: document {number}", inputs)


def read_inputs(paths: Iterable[str], stdin: Any = None) -> Inputs:
    """Every object of every source; ManifestError on the first malformed one."""
    inputs = Inputs()
    for path in paths:
        if path == "-":
            stream = stdin if stdin is not None else sys.stdin
            if stream is None:
                raise ManifestError("<stdin>: there is no standard input; give a PATH")
            data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
            text = data if isinstance(data, str) else _decode(data, "<stdin>")
            read_text(text, "<stdin>", inputs)
            continue
        for file in _manifest_files(path):
            try:
                with open(file, "rb") as handle:
                    data = handle.read()
            except OSError as err:
                raise ManifestError(f"{file}: cannot read: {err.strerror or err}") from None
            read_text(_decode(data, file), file, inputs)
    return inputs
