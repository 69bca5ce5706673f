"""Contract tests: the names that tie template.yaml, the ASL, the Rust crates and the SSM
documents together. Each test reads the real files, so renaming something on one side only
fails here."""
import re

import pytest

from project import ROOT, load_asl, load_document, load_template, rust_const_strings, rust_error_types, workspace_members

FUNCTION_TYPE = "AWS::Serverless::Function"
STATE_MACHINE_TYPE = "AWS::Serverless::StateMachine"
LAMBDA_ERRORS = {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"}


def functions(template):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == FUNCTION_TYPE}


def state_machines(template):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == STATE_MACHINE_TYPE}


def all_states(asl):
    """Every state, including those nested in Map and Parallel states."""
    out = {}
    for name, state in asl["States"].items():
        out[name] = state
        for branch in state.get("Branches", []):
            out.update(all_states(branch))
        proc = state.get("ItemProcessor") or state.get("Iterator")
        if proc:
            out.update(all_states(proc))
    return out


def placeholders(text):
    return set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))


def asl_files(template):
    for name, sm in state_machines(template).items():
        yield name, sm, ROOT / sm["Properties"]["DefinitionUri"]


def test_every_function_is_a_workspace_crate_with_a_main(template):
    members = set(workspace_members())
    fns = functions(template)
    assert len(fns) >= 8
    for name, fn in fns.items():
        code_uri = fn["Properties"]["CodeUri"]
        assert code_uri in members, f"{name}: CodeUri {code_uri} is not a workspace member"
        assert (ROOT / code_uri / "src" / "main.rs").is_file(), f"{name}: {code_uri} has no src/main.rs"
        assert fn.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda", name


def test_every_function_crate_is_deployed(template):
    deployed = {fn["Properties"]["CodeUri"] for fn in functions(template).values()}
    crates = {m for m in workspace_members() if m.startswith("functions/") and (ROOT / m / "src" / "main.rs").is_file()}
    assert crates == deployed


def test_asl_placeholders_match_substitutions_both_ways(template):
    for name, sm, path in asl_files(template):
        used = placeholders(path.read_text())
        declared = set(sm["Properties"]["DefinitionSubstitutions"])
        assert used - declared == set(), f"{path.name}: used but not substituted by {name}"
        assert declared - used == set(), f"{name}: substituted but never used in {path.name}"


def test_every_task_resource_is_a_function_of_the_template(template):
    fns = functions(template)
    for name, sm, path in asl_files(template):
        subs = sm["Properties"]["DefinitionSubstitutions"]
        asl = load_asl(path)
        tasks = {k: v for k, v in all_states(asl).items() if v["Type"] == "Task"}
        assert tasks, "no Task states"
        for state_name, state in tasks.items():
            m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\}", state["Resource"])
            if not m:
                continue  # a service integration, checked elsewhere
            value = subs[m.group(1)]
            assert isinstance(value, dict) and "Fn::GetAtt" in value, f"{state_name}: {m.group(1)} is not a GetAtt"
            target = value["Fn::GetAtt"]
            target = target.split(".")[0] if isinstance(target, str) else target[0]
            assert target in fns, f"{state_name}: {target} is not a function in template.yaml"
            policies = str(sm["Properties"].get("Policies", ""))
            assert target in policies, f"{name} may not invoke {target}"


def test_custom_error_names_are_ones_the_functions_return(template):
    returned = rust_error_types()
    assert "FleetInstall.Throttled" in returned
    for _, _, path in asl_files(template):
        for state_name, state in all_states(load_asl(path)).items():
            for clause in state.get("Retry", []) + state.get("Catch", []):
                for err in clause["ErrorEquals"]:
                    if err.startswith(("States.", "StepFunctions.")) or err in LAMBDA_ERRORS:
                        continue  # raised by Step Functions or the service integration, not by our code
                    assert err in returned, f"{state_name}: ErrorEquals {err!r} is not an errorType any function returns"
            if state["Type"] == "Fail" and "Error" in state:
                assert state["Error"].startswith("FleetInstall."), f"{state_name}: Fail error outside the namespace"


def lambda_tasks(asl):
    return {
        n: st
        for n, st in all_states(asl).items()
        if st["Type"] == "Task" and re.fullmatch(r"\$\{[A-Za-z0-9]+FunctionArn\}", st["Resource"])
    }


def catch_targets(asl: dict) -> set[str]:
    """Names of the states that some Catch of the machine (or of a Map's processor) leads to."""
    out = set()

    def walk(states: dict):
        for s in states.values():
            out.update(c["Next"] for c in s.get("Catch", []))
            proc = s.get("ItemProcessor") or s.get("Iterator")
            if proc:
                walk(proc["States"])
    walk(asl["States"])
    return out


def test_every_lambda_task_retries_transient_errors_with_jitter_and_catches(template):
    returned = rust_error_types()
    for _, _, path in asl_files(template):
        asl = load_asl(path)
        assert "TimeoutSeconds" in asl, path.name
        tasks = lambda_tasks(asl)
        assert tasks, path.name
        for state_name, state in tasks.items():
            retried = {e for r in state.get("Retry", []) for e in r["ErrorEquals"]}
            assert LAMBDA_ERRORS <= retried, f"{path.name}: {state_name}: standard Lambda retry missing"
            assert {"FleetInstall.Throttled", "FleetInstall.Transient"} <= retried & returned, state_name
            assert all(r.get("JitterStrategy") == "FULL" for r in state["Retry"]), state_name
            assert "TimeoutSeconds" in state, state_name
            # The state every Catch leads to records the failure itself; a Catch there would loop.
            if state_name not in catch_targets(asl):
                catches = state.get("Catch", [])
                assert catches and catches[-1]["ErrorEquals"] == ["States.ALL"], f"{path.name}: {state_name}: no Catch"


def test_install_failures_are_recorded_in_the_ledger(asl):
    for state_name, state in lambda_tasks(asl).items():
        if state_name == "Record Workflow Failure":
            continue
        catch = state["Catch"][-1]
        assert catch["Next"] == "Record Workflow Failure", state_name
        assert catch["Assign"]["failedState"] == state_name, f"{state_name}: Catch records the wrong state name"


def test_resume_after_redrive_can_reach_every_failing_step(asl):
    states = all_states(asl)
    resumable = {c["Next"] for c in states["Resume Failed Step"]["Choices"]}
    catching = {n for n, s in states.items() if s.get("Catch")}
    assert catching == resumable


@pytest.mark.parametrize("asl_name", ["install.asl.json", "rollout.asl.json", "sweep.asl.json"])
def test_state_names_read_as_actions_and_choices_as_questions(asl_name):
    for name, state in all_states(load_asl(ROOT / "statemachine" / asl_name)).items():
        assert name[0].isupper() and all(w[0].isupper() for w in name.split()), f"{name!r} is not Title Case"
        if state["Type"] == "Choice":
            assert name.endswith("?") or name.startswith("Resume"), f"Choice {name!r} should read as a question"


# --- documents ---------------------------------------------------------------------------

DOCS = {"linux": "install-agent-linux.yml", "windows": "install-agent-windows.yml"}
PASSED = {
    "linux": rust_const_strings(ROOT / "functions/fleet-core/src/routing.rs", "LINUX_PARAMETERS"),
    "windows": rust_const_strings(ROOT / "functions/fleet-core/src/routing.rs", "WINDOWS_PARAMETERS"),
}


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_every_parameter_send_command_passes_exists_in_the_document(kind):
    doc = load_document(DOCS[kind])
    declared = set(doc["parameters"])
    passed = set(PASSED[kind])
    assert passed - declared == set(), f"{DOCS[kind]} lacks parameters send-command passes"
    required = {k for k, v in doc["parameters"].items() if "default" not in v}
    assert required - passed == set(), f"{DOCS[kind]} requires parameters send-command never passes"


def test_config_builds_exactly_the_parameters_the_routing_table_declares():
    config = (ROOT / "functions/fleet-core/src/config.rs").read_text()
    for kind, names in PASSED.items():
        for name in names:
            assert f'"{name}"' in config, f"config.rs never sets {kind} parameter {name}"


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_documents_are_safe(kind):
    doc = load_document(DOCS[kind])
    assert str(doc["schemaVersion"]) == "2.2"
    for name, p in doc["parameters"].items():
        assert p.get("allowedPattern"), f"{name} has no allowedPattern"
    text = (ROOT / "documents" / DOCS[kind]).read_text()
    for step in doc["mainSteps"]:
        script = "\n".join(step["inputs"]["runCommand"])
        assert "{{" not in script, f"{step['name']}: a parameter is pasted into the script"
        code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())
        for bad in (r"^\s*(sudo\s+)?(reboot|shutdown|init\s+6)\b", r"Restart-Computer", r"\bexit\s+(194|3010|1641)\b", r"shutdown(\.exe)?\s+/r"):
            assert not re.search(bad, code, re.M | re.I), f"{step['name']} may reboot: {bad}"
    assert "interpolationType: ENV_VAR" in text


def test_template_defaults_satisfy_the_documents_patterns(template):
    """What a deploy with default parameters sends must pass the document's own validation."""
    params = template["Parameters"]
    linux = load_document(DOCS["linux"])["parameters"]
    windows = load_document(DOCS["windows"])["parameters"]
    pairs = [
        (linux, "InstallerUrlRpm", "InstallerUrlRpm"), (linux, "InstallerSha256Rpm", "InstallerSha256Rpm"),
        (linux, "InstallerUrlDeb", "InstallerUrlDeb"), (linux, "InstallerSha256Deb", "InstallerSha256Deb"),
        (linux, "InstallerUrlFreeBsd", "InstallerUrlFreeBsd"), (linux, "InstallerSha256FreeBsd", "InstallerSha256FreeBsd"),
        (linux, "ServiceName", "AgentServiceNameLinux"), (windows, "ServiceName", "AgentServiceNameWindows"),
        (windows, "InstallerUrl", "InstallerUrlWindows"), (windows, "InstallerSha256", "InstallerSha256Windows"),
        (linux, "ExecutionTimeoutSeconds", "CommandExecutionTimeoutSeconds"),
    ]
    for doc_params, doc_name, tpl_name in pairs:
        pattern = doc_params[doc_name]["allowedPattern"]
        default = str(params[tpl_name]["Default"])
        assert re.fullmatch(pattern.removeprefix("^").removesuffix("$"), default), f"{tpl_name} default {default!r} fails {doc_name}'s pattern"


# --- environment -------------------------------------------------------------------------

ENV_CALL = re.compile(r'(?:required|optional|number(?:::<[^>]+>)?)\(\s*&?[A-Za-z_:]+,\s*"([A-Z0-9_]+)"')


def source(path):
    """A Rust file without its test module."""
    return path.read_text().split("#[cfg(test)]")[0]


def env_vars_read(crate):
    names = set()
    for path in (ROOT / "functions" / crate / "src").glob("*.rs"):
        names |= set(ENV_CALL.findall(source(path)))
    if crate == "group-by-platform":
        config = source(ROOT / "functions/fleet-core/src/config.rs")
        names |= set(ENV_CALL.findall(config))
        names |= set(re.findall(r'\("[A-Za-z0-9]+", "([A-Z0-9_]+)"\)', config))
        names |= {"LINUX_DOCUMENT_NAME", "WINDOWS_DOCUMENT_NAME"}
    return names


PURE_FUNCTIONS = {"evaluate-wave"}


def test_every_environment_variable_a_function_reads_is_set_by_the_template(template):
    optional_ok = {"STALE_CLAIM_SECONDS"}
    for name, fn in functions(template).items():
        crate = fn["Properties"]["CodeUri"].split("/")[-1]
        env = set(fn["Properties"].get("Environment", {}).get("Variables", {}))
        env |= set(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
        read = env_vars_read(crate)
        if crate in PURE_FUNCTIONS:
            assert not read, f"{crate} is pure logic but reads {read}"
            continue
        assert read, f"{crate} reads no environment variables?"
        missing = read - env - optional_ok
        assert not missing, f"{name} ({crate}) reads {sorted(missing)} but template.yaml does not set them"


def test_trigger_matches_the_brief(template):
    res = template["Resources"]
    queue = res["InstallQueue"]["Properties"]
    assert "RedrivePolicy" in queue
    trigger = next(f for f in functions(template).values() if f["Properties"]["CodeUri"].endswith("start-install"))
    event = next(iter(trigger["Properties"]["Events"].values()))
    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert template["Parameters"]["QueueDelaySeconds"]["Default"] in (180, "180")
    assert template["Parameters"]["BatchWindowSeconds"]["Default"] in (180, "180")


# --- SSM Agent version and exit codes (routing.rs's DocumentSpec and EXIT_CODES) ----------------------

ROUTING = ROOT / "functions/fleet-core/src/routing.rs"


def script_exit_codes(kind):
    """The exit codes listed in a document script's "Exit codes" comment."""
    doc = load_document(DOCS[kind])
    script = "\n".join("\n".join(step["inputs"]["runCommand"]) for step in doc["mainSteps"])
    block = script.split("Exit codes", 1)[1].splitlines()[1:]
    codes = set()
    for line in block:
        if not line.strip().startswith("#"):
            break
        m = re.match(r"\s*#\s+(\d+)\s", line)
        if m:
            codes.add(int(m.group(1)))
    return codes


def rust_exit_codes():
    text = ROUTING.read_text()
    block = re.search(r"pub const EXIT_CODES: &\[ExitCode\] = &\[(.*?)\n\];", text, re.S).group(1)
    codes = [int(c) for c in re.findall(r"\bcode: (\d+),", block)]
    linux = int(re.search(r"const LINUX_EXIT_CODES: &\[ExitCode\] = EXIT_CODES\.split_at\((\d+)\)\.0;", text).group(1))
    return {"linux": set(codes[:linux]), "windows": set(codes)}


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_every_exit_code_a_document_returns_has_its_meaning_in_the_routing_table(kind):
    """0 is success and 1 (Windows: an unexpected error) stays a generic, retried failure; every other code
    the script documents is mapped, and nothing is mapped that the script does not return."""
    documented = script_exit_codes(kind) - {0, 1}
    assert documented, f"{DOCS[kind]}: no exit codes found in its script"
    assert rust_exit_codes()[kind] == documented


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_the_documents_minimum_agent_is_the_routing_tables(kind):
    minimum = re.search(r'pub const ENV_VAR_MIN_AGENT_VERSION: &str = "([^"]+)";', ROUTING.read_text()).group(1)
    text = (ROOT / "documents" / DOCS[kind]).read_text()
    assert "interpolationType: ENV_VAR" in text
    assert f"SSM Agent {minimum}" in text, f"{DOCS[kind]} does not name SSM Agent {minimum}"


def test_auto_update_ssm_agent_is_a_true_false_switch_read_by_filter_managed(template):
    p = template["Parameters"]["AutoUpdateSsmAgent"]
    assert p["AllowedValues"] == ["true", "false"] and p["Default"] == "true"
    env = template["Resources"]["FilterManagedFunction"]["Properties"]["Environment"]["Variables"]
    assert env["AUTO_UPDATE_SSM_AGENT"] == {"Ref": "AutoUpdateSsmAgent"}


def test_agent_updates_travel_through_the_workflow(asl):
    """An instance whose agent is updated goes back through Filter Managed Instances in the same execution:
    check-status returns it in `pending` and the update's time in `agentUpdated`, which filter-managed reads."""
    states = all_states(asl)
    assert states["Load Settings"]["Assign"]["agentUpdated"] == []
    assert states["Filter Managed Instances"]["Parameters"]["agentUpdated.$"] == "$agentUpdated"
    assert states["Group By Platform"]["Parameters"]["agentUpdate.$"] == "$.agentUpdate"
    newly = states["Anything Newly Resolved?"]["Choices"][0]["Or"]
    assert {"Variable": "$.agentUpdate[0]", "IsPresent": True} in newly
    check = states["Check Command Status"]
    assert check["Parameters"]["pending.$"] == "$pending"
    assert check["Parameters"]["agentUpdated.$"] == "$agentUpdated"
    assert check["Assign"]["pending.$"] == "$.pending"
    assert check["Assign"]["pendingCount.$"] == "States.ArrayLength($.pending)"
    assert check["Assign"]["agentUpdated.$"] == "$.agentUpdated"
    # pending instances are looked at again by Filter Managed Instances
    left = {c["Variable"]: c["Next"] for c in states["Anything Left To Do?"]["Choices"] if "Variable" in c}
    assert states[left["$pendingCount"]]["Next"] == "Filter Managed Instances"


def test_failures_to_resend_go_out_with_the_round_that_looks_at_pending_instances(asl):
    """Fewer rounds: when failures wait for a resend and instances are pending (registering, or their agent was
    just updated), one round does both: it waits the retry backoff, looks at the pending instances, and Send
    Install Commands sends their batches and the failures together, then clears the retry list. Failures alone
    still go the short way (Wait Before Retry, Resend Failed Instances)."""
    states = all_states(asl)
    choices = states["Anything Left To Do?"]["Choices"]
    both = [c for c in choices if "And" in c]
    assert len(both) == 1, choices
    (merged,) = both
    assert {a["Variable"] for a in merged["And"]} == {"$retryCount", "$pendingCount"}
    assert all(a["NumericGreaterThan"] == 0 for a in merged["And"])
    # the merged round is tested before failures alone, and waits the backoff
    order = [c.get("Variable") or "and" for c in choices]
    assert order.index("and") < order.index("$retryCount") < order.index("$pendingCount"), order
    assert merged["Assign"] == {"roundWaitSeconds.$": "$backoffSeconds"}
    pending_only = next(c for c in choices if c.get("Variable") == "$pendingCount")
    assert pending_only["Assign"] == {"roundWaitSeconds.$": "$registrationPollSeconds"}
    assert merged["Next"] == pending_only["Next"] == "Wait For Registration"
    assert states["Wait For Registration"]["SecondsPath"] == "$roundWaitSeconds"
    assert "roundWaitSeconds.$" in states["Load Settings"]["Assign"]
    # the round goes on to the send even when no pending instance resolved, if failures wait
    newly = states["Anything Newly Resolved?"]["Choices"][0]["Or"]
    assert {"Variable": "$retryCount", "NumericGreaterThan": 0} in newly
    send = states["Send Install Commands"]
    assert send["Parameters"]["retry.$"] == "$retry"
    assert send["Assign"]["retry"] == [] and send["Assign"]["retryCount"] == 0
    # send-command reads the field (functions/send-command: Request.retry)
    src = (ROOT / "functions" / "send-command" / "src" / "handler.rs").read_text()
    assert "pub retry: Vec<Batch>" in src


def test_completion_events_can_write_outcomes_because_the_sends_and_the_wait_pass_the_attempts(asl):
    """A command's completion event writes its instances' outcomes (fleet_core::outcome) only when its pointer
    keeps the command as sent, the execution's start and the attempts allowed: send-command writes it when
    given maxAttempts, and Wait For Commands passes the same to await-commands."""
    states = all_states(asl)
    for name in ("Send Install Commands", "Resend Failed Instances"):
        assert states[name]["Parameters"]["maxAttempts.$"] == "$maxAttempts", name
    payload = states["Wait For Commands"]["Parameters"]["Payload"]
    assert payload["maxAttempts.$"] == "$maxAttempts"
    assert payload["executionStartTime.$"] == "$$.Execution.StartTime"
    assert payload["commands.$"] == "$commands"
    send = (ROOT / "functions" / "send-command" / "src" / "handler.rs").read_text()
    wait = (ROOT / "functions" / "await-commands" / "src" / "handler.rs").read_text()
    assert "pub max_attempts: Option<u32>" in send
    assert "max_attempts: Option<u32>" in wait and "execution_start_time: String" in wait


def test_deployed_timeouts_let_a_run_command_last_48_hours_and_no_lambda_waits_for_it(template):
    """`fleet-install run --execution-timeout` goes up to 48 hours: the run workflow and the rollout around it
    must outlast that plus the delivery timeout and the workflow's own give-up margin, while every Lambda task
    stays short (the waiting is the workflow's Wait state)."""
    run = load_asl(ROOT / "statemachine" / "run.asl.json")
    rollout = load_asl(ROOT / "statemachine" / "rollout.asl.json")
    delivery = template["Parameters"]["CommandDeliveryTimeoutSeconds"]["Default"]
    longest = 172_800 + int(delivery) + 600
    assert run["TimeoutSeconds"] >= longest, run["TimeoutSeconds"]
    assert rollout["TimeoutSeconds"] >= run["TimeoutSeconds"]
    assert run["States"]["Wait For Commands"]["Type"] == "Wait"
    assert run["States"]["All Commands Finished?"]["Choices"][0]["Next"] == "Wait For Commands"
    fn_timeout = template["Resources"]["RunCommandFunction"]["Properties"]["Timeout"]
    for name, state in run["States"].items():
        if state["Type"] == "Task":
            assert state["TimeoutSeconds"] <= fn_timeout <= 300, name


def test_install_commands_are_awaited_on_completion_events_with_a_fallback_check(template):
    """Wait For Commands waits on a task token that await-commands resumes on SSM's completion events; the rule
    sends exactly the final statuses fleet-core's completion module treats as final; the wait's bound is
    derived from the commands' own timeouts, and its timeout goes to the status check (the fallback)."""
    asl = load_asl(ROOT / "statemachine" / "install.asl.json")
    wait = asl["States"]["Wait For Commands"]
    assert wait["Type"] == "Task"
    assert wait["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert wait["Parameters"]["FunctionName"] == "${AwaitCommandsFunctionArn}"
    assert wait["Parameters"]["Payload"]["taskToken.$"] == "$$.Task.Token"
    timeout = next(c for c in wait["Catch"] if c["ErrorEquals"] == ["States.Timeout"])
    assert timeout["Next"] == "Check Command Status" and wait["Next"] == "Check Command Status"
    assert "States.Timeout" not in {e for r in wait["Retry"] for e in r["ErrorEquals"]}
    bound = asl["States"]["Load Settings"]["Assign"][wait["TimeoutSecondsPath"].lstrip("$") + ".$"]
    for name in ("CommandDeliveryTimeoutSeconds", "CommandExecutionTimeoutSeconds", "CompletionEventGraceSeconds"):
        assert "${" + name + "}" in bound, bound
    params = template["Parameters"]
    default_bound = sum(int(params[n]["Default"]) for n in (
        "CommandDeliveryTimeoutSeconds", "CommandExecutionTimeoutSeconds", "CompletionEventGraceSeconds"))
    assert default_bound < asl["TimeoutSeconds"], (default_bound, asl["TimeoutSeconds"])
    # no poll loop: nothing waits on a fixed interval between two status checks
    assert not any(s["Type"] == "Wait" and s.get("Next") == "Check Command Status" for s in asl["States"].values())
    rule = template["Resources"]["CommandCompletionRule"]["Properties"]
    assert rule["EventPattern"]["source"] == ["aws.ssm"]
    assert rule["EventPattern"]["detail-type"] == ["EC2 Command Status-change Notification"]
    core = (ROOT / "functions" / "fleet-core" / "src" / "completion.rs").read_text()
    terminal = re.search(r"TERMINAL_STATUSES: &\[&str\] = &\[([^\]]*)\]", core).group(1)
    assert rule["EventPattern"]["detail"]["status"] == re.findall(r'"([^"]+)"', terminal)
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["AwaitCommandsFunction", "Arn"]}
    perm = template["Resources"]["CommandCompletionRulePermission"]["Properties"]
    assert perm["Principal"] == "events.amazonaws.com" and perm["SourceArn"] == {"Fn::GetAtt": ["CommandCompletionRule", "Arn"]}
