"""The SSM documents themselves, read as files: parameters, how the scripts read them, and the
Windows script's installer handling (bounded wait, kill on timeout, reboot results, exit codes).

No PowerShell runs here (none is installable on the build machine): these tests read the script
text. Comments are stripped before a code pattern is looked for, so a comment cannot satisfy one.
"""
import re

import pytest

from project import ROOT, load_document, load_template, rust_const_strings

DOCS = {"linux": "install-agent-linux.yml", "windows": "install-agent-windows.yml"}
PASSED = {
    "linux": set(rust_const_strings(ROOT / "functions/fleet-core/src/routing.rs", "LINUX_PARAMETERS")),
    "windows": set(rust_const_strings(ROOT / "functions/fleet-core/src/routing.rs", "WINDOWS_PARAMETERS")),
}
# Used only as the step's timeoutSeconds ({{ }} outside the script), never in the script.
STEP_ONLY = {"ExecutionTimeoutSeconds"}


def full_match(pattern, value):
    """allowedPattern as AWS applies it (a Java regex that must match the whole value, where "$"
    does not accept a trailing newline), and the scripts' \\A...\\z checks alike."""
    body = pattern
    for start in ("^", r"\A"):
        body = body.removeprefix(start)
    for end in ("$", r"\z", r"\Z"):
        if body.endswith(end) and not body.endswith("\\" + end):
            body = body[: -len(end)]
    return re.fullmatch(body, value) is not None


def script(kind):
    doc = load_document(DOCS[kind])
    return "\n".join("\n".join(step["inputs"]["runCommand"]) for step in doc["mainSteps"])


def powershell_code(text):
    """The script without comments (# to the end of a line, outside quotes is close enough here:
    no string in these scripts holds a #)."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def function_body(code, name):
    """The text of a PowerShell function, from its header to the next top-level function."""
    m = re.search(rf"^(\s*)function {name}\b.*?(?=^\1function |\Z)", code, re.S | re.M)
    assert m, f"function {name} not found"
    return m.group(0)


WIN_CODE = powershell_code(script("windows"))


# --- parameters, both documents ------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(DOCS))
def test_every_parameter_has_a_strict_pattern(kind):
    for name, p in load_document(DOCS[kind])["parameters"].items():
        pattern = p.get("allowedPattern", "")
        assert pattern.startswith("^") and pattern.endswith("$"), f"{name}: allowedPattern must be anchored: {pattern!r}"
        for bad in ("", "x\n", "a;b", "$(x)", "`x`", "'", '"', "{{ x }}"):
            if full_match(pattern, bad):
                pytest.fail(f"{name}'s allowedPattern accepts {bad!r}")


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_parameters_send_command_does_not_pass_have_defaults_that_pass_their_pattern(kind):
    params = load_document(DOCS[kind])["parameters"]
    for name, p in params.items():
        if name not in PASSED[kind]:
            assert "default" in p, f"{name} is not passed by group-by-platform (routing.rs) and has no default"
        if "default" in p:
            assert full_match(p["allowedPattern"], str(p["default"])), f"{name}'s default fails its own pattern"


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_script_parameters_arrive_as_environment_variables_only(kind):
    doc = load_document(DOCS[kind])
    text = script(kind)
    assert "{{" not in text, "a parameter is pasted into the script"
    for name, p in doc["parameters"].items():
        if name in STEP_ONLY:
            assert "interpolationType" not in p, f"{name} is used by {{{{ }}}} in timeoutSeconds"
            assert f"SSM_{name}" not in powershell_code(text), f"{name} is not an environment variable"
            continue
        assert p.get("interpolationType") == "ENV_VAR", f"{name} lacks interpolationType: ENV_VAR"
        reference = f"$env:SSM_{name}" if kind == "windows" else f"SSM_{name}"
        assert reference in powershell_code(text), f"the script never reads {reference}"
    read = set(re.findall(r"SSM_([A-Za-z0-9]+)", powershell_code(text)))
    assert read <= set(doc["parameters"]), f"the script reads undeclared parameters: {read - set(doc['parameters'])}"


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_step_timeout_is_the_execution_timeout_parameter(kind):
    for step in load_document(DOCS[kind])["mainSteps"]:
        assert step["inputs"]["timeoutSeconds"] == "{{ ExecutionTimeoutSeconds }}"


# --- Windows: parameters -------------------------------------------------------------------

WIN_PARAMS = load_document(DOCS["windows"])["parameters"]


def script_pattern(env_name):
    """The regex the Windows script checks SSM_<env_name> against (its own copy of allowedPattern)."""
    m = re.search(rf"\$(\w+) = \$env:SSM_{env_name}\b", WIN_CODE)
    assert m, f"SSM_{env_name} is not read into a variable"
    checks = re.findall(rf"\${m.group(1)} -c?notmatch '([^']+)'", WIN_CODE)
    assert len(checks) == 1, f"${m.group(1)} (SSM_{env_name}) should be checked by exactly one -notmatch, found {checks}"
    return checks[0]


GOOD_ARGUMENTS = ["/quiet /norestart", "/S", "-s -norestart", "/VERYSILENT /SUPPRESSMSGBOXES /NORESTART /SP-",
                  "/install /quiet /log=agent.log", "--mode=unattended", "/q:a"]
BAD_ARGUMENTS = ["", " /S", "/S ", "/S  /quiet", "/S\n", "/S\t/quiet", '/S"', "/S'", "/S;calc", "/S & calc", "/S|x",
                 "/S`x", "$(calc)", "%TEMP%", "/D=C:\\Agent", "/S /v\"/qn\"", "a" * 65,
                 " ".join(["/x"] * 17), "/S\r\n/quiet"]


@pytest.mark.parametrize("value", GOOD_ARGUMENTS)
def test_installer_arguments_accepts_silent_switches(value):
    assert full_match(WIN_PARAMS["InstallerArguments"]["allowedPattern"], value)
    assert full_match(script_pattern("InstallerArguments"), value)


@pytest.mark.parametrize("value", BAD_ARGUMENTS)
def test_installer_arguments_rejects_anything_that_could_break_out(value):
    assert not full_match(WIN_PARAMS["InstallerArguments"]["allowedPattern"], value)
    assert not full_match(script_pattern("InstallerArguments"), value)


def test_installer_arguments_default_is_the_previous_behaviour():
    assert WIN_PARAMS["InstallerArguments"]["default"] == "/quiet /norestart"


@pytest.mark.parametrize("value,ok", [("600", True), ("10", True), ("99999", True), ("3600", True),
                                      ("0", False), ("9", False), ("010", False), ("100000", False), ("-1", False),
                                      ("60s", False), ("", False), ("600\n", False), (" 600", False), ("6e2", False)])
def test_installer_timeout_is_digits_only(value, ok):
    assert full_match(WIN_PARAMS["InstallerTimeoutSeconds"]["allowedPattern"], value) is ok
    assert full_match(script_pattern("InstallerTimeoutSeconds"), value) is ok


def test_installer_timeout_default_leaves_room_within_the_execution_timeout():
    installer = int(WIN_PARAMS["InstallerTimeoutSeconds"]["default"])
    document_default = int(WIN_PARAMS["ExecutionTimeoutSeconds"]["default"])
    template_default = int(load_template()["Parameters"]["CommandExecutionTimeoutSeconds"]["Default"])
    # Download (up to 3 attempts), checksum and the service check need time of their own.
    assert installer + 120 <= min(document_default, template_default)


@pytest.mark.parametrize("name", ["InstallerUrl", "InstallerSha256", "ServiceName", "InstallerArguments",
                                  "InstallerTimeoutSeconds"])
def test_script_checks_each_parameter_like_its_allowed_pattern(name):
    pattern = WIN_PARAMS[name]["allowedPattern"]
    mine = script_pattern(name)
    samples = [str(WIN_PARAMS[name].get("default", "")), "", "x", "/quiet /norestart", "600", "fleet-agent",
               "a" * 64, "A" * 64, "0" * 63, "f" * 65, "https://example.com/a.msi", "https://example.com/a.exe?x=1",
               "http://example.com/a.msi", "https://example.com/a.msi\n", "/S;x", "-agent.1"]
    for value in samples:
        assert full_match(pattern, value) == full_match(mine, value), f"{name}: script and allowedPattern disagree on {value!r}"


# --- Windows: the installer run ------------------------------------------------------------

def test_installer_wait_is_bounded_and_a_hung_installer_is_killed():
    body = function_body(WIN_CODE, "Invoke-Installer")
    assert re.search(r"Start-Process -FilePath \$exe -ArgumentList \$argList -PassThru", body)
    waits = re.findall(r"\.WaitForExit\(([^)]*)\)", body)
    assert waits and waits[0].strip(), "the first wait for the installer must have a timeout"
    timed = re.search(r"if \(-not \$proc\.WaitForExit\(\$remainingMs\)\) \{(.*?)\n\s*\}", body, re.S)
    assert timed, "a timed-out WaitForExit must lead to the kill path"
    assert "Stop-InstallerProcess $proc" in timed.group(1)
    assert "TimedOut = $true" in timed.group(1)
    assert re.search(r"\$deadline = \[DateTime\]::UtcNow\.AddSeconds\(\$TimeoutSeconds\)", body), \
        "one deadline for all attempts (1618 retries included)"
    # The exe gets the parameter's arguments, never a fixed list.
    assert "$argList = $ExeArguments" in body


def test_kill_path_ends_the_installer_and_its_children():
    body = function_body(WIN_CODE, "Stop-InstallerProcess")
    assert re.search(r"taskkill\.exe", body) and "'/T'" in body and "'/F'" in body
    assert "$Process.Kill()" in body
    assert re.search(r"\$killer\.WaitForExit\(\d+\)", body), "waiting for taskkill is bounded too"


def test_timeout_exits_with_its_own_code():
    main = function_body(WIN_CODE, "Invoke-Main")
    m = re.search(r"if \(\$result\.TimedOut\) \{(.*?)\$code = \$result\.ExitCode", main, re.S)
    assert m, "Invoke-Main must check TimedOut"
    assert "Stop-WithError $EX_INSTALL_TIMEOUT" in m.group(1)
    assert "-TimeoutSeconds $installerTimeout" in main and "-ExeArguments $exeArguments" in main


def test_reboot_results_are_reported_with_their_own_codes():
    main = function_body(WIN_CODE, "Invoke-Main")
    started = re.search(r"if \(\$code -eq 1641\) \{(.*?)\}", main, re.S)
    assert started and "Stop-WithError $EX_REBOOT_STARTED" in started.group(1)
    assert "started a reboot" in started.group(1)
    required = re.search(r"elseif \(\$code -eq 3010\) \{(.*?)\}", main, re.S)
    assert required and "$rebootRequired = $true" in required.group(1)
    assert "does NOT reboot" in required.group(1)
    # 3010 and the service did not come up: its own code, not the generic "service not running".
    assert len(re.findall(r"if \(\$rebootRequired\) \{\s*Stop-WithError \$EX_REBOOT_REQUIRED", main)) == 2
    # 3010 and the service runs: success, and the last line still says a reboot is required.
    assert re.search(r"if \(\$rebootRequired\) \{\s*Write-Log \"[^\"]*reboot is still required", main)


# --- Windows: exit codes -------------------------------------------------------------------

EXPECTED_CODES = {"EX_PARAM": 2, "EX_UNSUPPORTED": 3, "EX_DOWNLOAD": 4, "EX_CHECKSUM": 5, "EX_INSTALL": 6,
                  "EX_SERVICE": 7, "EX_INSTALL_TIMEOUT": 8, "EX_REBOOT_STARTED": 9, "EX_REBOOT_REQUIRED": 10}


def test_exit_codes_keep_the_scheme_and_are_distinct():
    codes = {k: int(v) for k, v in re.findall(r"^\s*\$(EX_[A-Z_]+) = (\d+)\s*$", WIN_CODE, re.M)}
    assert codes == EXPECTED_CODES
    assert len(set(codes.values())) == len(codes)
    # Never an exit code that makes SSM reboot (3010, 194) or mimics an installer's reboot (1641).
    assert not set(codes.values()) & {0, 1, 194, 1641, 3010}
    # Every exit goes through the one final `exit $exitCode`.
    assert re.findall(r"^\s*exit\b.*$", WIN_CODE, re.M) == ["exit $exitCode"]
    for name in codes:
        assert f"Stop-WithError ${name} " in WIN_CODE, f"{name} is never used"


def test_exit_codes_are_documented_in_the_description_and_the_script():
    description = " ".join(load_document(DOCS["windows"])["description"].split())
    for phrase in ("2 missing/invalid parameter", "3 unsupported OS", "4 download failed", "5 checksum mismatch",
                   "6 install failed", "7 service not running", "8 installer timed out",
                   "9 the installer started a reboot", "10 service not running and a reboot is required"):
        assert phrase in description, f"description lacks {phrase!r}"
    header = script("windows")
    for code in EXPECTED_CODES.values():
        assert re.search(rf"^\s*#\s+{code} \S", header, re.M), f"the script's header does not explain exit code {code}"


def test_linux_exit_codes_are_unchanged():
    code = powershell_code(script("linux"))
    codes = {k: int(v) for k, v in re.findall(r"^\s*(EX_[A-Z_]+)=(\d+)\s*$", code, re.M)}
    assert {k: codes[k] for k in ("EX_PARAM", "EX_UNSUPPORTED", "EX_DOWNLOAD", "EX_CHECKSUM", "EX_INSTALL",
                                  "EX_SERVICE")} == {k: EXPECTED_CODES[k] for k in ("EX_PARAM", "EX_UNSUPPORTED",
                                                                                   "EX_DOWNLOAD", "EX_CHECKSUM",
                                                                                   "EX_INSTALL", "EX_SERVICE")}


# --- both documents: the result line of a successful run ---------------------------------
# check-status tells a verification from a drift repair by this line: it must be exact, and the last on stdout.
RESULT_LINES = {"verified": "FLEET_INSTALL_RESULT=verified", "started": "FLEET_INSTALL_RESULT=started",
                "installed": "FLEET_INSTALL_RESULT=installed"}

STUBS = {
    # root, without being root
    "id": '#!/bin/sh\nif [ "$1" = -u ]; then echo 0; else exec /usr/bin/id "$@"; fi\n',
    # a systemd whose one unit's state is the word in $FAKE_ROOT/state: absent, stopped, running or broken
    # (installed, never starts)
    "systemctl": """#!/bin/sh
state=$(cat "$FAKE_ROOT/state")
case $1 in
  show) if [ "$state" = absent ]; then echo LoadState=not-found; else echo LoadState=loaded; fi ;;
  is-active) [ "$state" = running ] ;;
  start) if [ "$state" = stopped ]; then echo running > "$FAKE_ROOT/state"; fi; [ "$state" != absent ] ;;
  enable | daemon-reload) echo "systemctl $1" >&2 ;;
  status) echo "fleet-agent.service: $state" ;;
  *) exit 1 ;;
esac
""",
    "rpm": "#!/bin/sh\nexit 0\n",
    # the package installs the unit, stopped; a noisy package manager, as dnf is
    "dnf": '#!/bin/sh\necho "Installing: fleet-agent"\necho stopped > "$FAKE_ROOT/state"\necho "Complete!"\n',
    # the download: the installer's bytes are in $FAKE_ROOT/installer
    "curl": '#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ "$1" = -o ]; then cp "$FAKE_ROOT/installer" "$2"; fi; shift; done\n',
    "sleep": "#!/bin/sh\nexit 0\n",
}


def run_linux_script(tmp_path, agent, sha=None):
    """The Linux document's script under /bin/sh on this machine, as root on Amazon Linux with systemd, with the
    service manager, package manager and download stubbed (on PATH first; the script appends its own PATH).
    agent: the service's state before the run. Returns (exit code, stdout lines)."""
    import hashlib
    import os
    import subprocess

    text = script("linux")
    for real in ("/run/systemd/system", "/etc/os-release"):
        assert real in text, f"the script no longer reads {real}: adapt this harness"
    (tmp_path / "systemd").mkdir()
    (tmp_path / "os-release").write_text('NAME="Amazon Linux"\nID="amzn"\nVERSION_ID="2023"\n')
    text = text.replace("/run/systemd/system", str(tmp_path / "systemd")).replace("/etc/os-release",
                                                                                  str(tmp_path / "os-release"))
    (tmp_path / "install.sh").write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "state").write_text(agent + "\n")
    installer = b"fleet-agent package\n"
    (tmp_path / "installer").write_bytes(installer)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_ROOT": str(tmp_path), "TMPDIR": str(tmp_path),
           "SSM_ServiceName": "fleet-agent", "SSM_InstallerUrlRpm": "https://example.com/agent/fleet-agent.rpm",
           "SSM_InstallerSha256Rpm": sha or hashlib.sha256(installer).hexdigest()}
    run = subprocess.run(["/bin/sh", str(tmp_path / "install.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    return run.returncode, run.stdout.splitlines()


@pytest.mark.parametrize("agent,result,says", [
    ("running", "verified", "service fleet-agent is already installed and running; nothing to do"),
    ("stopped", "started", "service fleet-agent is installed but not running; starting it"),
    ("absent", "installed", "service fleet-agent installed and running"),
])
def test_linux_success_ends_with_its_result_line(tmp_path, agent, result, says):
    code, out = run_linux_script(tmp_path, agent)
    assert code == 0, out
    assert out[-1] == RESULT_LINES[result], out
    assert [line for line in out if line.startswith("FLEET_INSTALL_RESULT")] == [RESULT_LINES[result]], out
    assert f"fleet-install: {says}" in out
    assert (tmp_path / "state").read_text().strip() == "running"


@pytest.mark.parametrize("agent,sha,code", [("broken", None, 7), ("absent", "0" * 64, 5)])
def test_linux_failure_prints_no_result_line(tmp_path, agent, sha, code):
    got, out = run_linux_script(tmp_path, agent, sha)
    assert got == code, out
    assert not any("FLEET_INSTALL_RESULT" in line for line in out), out


def test_linux_result_line_is_printed_only_by_succeed():
    code = powershell_code(script("linux"))
    succeed = re.search(r"^\s*succeed\(\) \{\n(.*?)\n\s*\}", code, re.S | re.M)
    assert succeed, "succeed() not found"
    assert [line.strip() for line in succeed.group(1).splitlines()] == \
        ["printf 'FLEET_INSTALL_RESULT=%s\\n' \"$1\"", "exit 0"]
    assert code.count("FLEET_INSTALL_RESULT") == 1
    assert sorted(re.findall(r"^\s*succeed (\w+)\s*$", code, re.M)) == sorted(RESULT_LINES)
    # every exit 0 goes through succeed
    assert [line.strip() for line in re.findall(r"^\s*exit 0\s*$", code, re.M)] == ["exit 0"]


def test_windows_success_ends_with_its_result_line():
    main = function_body(WIN_CODE, "Invoke-Main")
    main = main[: main.index("\n}\n") + 3]   # the last function: up to its closing brace
    assigned = re.findall(r"\$script:Result = '(\w+)'", WIN_CODE)
    assert sorted(assigned) == sorted(RESULT_LINES), assigned
    # the two early successes set theirs right before returning; the install path at its very end
    for result, says in (("verified", "is already installed and running; nothing to do"),
                         ("started", "is running")):
        assert re.search(rf'Write-Log "service \$serviceName {re.escape(says)}"\s*'
                         rf"\$script:Result = '{result}'\s*return\b", main), result
    assert len(re.findall(r"^\s*return\b", main, re.M)) == 2, "a success path that sets no result"
    assert re.search(r"\$script:Result = 'installed'\s*\}\s*$", main), "the install path must end by setting it"
    # printed once, only when the run succeeded, after the clean-up and right before the one exit
    tail = WIN_CODE[WIN_CODE.index("} finally {"):]
    assert re.search(r'\}\s*\}\s*if \(\$exitCode -eq 0\) \{\s*Write-Host "FLEET_INSTALL_RESULT=\$\(\$script:Result\)"'
                     r"\s*\}\s*exit \$exitCode\s*$", tail), tail
    assert WIN_CODE.count("FLEET_INSTALL_RESULT") == 1
    assert "$script:Result = $null" in WIN_CODE


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_description_names_the_result_lines(kind):
    description = " ".join(load_document(DOCS[kind])["description"].split())
    assert "FLEET_INSTALL_RESULT=verified" in description and "=started" in description and "=installed" in description
