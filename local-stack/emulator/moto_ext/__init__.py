"""fleet-install extensions to moto 5.2.5 (see local-stack/README.md).

Import order matters: MOTO_PORT must be set before moto is imported (server.py does it), and install() must run
before the server handles a request.
"""

from . import sim_tags  # noqa: F401  (re-exported constants)

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from . import (agent_credentials, api_fixes, cloudwatch_output, counter, dynamodb_ext, ec2_ext, events_lambda,
                   iam_ext, perf, redrive, sfn, sqs_ext, ssm_agent, ssm_settings)

    perf.install()
    sfn.install()
    redrive.install()
    ssm_agent.install()
    ssm_settings.install()
    cloudwatch_output.install()
    api_fixes.install()
    ec2_ext.install()
    events_lambda.install()   # EventBridge rule targets that are Lambda functions (ssm_events puts SSM's events)
    counter.install()
    dynamodb_ext.install()
    sqs_ext.install()
    iam_ext.install()
    agent_credentials.install()
    _installed = True
