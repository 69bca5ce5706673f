#!/usr/bin/env python3
"""Start, stop and inspect the local stack: moto (extended), the resources from template.yaml,
cargo lambda watch serving the Rust functions, and the SQS poller.

    .venv/bin/python local-stack/emulator/run.py up [--no-fast] [--build] [--param Key=Value ...]
    .venv/bin/python local-stack/emulator/run.py status
    .venv/bin/python local-stack/emulator/run.py down
    .venv/bin/python local-stack/emulator/run.py reconfigure <function> --env KEY=VALUE   (as a stack update would)

Ports (all on 127.0.0.1): MOTO_PORT (default 5055), WATCH_PORT (default 9099).
State in target/local-stack/: pids (JSON), outputs.json, env.json, stack.json, watch-<function>.env, *.log.
FLEET_WATCH_CMD replaces the cargo lambda watch command line (used by the local stack's own tests, e.g.
"python /tmp/research/fake_watch.py {port}").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# FLEET_LOCAL_STACK_DIR: a second stack (its own pids, outputs and logs) beside the default one.
STATE = os.environ.get("FLEET_LOCAL_STACK_DIR") or os.path.join(ROOT, "target", "local-stack")
PIDS = os.path.join(STATE, "pids")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PY = os.path.join(VENV_BIN, "python") if os.path.exists(os.path.join(VENV_BIN, "python")) else sys.executable

sys.path.insert(0, HERE)


def ports() -> tuple[int, int]:
    return int(os.environ.get("MOTO_PORT", "5055")), int(os.environ.get("WATCH_PORT", "9099"))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(pred, what: str, timeout: float, proc: subprocess.Popen | None = None, log: str | None = None) -> None:
    deadline = time.time() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            tail = open(log).read()[-3000:] if log and os.path.exists(log) else ""
            raise SystemExit(f"{what} exited with {proc.returncode}\n{tail}")
        if time.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def _spawn(name: str, argv: list[str], env: dict | None = None, cwd: str = ROOT) -> subprocess.Popen:
    log = os.path.join(STATE, f"{name}.log")
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)   # own process group: `down` stops the whole tree


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _read_pids() -> dict:
    try:
        with open(PIDS) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_pids(pids: dict) -> None:
    os.makedirs(STATE, exist_ok=True)
    with open(PIDS, "w") as f:
        json.dump(pids, f, indent=2)


def _stop_group(pid: int, name: str, timeout: float = 15) -> None:
    if not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        print(f"{name} ({pid}) ignored SIGTERM; killing its process group")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # the group may still have members (cargo run children): wait for them too
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def watch_command(port: int, env_file: str) -> list[str]:
    custom = os.environ.get("FLEET_WATCH_CMD")
    if custom:
        return shlex.split(custom.format(port=port))
    return ["cargo", "lambda", "watch", "-A", "127.0.0.1", "-P", str(port), "--ignore-changes",
            "--concurrency", os.environ.get("WATCH_CONCURRENCY", "4"), "--env-file", env_file]


def _write_env_file(path: str, env: dict) -> None:
    """A function's environment for cargo lambda watch --env-file. Single quotes: a session token holds
    characters that dotenv would otherwise refuse."""
    with open(path, "w") as f:
        f.writelines(f"{k}='{v}'\n" for k, v in sorted(env.items()))


def _read_env_file(path: str) -> dict:
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            env[k] = v.strip("'")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(moto_url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(moto_url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def _sts(moto_url: str):
    import boto3

    return boto3.client("sts", endpoint_url=moto_url, region_name="us-east-1",
                        aws_access_key_id="fleet-setup", aws_secret_access_key="testing")


def _assume(sts, role_arn: str, session: str) -> dict:
    """Credentials of a role, as Lambda hands them to a function (environment variables)."""
    c = sts.assume_role(RoleArn=role_arn, RoleSessionName=session[:64], DurationSeconds=43200)["Credentials"]
    return {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
            "AWS_SESSION_TOKEN": c["SessionToken"]}


def up(args) -> None:
    moto_port, watch_port = ports()
    existing = {k: v for k, v in _read_pids().items() if isinstance(v, int) and _alive(v)}
    if existing:
        raise SystemExit(f"the local stack is already up ({existing}); run `down` first")
    for p, what in ((moto_port, "MOTO_PORT"), (watch_port, "WATCH_PORT")):
        if _port_open(p):
            raise SystemExit(f"127.0.0.1:{p} ({what}) is already in use")
    os.makedirs(STATE, exist_ok=True)
    moto_url, lambda_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{watch_port}"
    pids: dict = {"motoPort": moto_port, "watchPort": watch_port}
    base_env = dict(os.environ)
    base_env["PATH"] = VENV_BIN + os.pathsep + base_env.get("PATH", "")
    try:
        if args.build and not os.environ.get("FLEET_WATCH_CMD"):
            print("cargo build --workspace --bins (watch then reuses target/debug) ...")
            subprocess.run(["cargo", "build", "--workspace", "--bins"], cwd=ROOT, check=True, env=base_env)

        moto = _spawn("moto", [PY, os.path.join(HERE, "server.py"), "--port", str(moto_port),
                               "--lambda-endpoint", lambda_url], env=base_env)
        pids["moto"] = moto.pid
        _write_pids(pids)
        _wait(lambda: _health(moto_url), "moto server", 60, moto, os.path.join(STATE, "moto.log"))

        import stack as stack_mod
        overrides = dict(p.split("=", 1) for p in args.param)
        info = stack_mod.build(moto_url, lambda_url, fast=not args.no_fast, overrides=overrides,
                               require_asl=args.require_asl)

        # One cargo lambda watch per function, as Lambda runs each function apart: its own environment from
        # the template, and credentials from STS AssumeRole of its own role (what Lambda puts in the
        # environment), so every call it makes is checked against that role once IAM is enforced.
        sts = _sts(moto_url)
        endpoints, watches = {}, {}
        watch_base = {k: v for k, v in base_env.items() if not k.startswith("AWS_")}
        for i, (fn, spec) in enumerate(sorted(info["functions"].items())):
            port = watch_port if i == 0 else _free_port()
            fn_env = dict(spec["env"])
            fn_env.update(_assume(sts, spec["role"], fn))
            fn_env.update({"AWS_ENDPOINT_URL": moto_url, "AWS_REGION": stack_mod.REGION,
                           "AWS_DEFAULT_REGION": stack_mod.REGION, "AWS_LAMBDA_FUNCTION_NAME": fn})
            env_file = os.path.join(STATE, f"watch-{fn}.env")
            _write_env_file(env_file, fn_env)
            watch = _spawn(f"watch-{fn}", watch_command(port, env_file), env=dict(watch_base, **fn_env))
            pids[f"watch:{fn}"] = watch.pid
            watches[fn] = watch
            endpoints[fn] = f"http://127.0.0.1:{port}"
            _write_pids(pids)
        for fn, url in endpoints.items():
            port = int(url.rsplit(":", 1)[1])
            _wait(lambda: _port_open(port), f"cargo lambda watch for {fn}", 120, watches[fn],
                  os.path.join(STATE, f"watch-{fn}.log"))
        _post(moto_url, "/_fleet/lambda", {"endpoints": endpoints})
        info["lambdaEndpoints"] = endpoints
        with open(os.path.join(STATE, "stack.json"), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)

        # The SQS event source mapping polls the queue with the trigger function's execution role.
        poller_env = dict(watch_base)
        for m in info["eventSourceMappings"]:
            creds = _assume(sts, info["functions"][m["Function"]]["role"], "event-source-mapping")
            poller_env.update({"POLLER_" + k: v for k, v in creds.items()})
            _post(moto_url, "/_fleet/iam", {"labels": {creds["AWS_ACCESS_KEY_ID"]: "poller:"}})
        poll_argv = [PY, os.path.join(HERE, "poller.py"), "--stack", os.path.join(STATE, "stack.json")]
        if not args.no_fast:
            poll_argv += ["--failure-visibility", "2"]
        poller = _spawn("poller", poll_argv, env=poller_env)
        pids["poller"] = poller.pid
        _write_pids(pids)
        time.sleep(0.5)
        if poller.poll() is not None:
            raise SystemExit(f"poller exited: see {os.path.join(STATE, 'poller.log')}")

        # From here on every request is checked against its caller's policies (moto_ext/iam_ext.py).
        if not args.no_iam:
            _post(moto_url, "/_fleet/iam", {"enforce": True})
    except BaseException:
        print("start failed; stopping what was started", file=sys.stderr)
        down(None)
        raise
    print(json.dumps({"moto": moto_url, "lambda": lambda_url, "pids": pids,
                      "outputs": os.path.join(STATE, "outputs.json")}, indent=2))


def _health(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/_fleet/health", timeout=1).read()
        return True
    except OSError:
        return False


def down(args) -> None:
    pids = _read_pids()
    names = ["poller"] + sorted(k for k in pids if k.startswith("watch:")) + ["moto"]   # reverse start order
    for name in names:
        pid = pids.get(name)
        if isinstance(pid, int):
            _stop_group(pid, name)
            print(f"stopped {name} ({pid})")
    if os.path.exists(PIDS):
        os.remove(PIDS)


def reconfigure(args) -> None:
    """Change a function's environment as a stack update (UpdateFunctionConfiguration) would: its watch is
    restarted on the same port with the new values; its role and credentials stay."""
    pids = _read_pids()
    key = f"watch:{args.function}"
    if key not in pids:
        raise SystemExit(f"no running function {args.function} (have {sorted(k[6:] for k in pids if k.startswith('watch:'))})")
    with open(os.path.join(STATE, "stack.json")) as f:
        info = json.load(f)
    port = int(info["lambdaEndpoints"][args.function].rsplit(":", 1)[1])
    env_file = os.path.join(STATE, f"watch-{args.function}.env")
    env = _read_env_file(env_file)
    env.update(kv.partition("=")[::2] for kv in args.env)
    _write_env_file(env_file, env)
    _stop_group(pids[key], key)
    deadline = time.time() + 30
    while _port_open(port) and time.time() < deadline:
        time.sleep(0.2)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base["PATH"] = VENV_BIN + os.pathsep + base.get("PATH", "")
    watch = _spawn(f"watch-{args.function}", watch_command(port, env_file), env=dict(base, **env))
    pids[key] = watch.pid
    _write_pids(pids)
    _wait(lambda: _port_open(port), f"cargo lambda watch for {args.function}", 120, watch,
          os.path.join(STATE, f"watch-{args.function}.log"))
    print(json.dumps({"function": args.function, "pid": watch.pid, "port": port, "set": args.env}))


def status(args) -> None:
    pids = _read_pids()
    if not pids:
        print("the local stack is down")
        sys.exit(1)
    ok = True
    for name in ["moto"] + sorted(k for k in pids if k.startswith("watch:")) + ["poller"]:
        pid = pids.get(name)
        alive = isinstance(pid, int) and _alive(pid)
        ok &= alive
        print(f"{name:7} pid {pid}: {'running' if alive else 'NOT RUNNING'}")
    moto_port, watch_port = pids.get("motoPort"), pids.get("watchPort")
    print(f"moto    http://127.0.0.1:{moto_port}: {'healthy' if _health(f'http://127.0.0.1:{moto_port}') else 'DOWN'}")
    print(f"watch   http://127.0.0.1:{watch_port}: {'listening' if _port_open(watch_port) else 'DOWN'}")
    out = os.path.join(STATE, "outputs.json")
    if os.path.exists(out):
        print(open(out).read())
    sys.exit(0 if ok else 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start everything")
    u.add_argument("--no-fast", action="store_true", help="keep the template's production waits")
    u.add_argument("--build", action="store_true", help="cargo build --workspace --bins first")
    u.add_argument("--require-asl", action="store_true")
    u.add_argument("--no-iam", action="store_true", help="do not enforce IAM (debugging only: kinder than AWS)")
    u.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    u.set_defaults(fn=up)
    sub.add_parser("down", help="stop everything").set_defaults(fn=down)
    r = sub.add_parser("reconfigure", help="change a function's environment (its watch restarts)")
    r.add_argument("function")
    r.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    r.set_defaults(fn=reconfigure)
    sub.add_parser("status", help="show what runs").set_defaults(fn=status)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
