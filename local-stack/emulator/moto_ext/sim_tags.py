"""EC2 instance tags that drive the simulated SSM agent (the single source of these names and defaults).

Put them on an instance at launch (RunInstances TagSpecifications) or later (CreateTags); they are read every
time the simulation needs them, except that an invocation's outcome is fixed when SendCommand creates it.
"""

PREFIX = "fleet-sim:"

#: "true" (default) or "false". "false": the agent never registers (the instance stays unmanaged).
MANAGED = PREFIX + "managed"
#: Seconds after launch before SSM lists the instance (default 0).
REGISTER_DELAY = PREFIX + "register-delay"
#: "PlatformType|PlatformName|PlatformVersion", e.g. "Linux|Ubuntu|22.04", "Linux|FreeBSD|14.1",
#: "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348". Default: see default_platform().
PLATFORM = PREFIX + "platform"
#: Seconds an install takes once delivered (default 1).
INSTALL_SECONDS = PREFIX + "install-seconds"
#: Success | Failed | TimedOut | Undeliverable (default Success).
OUTCOME = PREFIX + "outcome"
#: N: the first N SendCommand invocations on this instance fail (Failed); later ones use OUTCOME.
FAIL_ATTEMPTS = PREFIX + "fail-attempts"
#: The security agent at launch: "true" installed and running (an install run verifies it: nothing to do);
#: "stopped" installed but its service stopped (an install run starts it). Anything else: not installed.
#: Once an install document has run on the instance (or /_fleet/agent/remove changed it), the simulation's own
#: record of the agent wins over this tag.
INSTALLED = PREFIX + "installed"
#: "removed" or "stopped": the agent is lost once, right after the first install run on this instance that
#: installed or started it (package removed, or service stopped, as an AMI refresh or a clean-up script would),
#: so the next run finds drift. POST /_fleet/agent/remove does the same on request.
AGENT_LOST = PREFIX + "agent-lost"
#: N: the install path prints N more lines of package-manager output (default 0), as dnf or apt do; enough of
#: them push the result line past the 2,400 characters of CommandPlugins[].Output (as the SSM Agent truncates it).
INSTALL_OUTPUT_LINES = PREFIX + "install-output-lines"
#: "true": EC2 emits no "running" state-change event for this instance (at launch, and at every start while the
#: tag is set), as when EventBridge's best-effort delivery loses one. The instance is otherwise normal.
DROP_RUNNING_EVENT = PREFIX + "drop-running-event"

#: The SSM Agent version the instance starts with (default LATEST_AGENT_VERSION). Install documents that declare a
#: parameter with interpolationType ENV_VAR fail (exit 2) below ENV_VAR_MIN_AGENT_VERSION; without an instance
#: profile the agent registers through DHMC only from DHMC_MIN_AGENT_VERSION.
AGENT_VERSION = PREFIX + "agent-version"
#: "fail": AWS-UpdateSSMAgent fails on this instance (ResponseCode 1); anything else: it succeeds.
AGENT_UPDATE = PREFIX + "agent-update"
#: Seconds an AWS-UpdateSSMAgent run takes once delivered (default 2).
AGENT_UPDATE_SECONDS = PREFIX + "agent-update-seconds"
#: The version AWS-UpdateSSMAgent installs when its `version` parameter is empty (default LATEST_AGENT_VERSION).
AGENT_UPDATE_TO = PREFIX + "agent-update-to"
#: N (1-255): an install ends Failed with ResponseCode N and the document's own message for that exit code
#: (every send, or only the first FAIL_ATTEMPTS sends when that tag is set).
EXIT_CODE = PREFIX + "exit-code"

# "true": the instance was running long before fleet-install was deployed (the fleet a rollout covers):
# RunInstances emits no "running" event for it and its launch time lies a week back.
EXISTING = PREFIX + "existing"

# Generic runs: any command document that is neither an install document (ssm_agent.is_install_document) nor
# AWS-UpdateSSMAgent, e.g. AWS-RunShellScript. The install tags above do not apply to them, nor these to installs.
#: Success | Failed | TimedOut | Undeliverable (default Success): how a generic run ends. TimedOut: the script
#: never finishes, the agent stops it at the document's execution timeout.
RUN_OUTCOME = PREFIX + "run-outcome"
#: N, 0-255 (default 0, or 1 when RUN_OUTCOME is Failed): the script's exit code, the invocation's ResponseCode.
#: Not 0: the run ends Failed (with RUN_OUTCOME Success too); RUN_OUTCOME Failed with 0 exits 1.
RUN_EXIT_CODE = PREFIX + "run-exit-code"
#: Simulated seconds the script runs once delivered (default 1); real seconds = this x TIME_SCALE.
RUN_SECONDS = PREFIX + "run-seconds"
#: What the script prints on stdout; the two characters backslash and n stand for a newline. Default: one line
#: naming the host and the document (when RUN_OUTPUT_LINES is not set either).
RUN_OUTPUT = PREFIX + "run-output"
#: N: the script prints N numbered lines ("line 1 of N" ...), after RUN_OUTPUT if set (default 0, at most 100,000).
RUN_OUTPUT_LINES = PREFIX + "run-output-lines"
#: Real seconds per simulated second of a generic run (float, default 1): scales RUN_SECONDS and the document's
#: execution timeout alike, so a 40-minute command and a one-hour timeout take 24 and 36 s at 0.01.
TIME_SCALE = PREFIX + "time-scale"

ALL = (MANAGED, REGISTER_DELAY, PLATFORM, INSTALL_SECONDS, OUTCOME, FAIL_ATTEMPTS, INSTALLED, EXISTING,
       AGENT_VERSION, AGENT_UPDATE, AGENT_UPDATE_SECONDS, AGENT_UPDATE_TO, EXIT_CODE, AGENT_LOST,
       INSTALL_OUTPUT_LINES, DROP_RUNNING_EVENT, RUN_OUTCOME, RUN_EXIT_CODE, RUN_SECONDS, RUN_OUTPUT,
       RUN_OUTPUT_LINES, TIME_SCALE)

#: The security agent on an instance, as the install documents see it.
AGENT_RUNNING, AGENT_STOPPED, AGENT_ABSENT = "running", "stopped", "absent"

#: The current SSM Agent release: what a new instance runs, and the latest DescribeInstanceInformation knows of.
LATEST_AGENT_VERSION = "3.3.3050.0"
#: Parameters with interpolationType ENV_VAR need this agent or later.
ENV_VAR_MIN_AGENT_VERSION = "3.3.2746.0"
#: Default Host Management Configuration (an instance without a profile) needs this agent or later.
DHMC_MIN_AGENT_VERSION = "3.2.582.0"

DEFAULT_LINUX_PLATFORM = ("Linux", "Amazon Linux", "2023")
DEFAULT_WINDOWS_PLATFORM = ("Windows", "Microsoft Windows Server 2022 Datacenter", "10.0.20348")
OUTCOMES = ("Success", "Failed", "TimedOut", "Undeliverable")

#: How long after SendCommand the invocations stay invisible (ListCommandInvocations empty,
#: GetCommandInvocation InvocationDoesNotExist) and Pending, like real SSM right after a send.
INVISIBLE_SECONDS = 0.5


def tags_of(instance) -> dict:
    """Tags of a moto EC2 Instance as a plain dict."""
    return {t["key"]: t["value"] for t in instance.get_tags()}


def _float(value, default: float) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


def _int(value, default: int) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def is_managed(tags: dict) -> bool:
    return tags.get(MANAGED, "true").strip().lower() != "false"


def register_delay(tags: dict) -> float:
    return _float(tags.get(REGISTER_DELAY), 0.0)


def install_seconds(tags: dict) -> float:
    return _float(tags.get(INSTALL_SECONDS), 1.0)


def outcome(tags: dict) -> str:
    value = tags.get(OUTCOME, "Success")
    return value if value in OUTCOMES else "Success"


def fail_attempts(tags: dict) -> int:
    return _int(tags.get(FAIL_ATTEMPTS), 0)


def agent_at_launch(tags: dict) -> str:
    """AGENT_RUNNING, AGENT_STOPPED or AGENT_ABSENT, from the INSTALLED tag."""
    value = tags.get(INSTALLED, "").strip().lower()
    return {"true": AGENT_RUNNING, "stopped": AGENT_STOPPED}.get(value, AGENT_ABSENT)


def agent_lost(tags: dict) -> str | None:
    """What the AGENT_LOST tag leaves after the first install: AGENT_ABSENT, AGENT_STOPPED, or None."""
    value = tags.get(AGENT_LOST, "").strip().lower()
    return {"removed": AGENT_ABSENT, "stopped": AGENT_STOPPED}.get(value)


def install_output_lines(tags: dict) -> int:
    return min(_int(tags.get(INSTALL_OUTPUT_LINES), 0), 100_000)


def drops_running_event(tags: dict) -> bool:
    return tags.get(DROP_RUNNING_EVENT, "").strip().lower() == "true"


def platform(tags: dict, ec2_platform: str | None) -> tuple[str, str, str]:
    value = tags.get(PLATFORM)
    if value:
        parts = (value.split("|") + ["", "", ""])[:3]
        if parts[0] in ("Linux", "Windows", "MacOS"):
            return parts[0], parts[1], parts[2]
    return DEFAULT_WINDOWS_PLATFORM if (ec2_platform or "").lower() == "windows" else DEFAULT_LINUX_PLATFORM


def version_key(version: str) -> tuple[int, ...]:
    """Dotted version -> tuple of ints for numeric comparison ("3.3.10.0" > "3.3.9.0"); junk parts count as 0."""
    out = []
    for part in str(version or "").strip().split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return tuple(out)


def version_at_least(version: str, minimum: str) -> bool:
    return version_key(version) >= version_key(minimum)


def agent_version(tags: dict) -> str:
    return (tags.get(AGENT_VERSION) or "").strip() or LATEST_AGENT_VERSION


def agent_update_fails(tags: dict) -> bool:
    return tags.get(AGENT_UPDATE, "").strip().lower() == "fail"


def agent_update_seconds(tags: dict) -> float:
    return _float(tags.get(AGENT_UPDATE_SECONDS), 2.0)


def agent_update_to(tags: dict) -> str:
    return (tags.get(AGENT_UPDATE_TO) or "").strip() or LATEST_AGENT_VERSION


def exit_code(tags: dict) -> int | None:
    """The exit code of a failing install, or None (unset, 0 or not a number in 1-255)."""
    try:
        n = int(str(tags.get(EXIT_CODE, "")).strip())
    except ValueError:
        return None
    return n if 1 <= n <= 255 else None


def fail_attempts_set(tags: dict) -> bool:
    return FAIL_ATTEMPTS in tags


# ------------------------------------------------------------------------------------------- generic runs
def run_outcome(tags: dict) -> str:
    value = (tags.get(RUN_OUTCOME) or "").strip()
    return value if value in OUTCOMES else "Success"


def run_exit_code(tags: dict, outcome: str) -> int:
    """The exit code of a generic run that ends Success or Failed: the tag (0-255), else 0 (1 when Failed); a
    Failed run never exits 0."""
    try:
        code = int(str(tags.get(RUN_EXIT_CODE, "")).strip())
        if not 0 <= code <= 255:
            raise ValueError
    except ValueError:
        code = 1 if outcome == "Failed" else 0
    if outcome == "Failed" and code == 0:
        code = 1
    return code


def run_seconds(tags: dict) -> float:
    return _float(tags.get(RUN_SECONDS), 1.0)


def run_output(tags: dict) -> str | None:
    """The RUN_OUTPUT text with each backslash-n as a newline, or None when the tag is absent."""
    value = tags.get(RUN_OUTPUT)
    return None if value is None else value.replace("\\n", "\n")


def run_output_lines(tags: dict) -> int:
    return min(_int(tags.get(RUN_OUTPUT_LINES), 0), 100_000)


def time_scale(tags: dict) -> float:
    """Real seconds per simulated second (default 1; 0 makes a generic run instant)."""
    return _float(tags.get(TIME_SCALE), 1.0)
