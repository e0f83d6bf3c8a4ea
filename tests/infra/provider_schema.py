"""The hashicorp/google provider's schema, read from cdktn-provider-google's jsii assembly, and a checker
of Terraform files against it (what `terraform validate` would say about resource types, arguments and
blocks, without downloading the provider).

The wheel (`make provider-schema`, pinned by hash in infra/provider_schema/requirements.txt) holds
cdktn_provider_google/_jsii/*.jsii.tgz, whose package/.jsii describes, for every resource and data source,
a class (base cdktn.TerraformResource / cdktn.TerraformDataSource, docs linking to
`.../docs/resources/<type>`) whose initializer takes a Config struct. Every struct property links to
`.../docs/resources/<type>#<terraform_name>`; it is optional unless `optional` is absent; a property typed
as another of the provider's structs (or a list of them) is a nested block, anything else an argument.
"""

from __future__ import annotations

import difflib
import functools
import io
import json
import re
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / ".provider-schema"
ASSEMBLY = "@cdktn/provider-google"

# Terraform's own meta-arguments and meta-blocks (not in the provider schema).
RESOURCE_META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "provider"})
RESOURCE_META_BLOCKS = frozenset({"lifecycle", "provisioner", "connection"})
DATA_META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "provider"})
DATA_META_BLOCKS = frozenset({"lifecycle"})
DYNAMIC_ARGUMENTS = frozenset({"for_each", "iterator", "labels"})
# Resource types of other providers terraform/versions.tf pins (their schemas are not checked here).
OTHER_PROVIDERS = frozenset({"archive"})
HCL2_BOOKKEEPING = frozenset({"__is_block__", "__comments__", "__start_line__", "__end_line__"})


@dataclass(frozen=True)
class Field:
    name: str
    block: bool  # a nested block (else an argument)
    required: bool
    struct: str | None  # the nested block's struct


@dataclass(frozen=True)
class Schema:
    provider_version: str  # the hashicorp/google version the assembly was built from
    resources: dict[str, str]  # terraform type -> its Config struct
    data_sources: dict[str, str]
    structs: dict[str, dict[str, Field]]


def wheel() -> Path:
    wheels = sorted(SCHEMA_DIR.glob("cdktn_provider_google-*.whl"))
    if len(wheels) != 1:
        raise FileNotFoundError(
            f"expected one cdktn_provider_google wheel in {SCHEMA_DIR}, found {len(wheels)}: "
            "run `make provider-schema` (make test does it)"
        )
    return wheels[0]


def _provider_structs(kind: dict[str, Any]) -> list[str]:
    """The provider's struct types a property type names (directly, in a collection or a union)."""
    if "fqn" in kind:
        return [kind["fqn"]] if kind["fqn"].startswith(ASSEMBLY + ".") else []
    if "collection" in kind:
        return _provider_structs(kind["collection"]["elementtype"])
    if "union" in kind:
        return [s for member in kind["union"]["types"] for s in _provider_structs(member)]
    return []


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _field(prop: dict[str, Any], types: dict[str, Any]) -> Field:
    link = re.search(r"/docs/(?:resources|data-sources)/\w+#(\w+) ", json.dumps(prop["docs"]))
    nested = [s for s in _provider_structs(prop["type"]) if types.get(s, {}).get("datatype")]
    return Field(
        name=link.group(1) if link else _snake(prop["name"]),
        block=bool(nested),
        required=not prop.get("optional", False),
        struct=nested[0] if nested else None,
    )


def _properties(fqn: str, types: dict[str, Any]) -> list[dict[str, Any]]:
    """A struct's own properties and those of the provider's structs it extends."""
    struct = types[fqn]
    inherited = [p for parent in struct.get("interfaces", []) if parent in types for p in _properties(parent, types)]
    return inherited + list(struct.get("properties", []))


def parse_assembly(assembly: dict[str, Any]) -> Schema:
    types: dict[str, Any] = assembly["types"]
    resources: dict[str, str] = {}
    data_sources: dict[str, str] = {}
    version = re.search(r"provider version (\S+)", assembly.get("readme", {}).get("markdown", ""))
    for cls in types.values():
        base = cls.get("base")
        if base not in {"cdktn.TerraformResource", "cdktn.TerraformDataSource"}:
            continue
        link = re.search(r"\{@link \S+/docs/(?:resources|data-sources)/\w+ (\w+)\}", cls["docs"]["summary"])
        config = [p for p in cls["initializer"]["parameters"] if p["name"] == "config"]
        if link is None or not config:
            continue
        target = resources if base == "cdktn.TerraformResource" else data_sources
        target[link.group(1)] = config[0]["type"]["fqn"]
    structs = {
        fqn: {f.name: f for f in (_field(p, types) for p in _properties(fqn, types))}
        for fqn, t in types.items()
        if t.get("datatype") and fqn.startswith(ASSEMBLY + ".")
    }
    return Schema(version.group(1) if version else "", resources, data_sources, structs)


@functools.cache
def load() -> Schema:
    """The schema from the pinned wheel (parsing its 127 MB assembly takes a few seconds: once per run)."""
    with zipfile.ZipFile(wheel()) as whl:
        (name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
            member = tgz.extractfile("package/.jsii")
            assert member is not None
            return parse_assembly(json.loads(member.read()))


# ------------------------------------------------------------------------------------------ checking


def _label(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _is_block(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def _suggest(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Checker:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.problems: list[str] = []
        self.checked_resources = 0
        self.checked_blocks = 0
        self.checked_arguments = 0

    def _body(
        self,
        where: str,
        body: dict[str, Any],
        fields: dict[str, Field],
        meta_arguments: frozenset[str] = frozenset(),
        meta_blocks: frozenset[str] = frozenset(),
    ) -> None:
        present: set[str] = set()
        for key, value in body.items():
            if key in HCL2_BOOKKEEPING:
                continue
            if key == "dynamic" and isinstance(value, list):
                for dynamic in value:
                    for raw_name, spec in dynamic.items():
                        if raw_name in HCL2_BOOKKEEPING:
                            continue
                        present.add(_label(raw_name))
                        self._dynamic(where, _label(raw_name), spec, fields)
                continue
            present.add(key)
            if key in meta_arguments or key in meta_blocks:
                if (key in meta_blocks) != _is_block(value):
                    kind = "block" if key in meta_blocks else "argument"
                    self.problems.append(f"{where}: {key!r} is a meta-{kind}, written as the other kind")
                continue
            field = fields.get(key)
            self.checked_arguments += field is not None and not field.block
            if field is None:
                kind = "block" if _is_block(value) else "argument"
                suggestion = _suggest(key, set(fields))
                self.problems.append(f"{where}: unknown {kind} {key!r}{suggestion}")
            elif field.block and not _is_block(value):
                self.problems.append(f"{where}: {key!r} is a block, written as an argument ({key} = ...)")
            elif not field.block and _is_block(value):
                self.problems.append(f"{where}: {key!r} is an argument, written as a block ({key} {{ ... }})")
            elif field.block and field.struct is not None:
                for instance in value:
                    self.checked_blocks += 1
                    self._body(f"{where}.{key}", instance, self.schema.structs[field.struct])
        for name, field in sorted(fields.items()):
            if field.required and name not in present:
                kind = "block" if field.block else "argument"
                self.problems.append(f"{where}: missing required {kind} {name!r}")

    def _dynamic(self, where: str, name: str, spec: dict[str, Any], fields: dict[str, Field]) -> None:
        field = fields.get(name)
        if field is None or not field.block or field.struct is None:
            what = "an argument, not a block" if field else "unknown" + _suggest(name, set(fields))
            self.problems.append(f'{where}: dynamic "{name}": {what}')
            return
        content: list[dict[str, Any]] = spec.get("content") or []
        if not _is_block(content):
            self.problems.append(f'{where}: dynamic "{name}" has no content block')
            return
        for key in spec:
            if key not in DYNAMIC_ARGUMENTS | HCL2_BOOKKEEPING | {"content"}:
                self.problems.append(f'{where}: dynamic "{name}": unknown argument {key!r}')
        for instance in content:
            self.checked_blocks += 1
            self._body(f"{where}.{name}", instance, self.schema.structs[field.struct])

    def check_document(self, file: str, document: dict[str, Any]) -> None:
        for kind, catalog, meta_arguments, meta_blocks in (
            ("resource", self.schema.resources, RESOURCE_META_ARGUMENTS, RESOURCE_META_BLOCKS),
            ("data", self.schema.data_sources, DATA_META_ARGUMENTS, DATA_META_BLOCKS),
        ):
            for block in document.get(kind, []):
                for raw_type, named in block.items():
                    rtype = _label(raw_type)
                    for raw_name, body in named.items():
                        where = f"{file}: {'data.' if kind == 'data' else ''}{rtype}.{_label(raw_name)}"
                        if rtype.split("_", 1)[0] in OTHER_PROVIDERS:
                            continue
                        config = catalog.get(rtype)
                        if config is None:
                            noun = "resource type" if kind == "resource" else "data source"
                            self.problems.append(f"{where}: unknown {noun} {rtype!r}{_suggest(rtype, set(catalog))}")
                            continue
                        self.checked_resources += 1
                        self._body(where, body, self.schema.structs[config], meta_arguments, meta_blocks)


def check_files(paths: list[Path], schema: Schema | None = None) -> list[str]:
    """Every problem in these Terraform files, as `file: address[.block]: message` lines."""
    checker = Checker(schema or load())
    for path in paths:
        with path.open() as f:
            checker.check_document(path.name, hcl2.load(f))
    return checker.problems


def check_text(name: str, text: str, schema: Schema | None = None) -> list[str]:
    checker = Checker(schema or load())
    checker.check_document(name, hcl2.loads(text))
    return checker.problems


def main(argv: list[str]) -> None:
    """`python -m tests.infra.provider_schema [files...]`: print the problems (terraform/*.tf by default)."""
    paths = [Path(p) for p in argv] or sorted((ROOT / "terraform").glob("*.tf"))
    problems = check_files(paths)
    print("\n".join(problems) or f"{len(paths)} files: no problem against hashicorp/google {load().provider_version}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
