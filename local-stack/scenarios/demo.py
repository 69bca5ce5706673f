#!/usr/bin/env python3
"""`make demo`: fleet-install on the local stack, end to end.

1. brings the local stack up (moto extended, the Rust functions under cargo lambda watch, the SQS poller);
2. an existing fleet (running for a week, tagged team=web) and IAM roles: `fleet-install prereq`, `preview`;
3. a rollout over the existing fleet in waves with a canary, and during it an autoscaling burst of 1,100
   instances shaped like the write-up's fleet, whose `running` events flow EventBridge -> SQS -> trigger ->
   install executions; a live progress view (instances by state);
4. `fleet-install unmanaged`, then `fleet-install replay` of what failed;
5. a report by final state, platform and reason, also written to target/demo/report.json;
6. later, what events alone miss: running events lost, agents removed or stopped, profiles associated; then
   `fleet-install sweep --wait --verify-all` finds and fixes them, and `fleet-install compliance` shows the fleet;
7. any document across the fleet: `fleet-install run` of AWS-RunShellScript / AWS-RunPowerShellScript over
   team=web in waves, `output`, and a check that the install ledger did not change;
8. stops every process it started, also on Ctrl-C or failure.
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import requests  # noqa: E402

from fleet import OUTPUTS, Stack  # noqa: E402

RUN = [sys.executable, os.path.join(os.path.dirname(HERE), "emulator", "run.py")]
CLI = os.path.join(ROOT, "target", "debug", "fleet-install")
REPORT = os.path.join(ROOT, "target", "demo", "report.json")
TTY = sys.stderr.isatty()

# The write-up's fleet: (share, platform tag)
PLATFORMS = [
    (0.30, "Linux|Amazon Linux|2023"),
    (0.08, "Linux|Amazon Linux|2"),
    (0.12, "Linux|Red Hat Enterprise Linux Server|8.9"),
    (0.08, "Linux|CentOS Linux|7.9"),
    (0.05, "Linux|Fedora|39"),
    (0.17, "Linux|Ubuntu|22.04"),
    (0.03, "Linux|FreeBSD|14.1"),
    (0.17, "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348"),
]


FAMILIES = [("Amazon Linux", "Amazon Linux"), ("Red Hat", "RHEL"), ("CentOS", "CentOS"), ("Fedora", "Fedora"),
            ("Ubuntu", "Ubuntu"), ("FreeBSD", "FreeBSD"), ("Microsoft Windows", "Windows")]


def family(platform_name: str) -> str:
    """The label fleet-install's routing table gives a platform name (see fleet-core routing.rs)."""
    return next((label for prefix, label in FAMILIES if platform_name.startswith(prefix)), platform_name)


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def cli(stack: Stack, *args: str, check: bool = False) -> int:
    env = stack.operator_env()   # an operator's permissions: the stack's OperatorPolicy, nothing else
    argv = [CLI, "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS), *args]
    print("$ fleet-install " + " ".join(args), flush=True)
    rc = subprocess.run(argv, env=env).returncode
    if check and rc != 0:
        raise SystemExit(f"fleet-install {args[0]} failed with exit code {rc}")
    return rc


def behaviours(n: int, rng: random.Random) -> list[tuple[str, dict, bool]]:
    """(group, tags, has instance profile) for n instances, shaped like the write-up."""
    out = []
    for i in range(n):
        r = rng.random()
        plat = rng.choices([p for _, p in PLATFORMS], [w for w, _ in PLATFORMS])[0]
        tags = {"fleet-sim:platform": plat, "fleet-sim:install-seconds": str(rng.randint(1, 4))}
        profile = True
        if r < 0.05:
            group = "no instance profile"
            profile = False
        elif r < 0.07:
            group = "install fails (transient: replay fixes it)"
            tags["fleet-sim:fail-attempts"] = "3"
        elif r < 0.075:
            group = "install fails (permanent)"
            tags["fleet-sim:outcome"] = "Failed"
        elif r < 0.08:
            group = "install times out"
            tags["fleet-sim:outcome"] = "TimedOut"
        elif r < 0.16:
            group = "slow to register"
            tags["fleet-sim:register-delay"] = str(rng.randint(3, 10))
        elif r < 0.21:
            group = "agent already installed"
            tags["fleet-sim:installed"] = "true"
        elif r < 0.23:
            group = "opted out"
            tags["fleet-install:opt-out"] = "true"
        elif r < 0.235:
            group = "agent never registers"
            tags["fleet-sim:managed"] = "false"
        else:
            group = "normal"
        # SSM Agents of several ages, as real fleets have them (vendor AMIs, EMR releases, servers nobody
        # rebakes): 20 % too old for the install documents (ENV_VAR parameters need 3.3.2746.0), a few of
        # them even too old for Default Host Management (3.2.582.0); fleet-install updates them first.
        a = rng.random()
        if a < 0.17:
            tags["fleet-sim:agent-version"] = "3.3.1142.0"
        elif a < 0.20:
            tags["fleet-sim:agent-version"] = "3.1.1004.0"
        if a < 0.20 and rng.random() < 0.03:
            tags["fleet-sim:agent-update"] = "fail"
        out.append((group, tags, profile))
    return out


def launch(stack: Stack, specs, extra_tags: dict) -> dict[str, tuple[str, str]]:
    """Launch instances with identical tags together (an autoscaling group's RunInstances)."""
    buckets = collections.defaultdict(list)
    for group, tags, profile in specs:
        buckets[(group, json.dumps(tags, sort_keys=True), profile)].append(1)
    launched = {}
    for (group, tags_json, profile), members in buckets.items():
        tags = dict(json.loads(tags_json), **extra_tags)
        for iid in stack.launch(len(members), tags, profile):
            launched[iid] = (group, family(tags["fleet-sim:platform"].split("|")[1]))
    return launched


def progress(stack: Stack, ids: set[str], label: str, deadline: float, rollout_arn: str | None = None) -> None:
    last = 0.0
    while True:
        ledger = stack.ledger()
        states = collections.Counter(ledger[i]["state"] for i in ids if i in ledger)
        states["not yet seen"] = len(ids) - sum(states.values())
        agents = agent_counts(ledger, ids)
        ex = stack.executions()
        running = sum(e["status"] == "RUNNING" for e in ex)
        line = (f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()) if v)
                + f" | SSM Agent updates: {agents['updating']} running, {agents['updated']} done, {agents['tooOld']} too old"
                + f" | install executions running {running}/{len(ex)}")
        if rollout_arn:
            line += f" | rollout {stack.sfn.describe_execution(executionArn=rollout_arn)['status']}"
        if TTY:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif time.time() - last > 5:
            print(line, file=sys.stderr, flush=True)
            last = time.time()
        final = states.get("not yet seen", 0) == 0 and not states.get("installing") and not states.get("pending_registration")
        rollout_done = not rollout_arn or stack.sfn.describe_execution(executionArn=rollout_arn)["status"] != "RUNNING"
        if final and running == 0 and rollout_done:
            break
        if time.time() > deadline:
            raise SystemExit(f"\n{label}: not finished in time: {line}")
        time.sleep(2)
    if TTY:
        sys.stderr.write("\n")
    print(line, flush=True)


def agent_counts(ledger: dict, ids) -> dict:
    """SSM Agent updates as the ledger records them: sent and not done, done (agentUpdatedFrom), too old."""
    items = [ledger[i] for i in ids if i in ledger]
    return {
        "updating": sum(i.get("reasonCode") == "UpdatingAgent" for i in items),
        "updated": sum("agentUpdatedFrom" in i for i in items),
        "tooOld": sum(i.get("reasonCode") == "AgentTooOld" for i in items),
    }


def report(stack: Stack, fleets: dict[str, dict[str, tuple[str, str]]], seconds: float, calls: dict) -> dict:
    ledger = stack.ledger()
    instances, missing = [], []
    for fleet, members in fleets.items():
        for iid, (group, platform) in sorted(members.items()):
            item = ledger.get(iid)
            if item is None:
                missing.append(iid)
                continue
            instances.append({
                "instanceId": iid, "fleet": fleet, "scenario": group, "platform": platform,
                "state": item["state"], "reasonCode": item.get("reasonCode"), "reason": item.get("reason"),
                "attempts": int(item["attempts"]) if "attempts" in item else None, "commandId": item.get("commandId"),
                "executionArn": item.get("executionArn"), "agentUpdatedFrom": item.get("agentUpdatedFrom"),
            })
    by = lambda key: dict(sorted(collections.Counter(i[key] for i in instances).items()))  # noqa: E731
    by_platform = collections.defaultdict(collections.Counter)
    for i in instances:
        by_platform[i["platform"]][i["state"]] += 1
    by_reason = collections.Counter(i["reasonCode"] for i in instances if i["state"] != "installed")
    return {
        "instances": len(instances) + len(missing),
        "accountedFor": len(instances),
        "missing": missing,
        "byFleet": {f: len(m) for f, m in fleets.items()},
        "byState": by("state"),
        "byPlatform": {p: dict(sorted(c.items())) for p, c in sorted(by_platform.items())},
        "byReason": dict(by_reason.most_common()),
        "byScenario": {g: dict(collections.Counter(i["state"] for i in instances if i["scenario"] == g)) for g in sorted({i["scenario"] for i in instances})},
        "agentUpdates": {**agent_counts(ledger, [i["instanceId"] for i in instances]),
                         "installedAfterUpdate": sum(1 for i in instances if i["agentUpdatedFrom"] and i["state"] == "installed")},
        "seconds": round(seconds, 1),
        "apiCalls": calls,
        "detail": instances,
    }


def print_report(r: dict) -> None:
    say(f"Report: {r['accountedFor']} of {r['instances']} instances accounted for in the ledger ({r['seconds']} s)")
    print("\nBy final state")
    for k, v in r["byState"].items():
        print(f"  {k:<22}{v:>6}")
    print("\nBy platform")
    states = sorted({s for c in r["byPlatform"].values() for s in c})
    print("  " + f"{'platform':<16}" + "".join(f"{s:>12}" for s in states))
    for p, c in r["byPlatform"].items():
        print("  " + f"{p:<16}" + "".join(f"{c.get(s, 0):>12}" for s in states))
    a = r["agentUpdates"]
    print(f"\nSSM Agents too old for the install document: {a['updated']} updated with AWS-UpdateSSMAgent "
          f"({a['installedAfterUpdate']} of them then installed in the same run), {a['tooOld']} could not be updated (AgentTooOld)")
    print("\nWhy not installed")
    for k, v in r["byReason"].items():
        print(f"  {k:<22}{v:>6}")
    print(f"\nFull report: {os.path.relpath(REPORT, ROOT)}")


def sweep_and_compliance(stack: Stack, burst: dict[str, tuple[str, str]]) -> int:
    """What events alone miss, and the sweep that makes the ledger true again."""
    say("Later: EventBridge loses the running events of 30 new instances; a clean-up script removes the agent from "
        "10 installed instances and stops it on 5; an engineer gives 10 instances without a profile their profile")
    lost = stack.launch(30, {"team": "batch"}, drop_running_event=True)
    ledger = stack.ledger()
    installed = sorted(i for i in burst if ledger.get(i, {}).get("state") == "installed")
    removed, stopped = installed[:10], installed[10:15]
    stack.remove_agent(removed, "removed")
    stack.remove_agent(stopped, "stopped")
    # instances without a profile whose SSM Agent is recent enough (an old one would be updated first, and
    # a few of those updates fail by design: the sweep records them AgentTooOld, it cannot fix them)
    candidates = sorted(i for i, (group, _) in burst.items() if group == "no instance profile")
    tags = {i["InstanceId"]: {t["Key"] for t in i.get("Tags", [])}
            for r in stack.ec2.describe_instances(InstanceIds=candidates)["Reservations"] for i in r["Instances"]}
    bare = [i for i in candidates if "fleet-sim:agent-version" not in tags.get(i, set())][:10]
    for iid in bare:
        stack.associate_profile(iid)
    time.sleep(3)   # the longest register delay of the demo fleet's healthy agents
    say("A sweep (every 6 hours when deployed, here on demand): every running instance against the ledger, "
        "installed ones verified (--verify-all; by default once DriftCheckIntervalHours has passed)")
    rc = cli(stack, "sweep", "--wait", "--verify-all")
    say("Compliance: every running instance in exactly one bucket")
    cli(stack, "compliance", "--by", "reason")
    ledger = stack.ledger()
    agents = stack.agent_states(removed + stopped)
    unfixed = [i for i in lost + bare if ledger.get(i, {}).get("state") != "installed"]
    unfixed += [i for i in removed + stopped if agents.get(i) != "running"]
    if rc != 0 or unfixed:
        print(f"ERROR: the sweep left {len(unfixed)} of the instances it should fix unfixed "
              f"(sweep exit code {rc}): {unfixed[:10]}", file=sys.stderr)
        return 1
    print(f"\nThe sweep installed the {len(lost)} instances whose events were lost and the {len(bare)} that got a "
          f"profile, and put back the {len(removed)} removed and {len(stopped)} stopped agents.")
    return 0


def ad_hoc_run(stack: Stack) -> int:
    """Any document, the same machinery: a run over the existing fleet, its results apart from the ledger."""
    say("Any document across the fleet: a disk check on team=web, one document per platform family, in waves")
    web = {i["InstanceId"] for page in stack.ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:team", "Values": ["web"]}, {"Name": "instance-state-name", "Values": ["running"]}])
        for r in page["Reservations"] for i in r["Instances"]}
    before = {i: item for i, item in stack.ledger().items() if i in web}
    name = "run-demo-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    rc = cli(stack, "run", "--document", "linux=AWS-RunShellScript", "--document", "windows=AWS-RunPowerShellScript",
             "--parameter", "commands=df -h /", "--tag", "team=web", "--canary", "10", "--wave-percent", "50",
             "--max-failure-ratio", "0.05", "--name", name, "--wait")
    say("What the instances printed (the last lines; the full output is in CloudWatch Logs)")
    env = stack.operator_env()
    out = subprocess.run([CLI, "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS), "--output", "json",
                          "output", name], env=env, capture_output=True, text=True)
    results = json.loads(out.stdout)["results"] if out.returncode == 0 else []
    by = collections.Counter(r["outcome"] for r in results)
    print(f"$ fleet-install output {name}   ({len(results)} results: "
          + ", ".join(f"{n} {k}" for k, n in sorted(by.items())) + ")")
    after = {i: item for i, item in stack.ledger().items() if i in web}
    if rc != 0 or len(results) != len(web) or after != before:
        print(f"ERROR: the run exited {rc}, has {len(results)} results for {len(web)} targets, and "
              f"{'changed' if after != before else 'left'} the install ledger", file=sys.stderr)
        return 1
    print(f"\nThe run reached all {len(web)} targets; the install ledger of those instances is as it was.")
    return 0


def main() -> int:
    rng = random.Random(1100)
    started = False

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        say("Starting the local stack (moto on 127.0.0.1, the Rust functions under cargo lambda watch)")
        # The burst arrives within seconds: a 10 s batching window (180 s deployed) gathers it into a few executions.
        subprocess.run(RUN + ["up", "--build", "--param", "BatchWindowSeconds=10"], check=True, cwd=ROOT)
        started = True
        stack = Stack(f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5055')}")
        iam = __import__("boto3").client("iam", endpoint_url=stack.endpoint, region_name="us-east-1",
                                         aws_access_key_id="testing", aws_secret_access_key="testing")
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        for role in ("web-servers", "emr-instance-group", "airflow-workers"):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
        iam.attach_role_policy(RoleName="airflow-workers", PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")

        say("The existing fleet: 300 instances tagged team=web, running for a week")
        existing = launch(stack, behaviours(300, rng), {"team": "web", "fleet-sim:existing": "true"})
        say("Prerequisites: EC2 roles without the SSM policy")
        cli(stack, "prereq")
        cli(stack, "prereq", "--apply")
        say("Preview of the rollout")
        cli(stack, "preview", "--tag", "team=web", "--canary", "15", "--wave-percent", "50")

        stack.api_calls(reset=True)  # count only what the rollout and the burst cost
        t0 = time.time()
        say("Rollout over team=web: a canary of 15, waves of 50 %, failure budget 15 %, 2 s pauses")
        name = "rollout-demo-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        cli(stack, "rollout", "--tag", "team=web", "--canary", "15", "--wave-percent", "50",
            "--max-failure-ratio", "0.15", "--pause", "2", "--name", name, check=True)
        rollout_arn = stack.outputs["RolloutStateMachineArn"].replace(":stateMachine:", ":execution:") + ":" + name

        say("Meanwhile autoscaling launches 1,100 instances (the write-up's mix); their running events flow in")
        burst = launch(stack, behaviours(1100, rng), {"team": "batch"})
        progress(stack, set(existing) | set(burst), "instances", time.time() + 600, rollout_arn)
        cli(stack, "status", name)

        say("Unmanaged and skipped instances, with the reason and since when")
        cli(stack, "unmanaged")

        say("Replay: re-run only the instances the ledger marks failed")
        cli(stack, "replay", "--failed-since", datetime.datetime.fromtimestamp(t0 - 60, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        progress(stack, set(existing) | set(burst), "after replay", time.time() + 300)
        seconds = time.time() - t0

        r = report(stack, {"existing (rollout)": existing, "autoscaling burst": burst}, seconds, stack.api_calls())
        os.makedirs(os.path.dirname(REPORT), exist_ok=True)
        with open(REPORT, "w") as f:
            json.dump(r, f, indent=2)
        print_report(r)
        if r["missing"]:
            print(f"ERROR: {len(r['missing'])} instances are not in the ledger", file=sys.stderr)
            return 1
        return sweep_and_compliance(stack, burst) or ad_hoc_run(stack)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (subprocess.CalledProcessError, requests.RequestException) as ex:
        print(f"demo failed: {ex}", file=sys.stderr)
        return 1
    finally:
        if started or os.path.exists(os.path.join(os.path.dirname(str(OUTPUTS)), "pids")):
            subprocess.run(RUN + ["down"], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
