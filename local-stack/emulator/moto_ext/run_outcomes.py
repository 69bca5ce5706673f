"""What a generic run prints and how the SSM Agent runs it (documents other than the install documents and
AWS-UpdateSSMAgent, e.g. AWS-RunShellScript). The outcome itself comes from the instance's tags (sim_tags.RUN_*);
ssm_agent._plan_run puts the pieces together.

The agent's own rules followed here (amazon-ssm-agent):
- execution timeout: the plugin's ``timeoutSeconds`` (AWS-RunShellScript: ``{{ executionTimeout }}``), outside
  5-172800 or not a number: 3600 (pluginutil.ValidateExecutionTimeout);
- a non-zero exit: the plugin fails, ResponseCode is the exit code and stderr ends with
  ``failed to run commands: exit status N``;
- aws:runShellScript has no handler on Windows: a schema 1.2/2.0 step fails with ``Plugin with name
  aws:runShellScript not found. Step name: <step>`` (ResponseCode 1, the agent's code for a failed plugin without
  one); a schema 2.2 step without a precondition is skipped ``due to incompatible platform``;
- aws:runPowerShellScript on Linux or macOS runs PowerShell Core at /usr/bin/pwsh (macOS: /usr/local/bin/pwsh);
  the simulated instances have none, so the run fails to start it: ``failed to run commands: fork/exec
  /usr/bin/pwsh: no such file or directory``, ResponseCode 1.
"""

from __future__ import annotations

import math
import re

#: pluginutil.ValidateExecutionTimeout
DEFAULT_EXECUTION_TIMEOUT = 3600
MIN_EXECUTION_TIMEOUT = 5
MAX_EXECUTION_TIMEOUT = 172800

SHELL = "aws:runShellScript"
POWERSHELL = "aws:runPowerShellScript"
#: A failure to start the plugin (no handler, no interpreter) comes this fast, in real seconds.
START_FAILURE_SECONDS = 0.2

_REF = re.compile(r"\s*\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}\s*")


def plugin_steps(doc) -> list[dict]:
    """Each step of a command document: {name, action, platform (a platformType precondition or None), inputs}.
    Schema 1.2: one per runtimeConfig plugin, named after the plugin, its first properties entry as inputs."""
    content = doc.content_json or {}
    steps = []
    for s in content.get("mainSteps") or []:
        pre = (s.get("precondition") or {}).get("StringEquals") or []
        plat = None
        if len(pre) == 2 and "platformType" in pre:
            plat = pre[1] if pre[0] == "platformType" else pre[0]
        steps.append({"name": s.get("name") or s.get("action", "step"), "action": s.get("action") or "",
                      "platform": plat, "inputs": s.get("inputs") or {}})
    for plugin, cfg in (content.get("runtimeConfig") or {}).items():
        props = (cfg or {}).get("properties")
        first = props[0] if isinstance(props, list) and props else props if isinstance(props, dict) else {}
        steps.append({"name": plugin, "action": plugin, "platform": None, "inputs": first or {}})
    return steps


def supports_preconditions(doc) -> bool:
    """Schema 2.2 and later evaluate preconditions and skip steps of another platform; 1.2 and 2.0 fail them."""
    try:
        return tuple(int(p) for p in str((doc.content_json or {}).get("schemaVersion", "")).split(".")) >= (2, 2)
    except ValueError:
        return False


def _param(parameters: dict, declared: dict, name: str) -> str:
    v = (parameters or {}).get(name)
    if isinstance(v, list):
        v = v[0] if v else None
    if v is None:
        v = (declared.get(name) or {}).get("default", "")
    return "" if v is None else str(v)


def execution_timeout(doc, step: dict | None, parameters: dict) -> int:
    """The step's execution timeout in (simulated) seconds, as the agent resolves it."""
    declared = (doc.content_json or {}).get("parameters") or {}
    raw = ((step or {}).get("inputs") or {}).get("timeoutSeconds")
    if raw is None and "executionTimeout" in declared:
        raw = "{{ executionTimeout }}"
    if isinstance(raw, str):
        m = _REF.fullmatch(raw)
        if m:
            raw = _param(parameters, declared, m.group(1))
    try:
        n = int(str(raw).strip())
    except (TypeError, ValueError):
        return DEFAULT_EXECUTION_TIMEOUT
    return n if MIN_EXECUTION_TIMEOUT <= n <= MAX_EXECUTION_TIMEOUT else DEFAULT_EXECUTION_TIMEOUT


def no_handler(action: str, platform_type: str) -> bool:
    """The agent on this platform has no handler for the plugin (aws:runShellScript on Windows)."""
    return action == SHELL and platform_type == "Windows"


def not_found_message(action: str, step_name: str) -> str:
    return f"Plugin with name {action} not found. Step name: {step_name}"


def incompatible_message(step_name: str) -> str:
    return f"Step execution skipped due to incompatible platform. Step name: {step_name}"


def pwsh_missing(action: str, platform_type: str) -> str | None:
    """stderr of aws:runPowerShellScript where the instance has no PowerShell (Linux, macOS), else None."""
    if action != POWERSHELL or platform_type == "Windows":
        return None
    path = "/usr/local/bin/pwsh" if platform_type == "MacOS" else "/usr/bin/pwsh"
    return f"failed to run commands: fork/exec {path}: no such file or directory"


def exit_status(code: int) -> str:
    return f"failed to run commands: exit status {code}"


def stdout_of(text: str | None, lines: int, host: str, document: str) -> str:
    """What the script prints: the RUN_OUTPUT text, then `lines` numbered lines; neither: one line naming the host
    and the document."""
    parts = [] if text is None else [text]
    parts += [f"line {n} of {lines}" for n in range(1, lines + 1)]
    if not parts:
        parts = [f"{host}: {document} finished"]
    return "\n".join(parts)


def printed_before(stdout: str, fraction: float) -> str:
    """The first lines of `stdout` a script printing it evenly has printed after `fraction` of its run time."""
    if fraction >= 1:
        return stdout
    lines = stdout.split("\n")
    return "\n".join(lines[:math.ceil(len(lines) * max(0.0, fraction))])
