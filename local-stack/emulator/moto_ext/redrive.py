"""RedriveExecution for moto's Step Functions engine, which does not implement it.

As AWS does: a FAILED, TIMED_OUT or ABORTED Standard execution continues from the state that did
not succeed, with that state's input, the variables as they were, the same execution ARN, and
`$$.Execution.RedriveCount` one higher. The history keeps growing in the same event list.
Limits of this emulation: a failure inside a Map or Parallel state resumes at that top-level
Map/Parallel state (AWS would redrive only the failed iterations).
"""
from __future__ import annotations

import datetime
import json

from moto.core.exceptions import AWSError
from moto.stepfunctions import responses as sfn_responses
from moto.stepfunctions.parser.api import ExecutionStatus
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.backend import execution_worker as ew
from moto.stepfunctions.parser.backend.execution import Execution

class ExecutionNotRedrivable(AWSError):
    TYPE = "ExecutionNotRedrivable"
    STATUS = 400


REDRIVABLE = {ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.ABORTED}

_orig_env = ew.ExecutionWorker._get_evaluation_environment
_orig_entry = ew.ExecutionWorker._get_evaluation_entrypoint
_orig_logic = ew.ExecutionWorker._execution_logic


def _redrive_of(worker):
    return getattr(worker, "fleet_redrive", None)


def _env(self):
    env = _orig_env(self)
    redrive = _redrive_of(self)
    execution = env.states.context_object.context_object_data["Execution"]
    execution["RedriveCount"] = redrive["count"] if redrive else 0
    if redrive:
        env.event_manager = redrive["event_manager"]
        env.variable_store = redrive["variable_store"]
        env.states.reset(redrive["input"])
    return env


def _entry(self):
    redrive = _redrive_of(self)
    if not redrive:
        return _orig_entry(self)
    definition = json.loads(self._evaluation_details.state_machine_details.definition)
    definition["StartAt"] = redrive["state"]
    return AmazonStateLanguageParser.parse(json.dumps(definition))[0]


def _logic(self):
    if not _redrive_of(self):
        return _orig_logic(self)
    program = self._get_evaluation_entrypoint()
    self.env = self._get_evaluation_environment()
    program.eval(self.env)
    self._execution_communication.terminated()


def _resume_point(execution: Execution):
    """The top-level state that did not succeed, and its input."""
    definition = json.loads(execution.state_machine.definition)
    top_level = set(definition["States"])
    events = execution.exec_worker.env.event_manager.get_event_history()
    entered = None
    for event in events:
        details = event.get("stateEnteredEventDetails")
        if details and details.get("name") in top_level:
            entered = details
    if entered is None:
        return definition["StartAt"], execution.input_data
    raw = entered.get("input")
    return entered["name"], json.loads(raw) if isinstance(raw, str) else raw


def redrive(execution: Execution) -> datetime.datetime:
    if execution.exec_status not in REDRIVABLE:
        raise ExecutionNotRedrivable(f"Execution {execution.exec_arn} is {execution.exec_status.value}: only failed, aborted or timed-out executions can be redriven")
    old_env = execution.exec_worker.env
    state, state_input = _resume_point(execution)
    count = getattr(execution, "fleet_redrive_count", 0) + 1
    worker = execution._get_start_execution_worker()
    worker.fleet_redrive = {
        "count": count,
        "state": state,
        "input": state_input,
        "event_manager": old_env.event_manager,
        "variable_store": old_env.variable_store,
    }
    execution.fleet_redrive_count = count
    execution.fleet_redrive_date = datetime.datetime.now(tz=datetime.timezone.utc)
    execution.exec_worker = worker
    execution.__dict__.pop("_fleet_aborted", None)   # api_fixes: a stop before this redrive is over
    execution.exec_status = ExecutionStatus.RUNNING
    execution.error = None
    execution.cause = None
    execution.stop_date = None
    worker.start()
    return execution.fleet_redrive_date


def _redrive_execution(self):
    arn = self._get_param("executionArn")
    execution = self.stepfunction_backend.describe_execution(arn)
    date = redrive(execution)
    return sfn_responses.ActionResult({"redriveDate": date})


_orig_describe = sfn_responses.StepFunctionResponse.describe_execution


def _describe_execution(self):
    result = _orig_describe(self)
    arn = self._get_param("executionArn")
    execution = self.stepfunction_backend.describe_execution(arn)
    count = getattr(execution, "fleet_redrive_count", 0)
    body = result.result if isinstance(result, sfn_responses.ActionResult) else None
    if isinstance(body, dict):
        body["redriveCount"] = count
        body["redriveStatus"] = "REDRIVABLE" if execution.exec_status in REDRIVABLE else "NOT_REDRIVABLE"
        if count:
            body["redriveDate"] = execution.fleet_redrive_date
    return result


def install() -> None:
    ew.ExecutionWorker._get_evaluation_environment = _env
    ew.ExecutionWorker._get_evaluation_entrypoint = _entry
    ew.ExecutionWorker._execution_logic = _logic
    sfn_responses.StepFunctionResponse.redrive_execution = _redrive_execution
    sfn_responses.StepFunctionResponse.describe_execution = _describe_execution
