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
#: "true": the agent is already installed and running; every install succeeds at once and says so.
INSTALLED = PREFIX + "installed"

# "true": the instance was running long before fleet-install was deployed (the fleet a rollout covers):
# RunInstances emits no "running" event for it and its launch time lies a week back.
EXISTING = PREFIX + "existing"
ALL = (MANAGED, REGISTER_DELAY, PLATFORM, INSTALL_SECONDS, OUTCOME, FAIL_ATTEMPTS, INSTALLED, EXISTING)

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


def already_installed(tags: dict) -> bool:
    return tags.get(INSTALLED, "false").strip().lower() == "true"


def platform(tags: dict, ec2_platform: str | None) -> tuple[str, str, str]:
    value = tags.get(PLATFORM)
    if value:
        parts = (value.split("|") + ["", "", ""])[:3]
        if parts[0] in ("Linux", "Windows", "MacOS"):
            return parts[0], parts[1], parts[2]
    return DEFAULT_WINDOWS_PLATFORM if (ec2_platform or "").lower() == "windows" else DEFAULT_LINUX_PLATFORM
