"""What the install documents print when they fail, by exit code (documents/install-agent-{linux,windows}.yml).

The messages are the documents' own `fail "$EX_..." "..."` (POSIX sh) and `Stop-WithError $EX_... '...'`
(PowerShell) texts, kept here verbatim with their variables (local-stack/tests check that every template still
occurs in the documents), and rendered with plausible values. Both scripts print them on stderr as
"fleet-install: ERROR: <message>"; the agent then appends "failed to run commands: exit status <N>" and SSM shows
stdout, "----------ERROR-------" and stderr in the plugin's Output.
"""

from __future__ import annotations

import re

ENV_VAR_LINUX = ("parameter ServiceName not found in SSM_* environment variables: SSM Agent 3.3.2746.0 or later is "
                 "required (interpolationType ENV_VAR)")
ENV_VAR_WINDOWS = ("parameters not found in SSM_* environment variables: SSM Agent 3.3.2746.0 or later is required "
                   "(interpolationType ENV_VAR)")

LINUX = {
    2: "$URL_PARAM must be an https URL ending in .$PKGFMT",
    3: "unsupported Linux distribution '${DISTRO:-unknown}'",
    4: "download of installer failed ($DOWNLOADER exit code $DL_RC)",
    5: "SHA-256 mismatch: expected $SHA, got $ACTUAL; refusing to install",
    6: "package installation failed (exit code $INSTALL_RC)",
    7: "service $SVC is not running after install",
}

WINDOWS = {
    2: "InstallerUrl must be an https URL ending in .msi or .exe",
    3: "must run as SYSTEM or an administrator",
    4: "download of installer failed: $lastError",
    5: "SHA-256 mismatch: expected $sha, got $actual; refusing to install",
    6: "installer failed with exit code $code",
    7: "service $serviceName is not running after install",
    8: ("installer did not finish within InstallerTimeoutSeconds ($installerTimeout s) and was killed with its "
        "child processes; $hint"),
    9: ("installer exit code 1641: the installer itself started a reboot of this instance (this document never "
        "reboots); the agent service was not verified, a run after the restart will verify it"),
    10: ("service $serviceName is not running: the installer requires a reboot to complete (exit code 3010) and "
         "this document does not reboot; reboot the instance and run again"),
}
WINDOWS_HINT_EXE = "it may be waiting for input: check that InstallerArguments ('$exeArgumentText') are its silent switches"
WINDOWS_HINT_MSI = "another installation may be holding the Windows Installer"

_VAR = re.compile(r"\$\{([A-Za-z_]+):-([^}]*)\}|\$([A-Za-z_]+)")


def render(template: str, values: dict) -> str:
    def sub(m):
        if m.group(1):
            return str(values.get(m.group(1)) or m.group(2))
        name = m.group(3)
        return str(values[name]) if name in values else m.group(0)
    return _VAR.sub(sub, template)


def _param(parameters: dict, name: str, default: str = "") -> str:
    v = (parameters or {}).get(name)
    if isinstance(v, list):
        v = v[0] if v else None
    return str(v) if v not in (None, "") else default


def _linux_format(platform_name: str) -> str:
    name = platform_name.lower()
    if "freebsd" in name:
        return "pkg"
    if "ubuntu" in name or "debian" in name:
        return "deb"
    return "rpm"


def failure(platform: tuple[str, str, str], code: int, parameters: dict, host: str) -> tuple[str, str]:
    """(stdout, stderr message) of an install that exits with `code` on this platform."""
    ptype, pname, pversion = platform
    if ptype == "Windows":
        svc = _param(parameters, "ServiceName", "fleet-agent")
        url = _param(parameters, "InstallerUrl", "https://example.com/fleet-agent.msi")
        kind = "exe" if url.split("?")[0].lower().endswith(".exe") else "msi"
        args = _param(parameters, "InstallerArguments", "/quiet /norestart")
        timeout = _param(parameters, "InstallerTimeoutSeconds", "600")
        sha = _param(parameters, "InstallerSha256", "0" * 64).lower()
        err = "The remote server returned an error: (404) Not Found."
        values = {"serviceName": svc, "lastError": err, "sha": sha, "actual": "f" * 64 if sha != "f" * 64 else "e" * 64,
                  "code": "1603", "installerTimeout": timeout, "exeArgumentText": args}
        values["hint"] = render(WINDOWS_HINT_EXE if kind == "exe" else WINDOWS_HINT_MSI, values)
        out = [f"fleet-install: host {host}, Microsoft Windows NT {pversion}.0, PowerShell 5.1, service {svc}"]
        if code == 4:
            out += [f"fleet-install: download attempt {n} failed: {err}" for n in (1, 2, 3)]
        if code >= 6:
            out.append(f"fleet-install: SHA-256 verified: {sha}")
            out.append("fleet-install: running msi installer silently (msiexec /qn /norestart), at most "
                       f"{timeout} s" if kind == "msi" else
                       f"fleet-install: running exe installer with arguments '{args}', at most {timeout} s")
        if code == 8:
            out.append(f"fleet-install: installer (process 4242) still running after {timeout} s; killing it and "
                       "its child processes")
        if code == 10:
            out.append("fleet-install: installer exit code 3010: installed, but Windows needs a reboot to complete "
                       "the installation; this document does NOT reboot: schedule one")
        if code in (7, 10):
            out += [f"fleet-install: enabling and starting service {svc}",
                    f"fleet-install: service {svc} status: Stopped"]
        template = WINDOWS.get(code)
    else:
        fmt = _linux_format(pname)
        suffix = {"rpm": "Rpm", "deb": "Deb", "pkg": "FreeBsd"}[fmt]
        svc = _param(parameters, "ServiceName", "fleet-agent")
        sha = _param(parameters, f"InstallerSha256{suffix}", _param(parameters, "InstallerSha256", "0" * 64)).lower()
        distro = {"pkg": "freebsd", "deb": "ubuntu" if "ubuntu" in pname.lower() else "debian"}.get(fmt, "amzn")
        values = {"URL_PARAM": f"InstallerUrl{suffix}", "PKGFMT": fmt, "DISTRO": "", "DOWNLOADER": "curl",
                  "DL_RC": "22", "SHA": sha, "ACTUAL": "f" * 64 if sha != "f" * 64 else "e" * 64, "INSTALL_RC": "1",
                  "SVC": svc}
        os_name, mgr = ("FreeBSD", "rcd") if fmt == "pkg" else ("Linux", "systemd")
        out = [f"fleet-install: host {host}, {os_name} {pversion}, service manager {mgr}, service {svc}"]
        if code >= 4:
            out += [f"fleet-install: distribution {distro}, package format {fmt}, installer from parameter "
                    f"InstallerUrl{suffix}", "fleet-install: downloading installer with curl"]
        if code >= 6:
            out += [f"fleet-install: SHA-256 verified: {sha}", f"fleet-install: installing {fmt} package"]
        if code == 7:
            out.append(f"fleet-install: enabling and starting service {svc}")
        template = LINUX.get(code)
    message = render(template, values) if template else f"simulated failure with exit code {code}"
    if code <= 2 or (ptype == "Windows" and code == 3):
        out = []          # parameters (and, on Windows, elevation) are checked before the script logs anything
    return "\n".join(out), message


def env_var_failure(platform: tuple[str, str, str]) -> str:
    return ENV_VAR_WINDOWS if platform[0] == "Windows" else ENV_VAR_LINUX


def combined_output(stdout: str, stderr: str) -> str:
    """The plugin Output SSM shows: stdout, then the stderr section."""
    if not stderr:
        return stdout
    return (stdout + "\n" if stdout else "") + "----------ERROR-------\n" + stderr


# ------------------------------------------------------------------------------------------- success paths
#: The last line on stdout of every successful run of the install documents, one of RESULTS.
RESULT_PREFIX = "FLEET_INSTALL_RESULT="
RESULTS = ("verified", "started", "installed")

#: What each successful path logs (the documents' own `log "..."` / `Write-Log "..."` texts, checked by the tests),
#: without the "fleet-install: " prefix. "$noise" stands for the package manager's own output.
LINUX_OK = {
    "verified": ["service $SVC is already installed and running; nothing to do"],
    "started": ["service $SVC is installed but not running; starting it", "service $SVC is running"],
    "installed": ["distribution ${DISTRO:-unknown}, package format $PKGFMT, installer from parameter $URL_PARAM",
                  "downloading installer with $DOWNLOADER", "SHA-256 verified: $ACTUAL", "installing $PKGFMT package",
                  "$noise", "enabling and starting service $SVC", "service $SVC installed and running"],
}
WINDOWS_OK = {
    "verified": ["service $serviceName is already installed and running; nothing to do"],
    "started": ["service $serviceName is installed but $($svc.Status); starting it", "service $serviceName is running"],
    "installed": ["SHA-256 verified: $actual", "$run", "$noise", "enabling and starting service $serviceName",
                  "service $serviceName installed and running"],
}
WINDOWS_RUN_MSI = "running msi installer silently (msiexec /qn /norestart), at most $installerTimeout s"
WINDOWS_RUN_EXE = "running exe installer with arguments '$exeArgumentText', at most $installerTimeout s"

#: A stopped agent that does not start again (the "installed but not running" path), by exit code.
LINUX_START_FAILED = {7: "service $SVC is installed but is not running after start"}
WINDOWS_START_FAILED = {
    7: "service $serviceName is installed but is not running after start",
    10: ("service $serviceName is installed but is not running after start, and Windows has a reboot pending; this "
         "document does not reboot: reboot the instance and run again"),
}


def _values(platform: tuple[str, str, str], parameters: dict) -> dict:
    ptype, pname, _ = platform
    svc = _param(parameters, "ServiceName", "fleet-agent")
    if ptype == "Windows":
        url = _param(parameters, "InstallerUrl", "https://example.com/fleet-agent.msi")
        return {"serviceName": svc, "status": "Stopped", "installerTimeout":
                _param(parameters, "InstallerTimeoutSeconds", "600"),
                "exeArgumentText": _param(parameters, "InstallerArguments", "/quiet /norestart"),
                "actual": _param(parameters, "InstallerSha256", "0" * 64).lower(),
                "kind": "exe" if url.split("?")[0].lower().endswith(".exe") else "msi"}
    fmt = _linux_format(pname)
    suffix = {"rpm": "Rpm", "deb": "Deb", "pkg": "FreeBsd"}[fmt]
    sha = _param(parameters, f"InstallerSha256{suffix}", _param(parameters, "InstallerSha256", "0" * 64)).lower()
    distro = {"pkg": "freebsd", "deb": "ubuntu" if "ubuntu" in pname.lower() else "debian"}.get(fmt, "amzn")
    return {"SVC": svc, "DISTRO": distro, "PKGFMT": fmt, "URL_PARAM": f"InstallerUrl{suffix}", "DOWNLOADER": "curl",
            "ACTUAL": sha}


def _header(platform: tuple[str, str, str], values: dict, host: str) -> str:
    ptype, pname, pversion = platform
    if ptype == "Windows":
        return (f"fleet-install: host {host}, Microsoft Windows NT {pversion}.0, PowerShell 5.1, "
                f"service {values['serviceName']}")
    os_name, mgr = ("FreeBSD", "rcd") if values["PKGFMT"] == "pkg" else ("Linux", "systemd")
    return f"fleet-install: host {host}, {os_name} {pversion}, service manager {mgr}, service {values['SVC']}"


def _noise(platform: tuple[str, str, str], values: dict, lines: int) -> list[str]:
    if platform[0] == "Windows":
        what = "MSI (s) (A4:B8): Product: fleet-agent -- Installation step"
    else:
        what = {"rpm": "  Installing       : fleet-agent-1.0.0-1.x86_64", "deb": "Unpacking fleet-agent (1.0.0) ...",
                "pkg": "[1/1] Installing fleet-agent-1.0.0..."}[values["PKGFMT"]]
    return [f"{what} {n}/{lines}" for n in range(1, lines + 1)]


def success(platform: tuple[str, str, str], result: str, parameters: dict, host: str, noise_lines: int = 0) -> str:
    """stdout of a successful run that took the path `result` (one of RESULTS), ending with its result line."""
    values = _values(platform, parameters)
    windows = platform[0] == "Windows"
    out = [_header(platform, values, host)]
    for template in (WINDOWS_OK if windows else LINUX_OK)[result]:
        if template == "$noise":
            out += _noise(platform, values, noise_lines)
            continue
        if template == "$run":
            template = WINDOWS_RUN_EXE if values["kind"] == "exe" else WINDOWS_RUN_MSI
        out.append("fleet-install: " + render(template.replace("$($svc.Status)", values.get("status", "")), values))
    out.append(RESULT_PREFIX + result)
    return "\n".join(out)


def start_failure(platform: tuple[str, str, str], code: int, parameters: dict, host: str) -> tuple[str, str]:
    """(stdout, stderr message) of a run that found the agent installed but stopped and could not start it."""
    values = _values(platform, parameters)
    windows = platform[0] == "Windows"
    ok = WINDOWS_OK if windows else LINUX_OK
    out = [_header(platform, values, host),
           "fleet-install: " + render(ok["started"][0].replace("$($svc.Status)", values.get("status", "")), values)]
    if windows:
        out.append(f"fleet-install: service {values['serviceName']} status: Stopped")
    else:
        out.append(f"{values['SVC']}.service - fleet-agent\n     Active: failed (Result: exit-code)")
    template = (WINDOWS_START_FAILED if windows else LINUX_START_FAILED)[code]
    return "\n".join(out), render(template, values)


#: The SSM Agent keeps this much of a plugin's output for CommandPlugins[].Output (ListCommandInvocations), the
#: beginning of stdout and of stderr, each cut one marked as cut; GetCommandInvocation keeps the first
#: STDOUT_CONTENT characters of stdout and the first STDERR_CONTENT of stderr.
PLUGIN_OUTPUT = 2400
STDOUT_CONTENT = 24000
STDERR_CONTENT = 8000
OUT_CUT = "\n---Output truncated---"
ERR_CUT = "\n---Error truncated----"
ERROR_TITLE = "\n----------ERROR-------\n"


def plugin_output(stdout: str, stderr: str, capacity: int = PLUGIN_OUTPUT) -> str:
    """CommandPlugins[].Output as the agent reports it: stdout, then stderr under ERROR_TITLE, within `capacity`
    characters; what does not fit is cut from the end of stdout and/or stderr, each cut marked."""
    title = ERROR_TITLE if stderr else ""
    room = capacity - len(title)
    if len(stdout) + len(stderr) < room:
        return stdout + title + stderr
    half = room // 2
    if len(stdout) > half and len(stderr) > half:
        each = (room - len(OUT_CUT) - len(ERR_CUT)) // 2
        return stdout[:each] + OUT_CUT + title + stderr[:each] + ERR_CUT
    if len(stdout) < half:   # only stderr is too long
        return stdout + title + stderr[:room - len(ERR_CUT) - len(stdout)] + ERR_CUT
    return stdout[:room - len(OUT_CUT) - len(stderr)] + OUT_CUT + title + stderr
