"""infra/: the CloudFormation template (cfn-lint, checkov, moto), the Dockerfile, and the handler in the stack."""

from __future__ import annotations

import ast
import fcntl
import fnmatch
import importlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import uuid
import venv as venv_module
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest
import xarray as xr
from cfnlint.api import lint, lint_file
from cfnlint.decode import decode

from darts_export.cloud import handler
from darts_export.products import DEFAULT_BANDS
from helpers import get, put_zarr, s3_record

pytestmark = pytest.mark.filterwarnings(
    # moto's CloudFormation has no AWS::S3::BucketPolicy; it warns (in its server thread) and skips the
    # resource. The policy is checked on the template instead (test_template_declares_the_security_baseline).
    "ignore:Tried to parse AWS..S3..BucketPolicy but:UserWarning"
)

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "template.yaml"
CHECKOV_VERSION = "3.3.30"
# Offline: no "is there a newer checkov" call to PyPI on import, quiet logs (the config adds skip-download).
CHECKOV_ENV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "LOG_LEVEL": "WARNING"}
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/darts-export:test"
BANDS = "probabilities,binarized,metadata"


def template() -> dict[str, Any]:
    data, matches = decode(TEMPLATE)
    assert not matches, matches
    assert data is not None
    return dict(data)


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template()["Resources"].items() if res["Type"] == kind}


def role_statements(doc: Any) -> list[dict[str, Any]]:
    # moto returns the inline policy as a Python repr (single quotes) rather than JSON.
    policy = doc if isinstance(doc, dict) else (json.loads(doc) if doc.startswith('{"') else ast.literal_eval(doc))
    return [{**s, "Action": _as_list(s["Action"]), "Resource": _as_list(s["Resource"])} for s in policy["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- linters ------------------------------------------------------------------------------------


@pytest.mark.infra
def test_cfn_lint_passes() -> None:
    matches = lint_file(TEMPLATE)
    assert matches == [], "\n".join(str(m) for m in matches)


@pytest.mark.infra
def test_cfn_lint_would_catch_a_broken_template() -> None:
    broken = (
        TEMPLATE.read_text()
        .replace("MaxValue: 900", "MaxValue: 1900")
        .replace("Timeout: !Ref Timeout", "Timeout: 1900")
    )
    assert any("1900" in str(m) for m in lint(broken))


@pytest.fixture(scope="session")
def checkov() -> list[str]:
    """The command that runs checkov, from a venv of its own made once per machine (pip, from PyPI).

    checkov pins dependencies that clash with this project's, so it lives in its own venv:
    ``$CHECKOV`` (a venv folder, or an existing ``checkov`` executable) or
    ``~/.cache/darts-export/checkov-<version>``. The first run creates it (the only network access
    of the suite: PyPI through pip); later runs reuse it. A file lock serialises concurrent test
    sessions, and the venv is built in a staging folder renamed into place when complete, so an
    interrupted install is never mistaken for a finished one. The script is run by the venv's
    interpreter rather than through its shebang, which still names the staging folder.
    """
    configured = os.environ.get("CHECKOV")
    if configured and Path(configured).is_file():
        return [configured]
    venv = Path(configured) if configured else Path.home() / ".cache" / "darts-export" / f"checkov-{CHECKOV_VERSION}"
    command = [str(venv / "bin" / "python"), str(venv / "bin" / "checkov")]
    if not (venv / "bin" / "checkov").is_file():
        venv.parent.mkdir(parents=True, exist_ok=True)
        with (venv.parent / f".{venv.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not (venv / "bin" / "checkov").is_file():  # another session may have made it meanwhile
                _make_checkov_venv(venv)
    installed = subprocess.run(  # the distribution's version: quicker than `checkov --version`
        [command[0], "-c", "import importlib.metadata as m; print(m.version('checkov'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert installed.stdout.strip() == CHECKOV_VERSION, (venv, installed.stdout)
    return command


def _make_checkov_venv(venv: Path) -> None:
    staging = venv.with_name(f".{venv.name}.{uuid.uuid4().hex[:8]}")
    try:
        venv_module.EnvBuilder(with_pip=True, symlinks=True).create(staging)
        pip = [str(staging / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"checkov=={CHECKOV_VERSION}"], check=True, timeout=900)
        staging.rename(venv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@pytest.mark.infra
def test_checkov_reports_no_failed_checks(checkov: list[str]) -> None:
    run = subprocess.run(
        [*checkov, "--config-file", str(INFRA / ".checkov.yaml"), "-d", str(INFRA), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **CHECKOV_ENV},
    )
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r for r in reports}
    assert set(by_type) == {"cloudformation", "dockerfile"}, run.stderr[-2000:]
    for kind, report in by_type.items():
        failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
        assert failed == [], f"{kind}: {failed}"
        assert report["summary"]["passed"] >= 10
        for skipped in report["results"]["skipped_checks"]:  # a skip always says why
            assert len(str(skipped["check_result"].get("suppress_comment", "")).strip()) > 20, skipped["check_id"]
    assert run.returncode == 0, run.stderr[-2000:]


# --- the template itself (what moto's CloudFormation does not model) ----------------------------


def test_template_declares_the_security_baseline() -> None:
    (bucket,) = resources("AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert bucket["DeletionPolicy"] == "Retain"

    (policy,) = resources("AWS::S3::BucketPolicy").values()
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert len(deny["Resource"]) == 2  # the bucket and every object in it

    (function,) = resources("AWS::Lambda::Function").values()
    fprops = function["Properties"]
    params = template()["Parameters"]
    assert fprops["PackageType"] == "Image"
    assert fprops["Code"] == {"ImageUri": {"Ref": "ImageUri"}}
    assert fprops["TracingConfig"] == {"Mode": "Active"}
    assert fprops["DeadLetterConfig"]["TargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert params["Timeout"]["Default"] == params["Timeout"]["MaxValue"] == 900
    assert params["MemorySize"]["Default"] == 10240
    assert params["EphemeralStorageSize"]["Default"] >= 2048
    assert "ReservedConcurrentExecutions" in fprops
    assert params["Bands"]["Default"] == ",".join(DEFAULT_BANDS)

    (queue,) = resources("AWS::SQS::Queue").values()
    assert queue["Properties"]["KmsMasterKeyId"] == "alias/aws/sqs"


def test_role_is_least_privilege() -> None:
    (role,) = resources("AWS::IAM::Role").values()
    (policy,) = role["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in role_statements(policy["PolicyDocument"])}
    assert not role["Properties"].get("ManagedPolicyArns")
    for sid, statement in statements.items():
        assert statement["Effect"] == "Allow"
        assert all("*" not in action for action in statement["Action"]), sid
        if sid != "Tracing":  # X-Ray has no resource-level permissions
            assert "*" not in statement["Resource"], sid
    assert statements["ReadInputTiles"]["Action"] == ["s3:GetObject"]
    assert statements["WriteExports"]["Action"] == [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    ]
    assert {sid for sid, s in statements.items() if "s3:ListBucket" in s["Action"]} == {"ListInputTiles", "ListExports"}
    for sid in ("ListInputTiles", "ListExports"):
        assert "s3:prefix" in statements[sid]["Condition"]["StringLike"]


# --- the Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_builds_a_lambda_image_of_this_package() -> None:
    text = (INFRA / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM public.ecr.aws/lambda/python:3.12"
    cmd = next(line for line in instructions if line.startswith("CMD "))
    (entry,) = json.loads(cmd.removeprefix("CMD "))
    module, _, name = entry.rpartition(".")
    assert getattr(importlib.import_module(module), name) is handler  # what the Lambda runtime resolves
    for line in instructions:
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            assert all((ROOT / source).exists() for source in sources), line
    assert '--target "${LAMBDA_TASK_ROOT}"' in text
    assert '-c requirements.lock ".[netcdf]"' in text
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignored
    assert {"!pyproject.toml", "!README.md", "!requirements.lock", "!src/"} <= set(ignored)


# --- the stack in moto's CloudFormation, and the handler running in it --------------------------

_REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.1')  # werkzeug colours some


def s3_permission(method: str, target: str, output_key: str) -> tuple[str, str, str | None]:
    """The IAM action, resource and ``s3:prefix`` that S3 checks for one request (path-style URL)."""
    path, _, query = target.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    bucket, _, key = unquote(path.lstrip("/")).partition("/")
    arn = f"arn:aws:s3:::{bucket}"
    if not key:
        if method == "GET" and "list-type" in params:
            return "s3:ListBucket", arn, params.get("prefix", [None])[0]
        if method == "POST" and "delete" in params:  # DeleteObjects: the keys are in the body; all under the output
            return "s3:DeleteObject", f"{arn}/{output_key}/manifest.json", None
        return f"s3:Unexpected{method}Bucket", arn, None
    arn = f"{arn}/{key}"
    if method in ("GET", "HEAD"):
        return "s3:GetObject", arn, None
    if method == "DELETE":
        return ("s3:AbortMultipartUpload" if "uploadId" in params else "s3:DeleteObject"), arn, None
    return "s3:PutObject", arn, None  # PUT object/part, POST create/complete multipart upload


def allowed(statements: list[dict[str, Any]], action: str, resource: str, prefix: str | None = None) -> bool:
    """Whether an Allow statement grants it (only StringLike s3:prefix conditions are modelled)."""
    for s in statements:
        if s["Effect"] != "Allow" or not any(fnmatch.fnmatchcase(action, a) for a in s["Action"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in s["Resource"]):
            continue
        condition = s.get("Condition")
        if condition is None:
            return True
        patterns = _as_list(condition.get("StringLike", {}).get("s3:prefix", []))
        if set(condition) != {"StringLike"} or prefix is None:
            continue
        if any(fnmatch.fnmatchcase(prefix, p) for p in patterns):
            return True
    return False


@pytest.mark.s3
def test_stack_in_moto_and_the_handler_under_its_role(
    moto_endpoint: str,
    s3_client: Any,
    s3_bucket: str,
    s3_storage_options: dict[str, Any],
    small_tile: xr.Dataset,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_endpoint, region_name="us-east-1")

    cfn = client("cloudformation")
    stack = f"darts-{uuid.uuid4().hex[:8]}"
    cfn.create_stack(
        StackName=stack,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[
            {"ParameterKey": "ImageUri", "ParameterValue": IMAGE},
            {"ParameterKey": "InputBucketName", "ParameterValue": s3_bucket},
            {"ParameterKey": "Bands", "ParameterValue": BANDS},
            {"ParameterKey": "EnableS3Trigger", "ParameterValue": "true"},
        ],
    )
    (description,) = cfn.describe_stacks(StackName=stack)["Stacks"]
    assert description["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in description["Outputs"]}
    bucket = outputs["OutputBucketName"]
    assert outputs["OutputPrefixUrl"] == f"s3://{bucket}/exports"

    (rule,) = s3_client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"

    iam = client("iam")
    role = outputs["FunctionRoleArn"].rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    statements = role_statements(iam.get_role_policy(RoleName=role, PolicyName="darts-export")["PolicyDocument"])
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["ReadInputTiles"]["Resource"] == [f"arn:aws:s3:::{s3_bucket}/inputs/*"]
    assert by_sid["WriteExports"]["Resource"] == [f"arn:aws:s3:::{bucket}/exports/*"]
    assert by_sid["DeadLetters"]["Resource"] == [
        client("sqs").get_queue_attributes(QueueUrl=outputs["DeadLetterQueueUrl"], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    ]

    lam = client("lambda")
    config = lam.get_function_configuration(FunctionName=outputs["FunctionArn"])
    assert (config["MemorySize"], config["Timeout"]) == (10240, 900)
    assert config["Role"] == outputs["FunctionRoleArn"]
    assert lam.get_function_concurrency(FunctionName=outputs["FunctionArn"])["ReservedConcurrentExecutions"] == 10
    (grant,) = json.loads(lam.get_policy(FunctionName=outputs["FunctionArn"])["Policy"])["Statement"]
    assert grant["Principal"] == {"Service": "s3.amazonaws.com"}
    assert grant["Condition"]["ArnLike"]["AWS:SourceArn"] == f"arn:aws:s3:::{s3_bucket}"
    environment = config["Environment"]["Variables"]
    assert environment == {"DARTS_OUTPUT_PREFIX": f"s3://{bucket}/exports", "DARTS_BANDS": BANDS}

    # The input tile, then the bucket notification exactly as the stack's S3TriggerCommand output sets it.
    key = "inputs/T06WVS_2024/tile.zarr/zarr.json"
    put_zarr(small_tile, f"s3://{s3_bucket}/inputs/T06WVS_2024/tile.zarr", s3_storage_options)
    command = shlex.split(outputs["S3TriggerCommand"])
    assert command[:3] == ["aws", "s3api", "put-bucket-notification-configuration"]
    notification = json.loads(command[command.index("--notification-configuration") + 1])
    s3_client.put_bucket_notification_configuration(
        Bucket=command[command.index("--bucket") + 1], NotificationConfiguration=notification
    )
    configured = s3_client.get_bucket_notification_configuration(Bucket=s3_bucket)["LambdaFunctionConfigurations"]
    filters = [{r["Name"].lower(): r["Value"] for r in c["Filter"]["Key"]["FilterRules"]} for c in configured]
    assert [f for f in filters if key.startswith(f["prefix"]) and key.endswith(f["suffix"])] == [
        {"prefix": "inputs/", "suffix": ".zarr/zarr.json"}
    ]

    # Run the handler with the function's environment, recording every S3 request it makes.
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        (result,) = handler({"Records": [s3_record(s3_bucket, key)]}, None)
        (direct,) = handler({"input": f"s3://{s3_bucket}/inputs/T06WVS_2024/tile.zarr", "overwrite": True}, None)
    assert (result["status"], result["output"]) == ("exported", f"s3://{bucket}/exports/T06WVS_2024")
    expected = {"probabilities.tif", "binarized.tif", "darts_inference.json", "item.json"}  # item.json: STAC
    assert (direct["status"], direct["artifacts"]) == ("exported", len(expected))
    manifest = json.loads(get(s3_client, bucket, "exports/T06WVS_2024/manifest.json"))
    assert {a["path"] for a in manifest["artifacts"]} == expected

    requests = [m.groups() for r in caplog.records if r.name == "werkzeug" and (m := _REQUEST.search(r.getMessage()))]
    permissions = {s3_permission(method, target, "exports/T06WVS_2024") for method, target in requests}
    denied = sorted((p for p in permissions if not allowed(statements, *p)), key=str)
    assert denied == [], denied
    assert {p[0] for p in permissions} >= {"s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:DeleteObject"}
    # ...and the same policy refuses what the function must not do.
    assert not allowed(statements, "s3:PutObject", f"arn:aws:s3:::{s3_bucket}/inputs/x")
    assert not allowed(statements, "s3:GetObject", f"arn:aws:s3:::{s3_bucket}/secrets/x")
    assert not allowed(statements, "s3:PutObject", f"arn:aws:s3:::{bucket}/elsewhere/x")
    assert not allowed(statements, "s3:ListBucket", f"arn:aws:s3:::{bucket}", "")
    assert not allowed(statements, "s3:DeleteObjectVersion", f"arn:aws:s3:::{bucket}/exports/x")
