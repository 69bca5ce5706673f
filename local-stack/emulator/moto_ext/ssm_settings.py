"""SSM service settings (Default Host Management Configuration) and the AWS-owned documents AWS-UpdateSSMAgent,
AWS-RunShellScript and AWS-RunPowerShellScript.

moto 5.2.5 has neither. GetServiceSetting / UpdateServiceSetting / ResetServiceSetting answer for the DHMC setting
``/ssm/managed-instance/default-ec2-instance-management-role`` (also given as its full ARN), in botocore's
shapes: ``ServiceSetting {SettingId, SettingValue, LastModifiedDate, LastModifiedUser, ARN, Status}``; by
default ``Status: Default`` with SettingValue ``$None`` (what SSM answers for this unset setting; the model's
SettingValue has length 1 or more, so never ""), after an update ``Customized`` with the role name as the value.
Any other setting id: ``ServiceSettingNotFound``.

The AWS-owned documents exist in every SSM backend (owner ``Amazon``, version 1, schema 1.2, JSON), with AWS's own
content as GetDocument returns it (AWS-RunShellScript: the AWS CLI's get-document example; AWS-RunPowerShellScript:
the same parameters, as the SSM Agent's own test data shows the current document), so a caller that validates
parameters against GetDocument's ``parameters`` sees what it would see in AWS.

With the setting naming a role that exists in IAM (``name`` or ``path/name``, e.g.
``service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole``) and allows ssm:UpdateInstanceInformation,
ssm_agent registers instances without an instance profile that require IMDSv2 and run agent 3.2.582.0 or later
(see :func:`dhmc_role` and ssm_agent.dhmc_since).
"""

from __future__ import annotations

import datetime
import json
import re

from moto.core.responses import ActionResult
from moto.ssm.models import Document, Documents, SimpleSystemManagerBackend
from moto.ssm.responses import SimpleSystemManagerResponse as _Resp

from .ssm_agent import _Err, validation

DHMC_SETTING_ID = "/ssm/managed-instance/default-ec2-instance-management-role"
#: SettingValue of the unset (default) DHMC setting.
UNSET_VALUE = "$None"
SETTINGS = {DHMC_SETTING_ID}

UPDATE_AGENT_DOCUMENT = "AWS-UpdateSSMAgent"
UPDATE_AGENT_CONTENT = {
    "schemaVersion": "1.2",
    "description": "Updates the Amazon SSM Agent to the specified version or the latest version.",
    "parameters": {
        "version": {
            "default": "",
            "description": "(Optional) A specific version of the Amazon SSM Agent to install. If not specified, "
                           "the agent will be updated to the latest version.",
            "type": "String",
        },
        "allowDowngrade": {
            "default": "false",
            "description": "(Optional) Allow the Amazon SSM Agent service to be downgraded to an earlier version. "
                           "If set to false, the service can be upgraded to newer versions only (default). If set "
                           "to true, specify the earlier version.",
            "type": "String",
            "allowedValues": ["true", "false"],
        },
    },
    "runtimeConfig": {
        "aws:updateSsmAgent": {
            "properties": [{
                "agentName": "amazon-ssm-agent",
                "source": "https://s3.{Region}.amazonaws.com/amazon-ssm-{Region}/ssm-agent-manifest.json",
                "allowDowngrade": "{{ allowDowngrade }}",
                "targetVersion": "{{ version }}",
            }],
        },
    },
}


#: executionTimeout of AWS-RunShellScript and AWS-RunPowerShellScript: 1 to 172800 (48 hours), AWS's own pattern
#: (SSM matches allowedPattern against the whole value, so it needs no anchors).
EXECUTION_TIMEOUT_PATTERN = "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)"


def _run_script_content(plugin: str, description: str, commands: str, completed: str) -> dict:
    return {
        "schemaVersion": "1.2",
        "description": description,
        "parameters": {
            "commands": {
                "type": "StringList",
                "description": commands,
                "minItems": 1,
                "displayType": "textarea",
            },
            "workingDirectory": {
                "type": "String",
                "default": "",
                "description": "(Optional) The path to the working directory on your instance.",
                "maxChars": 4096,
            },
            "executionTimeout": {
                "type": "String",
                "default": "3600",
                "description": f"(Optional) The time in seconds for a command to {completed} before it is considered "
                               "to have failed. Default is 3600 (1 hour). Maximum is 172800 (48 hours).",
                "allowedPattern": EXECUTION_TIMEOUT_PATTERN,
            },
        },
        "runtimeConfig": {
            plugin: {
                "properties": [{
                    "id": f"0.{plugin}",
                    "runCommand": "{{ commands }}",
                    "workingDirectory": "{{ workingDirectory }}",
                    "timeoutSeconds": "{{ executionTimeout }}",
                }],
            },
        },
    }


RUN_SHELL_SCRIPT = "AWS-RunShellScript"
RUN_SHELL_SCRIPT_CONTENT = _run_script_content(
    "aws:runShellScript", "Run a shell script or specify the commands to run.",
    "(Required) Specify a shell script or a command to run.", "complete")
RUN_POWERSHELL_SCRIPT = "AWS-RunPowerShellScript"
RUN_POWERSHELL_SCRIPT_CONTENT = _run_script_content(
    "aws:runPowerShellScript", "Run a PowerShell script or specify the paths to scripts to run.",
    "(Required) Specify the commands to run or the paths to existing scripts on the instance.", "be completed")

#: name -> (content, PlatformTypes) of the AWS-owned documents every local SSM has.
AWS_DOCUMENTS = {
    UPDATE_AGENT_DOCUMENT: (UPDATE_AGENT_CONTENT, ["Windows", "Linux", "MacOS"]),
    RUN_SHELL_SCRIPT: (RUN_SHELL_SCRIPT_CONTENT, ["Linux", "MacOS"]),
    RUN_POWERSHELL_SCRIPT: (RUN_POWERSHELL_SCRIPT_CONTENT, ["Windows", "Linux"]),
}


def aws_document_text(content: dict) -> str:
    """The content as SSM stores AWS's JSON documents: 4-space indents, no space after a colon, a final newline."""
    return json.dumps(content, indent=4, separators=(",", ":")) + "\n"


def _add_aws_documents(backend: SimpleSystemManagerBackend) -> None:
    for name, (content, platforms) in AWS_DOCUMENTS.items():
        if name in backend._documents:
            continue
        doc = Document(account_id=backend.account_id, name=name, version_name=None,
                       content=aws_document_text(content), document_type="Command",
                       document_format="JSON", requires=[], attachments=[], target_type="/AWS::EC2::Instance")
        doc.owner = "Amazon"
        doc.platform_types = list(platforms)
        backend._documents[name] = Documents(doc)


# ---------------------------------------------------------------------------------------- service settings
def _settings(backend) -> dict:
    return backend.__dict__.setdefault("_fleet_settings", {})


def _setting_arn(backend, sid: str) -> str:
    return f"arn:aws:ssm:{backend.region_name}:{backend.account_id}:servicesetting{sid}"


def _canonical_id(backend, raw) -> str:
    if not raw:
        raise validation("1 validation error detected: Value null at 'settingId' failed to satisfy constraint: "
                         "Member must not be null")
    sid = str(raw)
    m = re.fullmatch(r"arn:aws:ssm:([^:]*):([^:]*):servicesetting(/.*)", sid)
    if m:
        if m.group(1) != backend.region_name or m.group(2) != backend.account_id:
            raise _Err("ServiceSettingNotFound", f"The service setting {sid} was not found.")
        sid = m.group(3)
    if sid not in SETTINGS:
        raise _Err("ServiceSettingNotFound", f"The service setting {raw} was not found.")
    return sid


def _caller_arn(resp) -> str:
    account = resp.current_account
    auth = resp.headers.get("Authorization") or ""
    m = re.search(r"Credential=([^/]+)/", auth)
    if m:
        key = m.group(1)
        try:
            from moto.sts.models import sts_backends

            for role in sts_backends[account]["aws"].assumed_roles:
                if role.access_key_id == key:
                    return role.arn
        except Exception:  # noqa: BLE001
            pass
        try:
            from moto.iam.models import iam_backends

            for user in iam_backends[account]["aws"].users.values():
                if any(k.access_key_id == key for k in user.access_keys):
                    return user.arn
        except Exception:  # noqa: BLE001
            pass
    return f"arn:aws:iam::{account}:root"


def _setting_view(backend, sid: str) -> dict:
    stored = _settings(backend).get(sid)
    view = {"SettingId": sid, "ARN": _setting_arn(backend, sid)}
    if stored:
        view.update({"SettingValue": stored["value"], "LastModifiedDate": stored["modified"],
                     "LastModifiedUser": stored["user"], "Status": "Customized"})
    else:
        reset = _settings(backend).get(("reset", sid))
        view.update({"SettingValue": UNSET_VALUE,
                     "LastModifiedDate": reset["modified"] if reset else datetime.datetime(2023, 1, 1),
                     "LastModifiedUser": reset["user"] if reset else "System", "Status": "Default"})
    return view


def get_service_setting(self):
    backend = self.ssm_backend
    sid = _canonical_id(backend, self._get_param("SettingId"))
    return ActionResult({"ServiceSetting": _setting_view(backend, sid)})


def update_service_setting(self):
    backend = self.ssm_backend
    sid = _canonical_id(backend, self._get_param("SettingId"))
    value = self._get_param("SettingValue")
    if value is None or not 1 <= len(str(value)) <= 4096:
        raise validation("1 validation error detected: Value at 'settingValue' failed to satisfy constraint: "
                         "Member must have length between 1 and 4096")
    _settings(backend)[sid] = {"value": str(value), "modified": datetime.datetime.now(datetime.timezone.utc),
                               "user": _caller_arn(self)}
    return ActionResult({})


def reset_service_setting(self):
    backend = self.ssm_backend
    sid = _canonical_id(backend, self._get_param("SettingId"))
    _settings(backend).pop(sid, None)
    _settings(backend)[("reset", sid)] = {"modified": datetime.datetime.now(datetime.timezone.utc),
                                          "user": _caller_arn(self)}
    return ActionResult({"ServiceSetting": _setting_view(backend, sid)})


def dhmc_role(ssm_backend) -> str | None:
    """The role DHMC gives instances without a profile: the setting's value, if such a role exists in IAM."""
    stored = _settings(ssm_backend).get(DHMC_SETTING_ID)
    if not stored:
        return None
    value = stored["value"].strip().strip("/")
    if not value or value == UNSET_VALUE:
        return None
    name = value.split("/")[-1]
    path = "/" + "/".join(value.split("/")[:-1]) + "/" if "/" in value else None
    try:
        from moto.iam.models import iam_backends

        role = iam_backends[ssm_backend.account_id]["aws"].get_role(name)
    except Exception:  # noqa: BLE001
        return None
    if path and role.path != path:
        return None
    return role.name


def dhmc_set_at(ssm_backend) -> float:
    """When the DHMC setting was last updated (epoch seconds; 0.0 if never)."""
    stored = _settings(ssm_backend).get(DHMC_SETTING_ID)
    return stored["modified"].timestamp() if stored else 0.0


def install() -> None:
    orig_init = SimpleSystemManagerBackend.__init__

    def __init__(self, region_name, account_id):
        orig_init(self, region_name, account_id)
        _add_aws_documents(self)

    SimpleSystemManagerBackend.__init__ = __init__
    _Resp.get_service_setting = get_service_setting
    _Resp.update_service_setting = update_service_setting
    _Resp.reset_service_setting = reset_service_setting
