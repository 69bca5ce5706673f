"""The real project files, parsed: shared by the contract tests."""
import json
import pathlib
import re
import tomllib

import yaml
from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_template(path=ROOT / "template.yaml"):
    template, matches = decode(str(path))
    assert not matches, f"template.yaml does not parse: {matches}"
    return template


def load_asl(path=ROOT / "statemachine" / "install.asl.json"):
    return json.loads(pathlib.Path(path).read_text())


def load_document(name):
    return yaml.safe_load((ROOT / "documents" / name).read_text())


def rust_const_strings(path, const):
    """The string literals of a `pub const NAME: &[&str] = &[...]` in a Rust file."""
    text = pathlib.Path(path).read_text()
    m = re.search(rf"pub const {const}: &\[&str\] = &\[(.*?)\];", text, re.S)
    assert m, f"{const} not found in {path}"
    return re.findall(r'"([^"]+)"', m.group(1))


def rust_error_types(path=ROOT / "functions" / "fleet-core" / "src" / "error.rs"):
    """The errorType names fleet-core can return: the values of the constants listed in ERROR_TYPES."""
    text = pathlib.Path(path).read_text()
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "([^"]+)";', text))
    m = re.search(r"pub const ERROR_TYPES: &\[&str\] = &\[(.*?)\];", text, re.S)
    assert m, "ERROR_TYPES not found"
    names = re.findall(r"([A-Z_]+)", m.group(1))
    return {consts[n] for n in names}


def workspace_members(path=ROOT / "Cargo.toml"):
    return tomllib.loads(path.read_text())["workspace"]["members"]
