"""When the simulated SSM Agent of an instance has credentials that let it register, and since when.

A real agent registers (ssm:UpdateInstanceInformation) with the credentials of the instance profile's role, or,
without a profile, of the Default Host Management Configuration role. Without usable credentials it keeps
retrying; once they appear (a profile associated to the running instance, AmazonSSMManagedInstanceCore attached
to its role, the role added to its profile, DHMC turned on) it registers on its next attempt. The simulation
registers the instance `fleet-sim:register-delay` seconds after the later of its launch and that moment
(ssm_agent.registration).

The role must allow REGISTER_ACTION (evaluated with iam_ext's policy evaluation, whether or not IAM enforcement
is on). Decisions are kept per role on the IAM backend (so /moto-api/reset clears them) and recomputed whenever
IAM changes a role's policies, so that the moment a role became usable is known: {role name: [allowed, since]},
since 0.0 for a role that already allowed it when first looked at.
"""

from __future__ import annotations

import inspect
import threading
import time

#: The call a registering agent makes; AmazonSSMManagedInstanceCore and AmazonSSMManagedEC2InstanceDefaultPolicy
#: allow it on "*".
REGISTER_ACTION = "ssm:UpdateInstanceInformation"

_lock = threading.RLock()


def _iam(account: str):
    from moto.iam.models import iam_backends

    return iam_backends[account]["aws"]


def _roles(iam) -> dict:
    return iam.__dict__.setdefault("_fleet_role_ssm", {})


def _allows_now(account: str, role_name: str) -> bool:
    from . import iam_ext

    try:
        docs = iam_ext.role_policy_documents(account, role_name)
    except Exception:  # noqa: BLE001 - no such role (any more)
        return False
    return iam_ext.evaluate(docs, REGISTER_ACTION, "*", {}) == iam_ext.Decision.ALLOW


def role_allows(account: str, role_name: str) -> tuple[bool, float]:
    """(the role allows REGISTER_ACTION now, since when: epoch seconds, 0.0 when it always did)."""
    iam = _iam(account)
    roles = _roles(iam)
    entry = roles.get(role_name)
    if entry is None:
        with _lock:
            entry = roles.setdefault(role_name, [_allows_now(account, role_name), 0.0])
    return entry[0], entry[1]


def _recheck(account: str, role_names, now: float) -> None:
    iam = _iam(account)
    roles = _roles(iam)
    with _lock:
        for name in role_names:
            entry = roles.get(name)
            allowed = _allows_now(account, name)
            if entry is None:
                roles[name] = [allowed, now if allowed else 0.0]
            elif allowed and not entry[0]:
                entry[:] = [True, now]
            elif not allowed:
                entry[:] = [False, 0.0]


def _profiles(iam) -> dict:
    """instance profile name -> when a role was last added to it (epoch seconds)."""
    return iam.__dict__.setdefault("_fleet_profile_roles", {})


# ----------------------------------------------------------------------------------------------- per instance
def profile_since(ec2_backend, instance) -> float | None:
    """Since when the instance's profile gives its agent credentials that may register, or None."""
    assoc = getattr(ec2_backend, "iam_instance_profile_associations", {}).get(instance.id)
    if assoc is None:
        return None
    profile = assoc.iam_instance_profile
    roles = list(getattr(profile, "roles", None) or [])
    if not roles:
        return None
    allowed, since = role_allows(ec2_backend.account_id, roles[0].name)
    if not allowed:
        return None
    added = _profiles(_iam(ec2_backend.account_id)).get(profile.name, 0.0)
    return max(getattr(assoc, "_fleet_at", 0.0), since, added)


def associated_at(instance) -> float:
    """When a profile association of this instance was made: its launch for a profile given at RunInstances."""
    from .ssm_agent import launch_epoch

    if getattr(instance, "_fleet_profile_at_launch", False):
        instance._fleet_profile_at_launch = False
        return launch_epoch(instance)
    return time.time()


# ------------------------------------------------------------------------------------------------------ hooks
def _bound(fn, args, kwargs) -> dict:
    sig = inspect.signature(fn)
    bound = sig.bind_partial(*args, **kwargs)
    return dict(bound.arguments)


def _role_hook(fn, role_param: str = "role_name"):
    def wrapper(self, *args, **kwargs):
        name = _bound(fn, (self, *args), kwargs).get(role_param)
        if name:
            role_allows(self.account_id, name)      # the state before, for a role not looked at yet
        out = fn(self, *args, **kwargs)
        if name:
            _recheck(self.account_id, [name], time.time())
        return out
    wrapper.__name__ = fn.__name__
    return wrapper


def _policy_hook(fn):
    """A managed policy's default version changed: every role looked at so far may have changed."""
    def wrapper(self, *args, **kwargs):
        before = list(_roles(self))
        for name in before:
            role_allows(self.account_id, name)
        out = fn(self, *args, **kwargs)
        _recheck(self.account_id, before, time.time())
        return out
    wrapper.__name__ = fn.__name__
    return wrapper


def install() -> None:
    from moto.ec2.models.iam_instance_profile import IamInstanceProfileAssociationBackend
    from moto.iam.models import IAMBackend

    for name in ("attach_role_policy", "detach_role_policy", "put_role_policy", "delete_role_policy"):
        setattr(IAMBackend, name, _role_hook(getattr(IAMBackend, name)))
    for name in ("create_policy_version", "set_default_policy_version"):
        setattr(IAMBackend, name, _policy_hook(getattr(IAMBackend, name)))

    orig_delete_role = IAMBackend.delete_role

    def delete_role(self, role_name):
        out = orig_delete_role(self, role_name)
        _roles(self).pop(role_name, None)
        return out

    IAMBackend.delete_role = delete_role

    orig_add = IAMBackend.add_role_to_instance_profile

    def add_role_to_instance_profile(self, profile_name, role_name):
        out = orig_add(self, profile_name, role_name)
        _profiles(self)[profile_name] = time.time()
        return out

    IAMBackend.add_role_to_instance_profile = add_role_to_instance_profile

    orig_associate = IamInstanceProfileAssociationBackend.associate_iam_instance_profile
    orig_replace = IamInstanceProfileAssociationBackend.replace_iam_instance_profile_association

    def associate_iam_instance_profile(self, instance_id, iam_instance_profile_name=None,
                                       iam_instance_profile_arn=None):
        assoc = orig_associate(self, instance_id, iam_instance_profile_name=iam_instance_profile_name,
                               iam_instance_profile_arn=iam_instance_profile_arn)
        assoc._fleet_at = associated_at(assoc.instance) if assoc.instance is not None else time.time()
        return assoc

    def replace_iam_instance_profile_association(self, association_id, iam_instance_profile_name=None,
                                                 iam_instance_profile_arn=None):
        assoc = orig_replace(self, association_id, iam_instance_profile_name=iam_instance_profile_name,
                             iam_instance_profile_arn=iam_instance_profile_arn)
        assoc._fleet_at = time.time()
        return assoc

    IamInstanceProfileAssociationBackend.associate_iam_instance_profile = associate_iam_instance_profile
    IamInstanceProfileAssociationBackend.replace_iam_instance_profile_association = \
        replace_iam_instance_profile_association
