#!/usr/bin/env python3
"""Mutation check of least privilege: remove one action at a time from a function's permissions in
template.yaml and show which tests fail. Every removal must fail at least one test.

    .venv/bin/python local-stack/scenarios/iam_mutations.py [--tests tests/test_iam_contract.py]

Function permissions are the IAM actions written inside each AWS::Serverless::Function resource, the explicit
StartInstallFunctionRole and the OptOutSendDenyPolicy the send-command function carries. Prints one line per
removal and exits non-zero if any removal left every test passing.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ACTION = re.compile(r'^(\s*)(- |Action: |"Action": )"?([a-z0-9-]+:[A-Za-z*]+)"?(,?)\s*$')
EXTRA = {"StartInstallFunctionRole", "OptOutSendDenyPolicy"}


def regions(lines: list[str]) -> list[tuple[str, int, int]]:
    """(logical id, first line, end line) of the resources whose actions count."""
    out, start, name, kind = [], None, None, None
    in_resources = False
    for i, line in enumerate(lines + ["Outputs:"]):
        if re.match(r"^\S", line):
            in_resources = line.startswith("Resources:")
        m = re.match(r"^  ([A-Za-z0-9]+):\s*$", line)
        if (m or re.match(r"^\S", line)) and name is not None:
            if kind == "AWS::Serverless::Function" or name in EXTRA:
                out.append((name, start, i))
            name = None
        if m and in_resources:
            name, start = m.group(1), i
            kind = next((re.search(r"Type: (\S+)", l).group(1) for l in lines[i + 1:i + 3] if "Type:" in l), None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", nargs="+", default=["tests/test_iam_contract.py", "tests/test_template_security.py"])
    args = ap.parse_args()
    lines = open(os.path.join(ROOT, "template.yaml")).read().split("\n")
    survivors = 0
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, a, b in regions(lines):
            for i in range(a, b):
                m = ACTION.match(lines[i])
                if not m or m.group(3).startswith("sts:"):
                    continue
                mutated = list(lines)
                mutated[i] = {"Action: ": f"{m.group(1)}Action: []",
                              '"Action": ': f'{m.group(1)}"Action": []{m.group(4)}'}.get(m.group(2), f"{m.group(1)}# removed")
                path = os.path.join(tmp, "template.yaml")
                with open(path, "w") as f:
                    f.write("\n".join(mutated))
                r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args.tests],
                                   cwd=ROOT, env=dict(os.environ, FLEET_TEMPLATE=path), capture_output=True, text=True)
                failed = re.findall(r"^FAILED (\S+)", r.stdout, re.M) or re.findall(r"^ERROR (\S+)", r.stdout, re.M)
                total += 1
                if r.returncode == 0:
                    survivors += 1
                    print(f"SURVIVED  {name}: {m.group(3)} (line {i + 1})")
                else:
                    print(f"killed    {name}: {m.group(3)} (line {i + 1}) by {failed[0] if failed else r.stdout[-200:]}")
    print(f"{total - survivors} of {total} removals made a test fail")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
